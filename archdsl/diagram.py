"""Architecture diagrams from the resolved block graph: Graphviz (svg, png, pdf, dot) and Mermaid.

    import archdsl
    archdsl.render("specs/gpt2.yaml", "gpt2.svg")              # writes the file, returns the DOT text
    dot = archdsl.render(spec, format="dot", detail="full")

The picture is drawn from ``archdsl.graph(spec)`` (see :mod:`archdsl.ir`), the same graph the
compiler builds, so it cannot disagree with the model. Nothing here imports torch.

Detail levels:

* ``blocks`` (default): every block, with each ``repeat`` body drawn once inside a cluster
  marked "× N". A ``pattern`` repeat draws one full cycle, and consecutive identical entries
  of the pattern are drawn once ("local × 5").
* ``layers``: like blocks, but each repeated layer (and each top-level residual/parallel) is a
  single box listing its blocks.
* ``full``: every copy of every layer.

A graph model (encoder-decoder) draws each stack as a cluster, side by side in dependency order,
and each cross-attention as a dashed "memory" edge from the output of the stack it reads, drawn
level with the block it feeds (several readers: a memory bus between the stacks); see
:class:`_MemoryLayout`.

This module is ``archdsl.diagram``; the function is exported as ``archdsl.render`` (the module is
not named ``render`` so that importing it can never shadow the function).
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, field
from html import escape as _html_escape
from pathlib import Path
from typing import Any, Sequence

from .atomic import write_bytes, write_text
from .errors import printable, shorten
from .limits import MAX_DRAWN_NODES
from .render_engine import (ENV_VAR, INSTALL_HINT, Engine, RenderError, find_engine, require_engine,
                            run_engine)

FORMATS = ("svg", "png", "pdf", "dot", "mermaid")
DETAILS = ("blocks", "layers", "full")
DIRECTIONS = ("TB", "LR", "BT", "RL")
SUFFIX_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot",
                  ".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid"}
PNG_DPI = 150
FONT = "Helvetica"


# ================================================================================ styles
@dataclass(frozen=True)
class FamilyStyle:
    """How one block family is drawn: its legend name and (fill, border) per theme."""

    legend: str
    light: tuple[str, str]
    dark: tuple[str, str]
    mono: tuple[str, str] = ("#ffffff", "#333333")
    in_legend: bool = True


#: Colour of each block family (``NodeSpec.family``); every family a node kind uses needs an entry
#: (tests check it). recurrent and conv are reserved for kinds that do not exist yet.
FAMILY_STYLES: dict[str, FamilyStyle] = {
    "embedding": FamilyStyle("embedding", ("#dce9f7", "#3b6ea5"), ("#23405f", "#7fb0e6"), ("#f2f2f2", "#333333")),
    "positional": FamilyStyle("positional", ("#e9e0f5", "#7453a6"), ("#3e2f5a", "#b79ce6"), ("#ffffff", "#333333")),
    "attention": FamilyStyle("attention", ("#fde3c8", "#d07a1f"), ("#5c3a14", "#f2a65a"), ("#d9d9d9", "#333333")),
    "feedforward": FamilyStyle("feed-forward", ("#dcefd6", "#4a9440"), ("#24462a", "#86cf7b"), ("#ececec", "#333333")),
    "norm": FamilyStyle("normalisation", ("#fff4bf", "#b8951a"), ("#514618", "#e8cc5a"), ("#ffffff", "#333333")),
    "regularization": FamilyStyle("regularisation", ("#efefef", "#8c8c8c"), ("#3a3a3a", "#a8a8a8"), ("#ffffff", "#777777")),
    "head": FamilyStyle("head", ("#f8d6d9", "#b8434f"), ("#5a2228", "#ee8a94"), ("#cccccc", "#333333")),
    "recurrent": FamilyStyle("recurrent", ("#d2eeee", "#2b8585"), ("#1c4646", "#77d0d0"), ("#e6e6e6", "#333333")),
    "conv": FamilyStyle("convolution", ("#ebdfd2", "#8a6642"), ("#4a3a29", "#d2a679"), ("#f0f0f0", "#333333")),
    "structure": FamilyStyle("structure", ("#ffffff", "#555555"), ("#2b2b2b", "#bbbbbb"), in_legend=False),
    "io": FamilyStyle("input / output", ("#ffffff", "#444444"), ("#1e1e1e", "#d0d0d0"), in_legend=False),
    "other": FamilyStyle("other", ("#f4f4f4", "#777777"), ("#333333", "#aaaaaa"), ("#ffffff", "#333333")),
}

#: Theme colours that are not per family.
THEMES: dict[str, dict[str, str]] = {
    "light": {"bg": "white", "text": "#1a1a1a", "muted": "#555555", "edge": "#4d4d4d", "skip": "#4d4d4d",
              "repeat_fill": "#f6f7f9", "repeat_line": "#8a93a3", "group_line": "#b9bec7", "legend_line": "#cccccc",
              "memory": "#c0651a", "stack_line": "#6b7380"},
    "dark": {"bg": "#161a20", "text": "#eeeeee", "muted": "#b0b0b0", "edge": "#c8c8c8", "skip": "#c8c8c8",
             "repeat_fill": "#1f252d", "repeat_line": "#7d8796", "group_line": "#545c68", "legend_line": "#545c68",
             "memory": "#f2a65a", "stack_line": "#8c96a6"},
    "mono": {"bg": "white", "text": "#000000", "muted": "#444444", "edge": "#222222", "skip": "#222222",
             "repeat_fill": "#f7f7f7", "repeat_line": "#555555", "group_line": "#999999", "legend_line": "#bbbbbb",
             "memory": "#000000", "stack_line": "#444444"},
}

# A block's title is its kind's `title` (NodeSpec.display_title); composite kinds (residual, parallel,
# repeat) are drawn as junctions and clusters, not titled boxes.
JUNCTIONS = {"add": "+", "sum": "+"}


def _pattern_text(names: list[str], cycle: int) -> str:
    """One cycle of a repeat's pattern, runs folded: [mamba × 3, attention] (empty without block names)."""
    if len(names) != cycle:
        return ""
    runs: list[list] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return "[" + ", ".join(name + (f" × {n}" if n > 1 else "") for name, n in runs) + "]"


def _title(d: dict) -> str:
    spec = d.get("spec")
    return spec.display_title() if spec is not None else str(d.get("kind", "?"))


def family_style(family: str | None) -> FamilyStyle:
    return FAMILY_STYLES.get(family or "other", FAMILY_STYLES["other"])


def colours(family: str | None, theme: str) -> tuple[str, str]:
    """(fill, border) of a family in a theme."""
    return getattr(family_style(family), theme)


# ================================================================================ the view
@dataclass
class DNode:
    """One drawn node."""

    id: str
    kind: str
    family: str
    order: int
    cluster: str | None  # id of the innermost drawn cluster
    title: str = ""
    args: str = ""
    name: str | None = None  # explicit module name, shown in grey
    shape: Any = None
    params: int = 0
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # layers view: (family, title, args)
    side_output: str | None = None  # the second output the block writes (a pooler's "pooled")
    configures: bool = False  # it configures later blocks (rotary, ALiBi) rather than adding to the stream
    reads_input: bool = False  # it reads a model input (an embedding), for the links between tied tables


@dataclass
class DCluster:
    id: str
    kind: str  # stack, repeat, layer, residual, parallel, branch
    label: str
    sublabel: str
    parent: str | None
    order: int
    params: int = 0  # a repeat: the parameters of all its copies


@dataclass
class DEdge:
    u: str
    v: str
    role: str  # data, skip, pooled, memory (cross-attention reads another stack), tied (shared embedding)


@dataclass
class View:
    """The graph as it is drawn: nodes, clusters and edges after collapsing repeats."""

    name: str
    detail: str
    nodes: dict[str, DNode]
    clusters: dict[str, DCluster]
    edges: list[DEdge]
    total_params: int = 0

    def families(self) -> list[str]:
        seen: list[str] = []
        for node in self.nodes.values():
            fams = [r[0] for r in node.rows] if node.rows else [node.family]
            for fam in fams:
                if fam not in seen and family_style(fam).in_legend:
                    seen.append(fam)
        order = list(FAMILY_STYLES)
        return sorted(seen, key=lambda f: order.index(f) if f in order else len(order))


def _explicit_name(data: dict) -> str | None:
    spec = data.get("spec")
    name = getattr(spec, "name", None)
    return name if name and name != data.get("kind") else None


def _run_starts(g, repeat: str) -> list[int]:
    """For each index of one pattern cycle, the first index of its run of identical bodies."""
    data = g.nodes[repeat]
    spec = data.get("spec")
    cycle = data.get("cycle", 1)
    starts = list(range(cycle))
    if spec is None or cycle <= 1:
        return starts
    bodies = spec.bodies()
    labels = data.get("labels") or []
    dumps = [[n.model_dump(by_alias=True) for n in body] for body in bodies]
    for k in range(1, cycle):
        same_label = (labels[k] == labels[k - 1]) if len(labels) == cycle else True
        if dumps[k] == dumps[k - 1] and same_label:
            starts[k] = starts[k - 1]
    return starts


class _Collapser:
    """Maps every IR node to the node that represents it in the drawing."""

    def __init__(self, g, detail: str, merge_runs: bool):
        self.g = g
        self.detail = detail
        self.repeats: dict[str, dict] = {}
        for n, d in g.nodes(data=True):
            if d.get("kind") == "repeat":
                times, cycle = d.get("times", 1), max(d.get("cycle", 1), 1)
                starts = _run_starts(g, n) if merge_runs else list(range(cycle))
                run_len = {k: starts.count(k) for k in set(starts)}
                self.repeats[n] = dict(times=times, cycle=cycle, starts=starts, run_len=run_len)

    def index(self, repeat: str, i: int) -> int:
        if self.detail == "full":
            return i
        info = self.repeats[repeat]
        return info["starts"][i % info["cycle"]]

    def map(self, node: str) -> str:
        """The id of the drawn copy of ``node`` (itself when it is drawn)."""
        data = self.g.nodes[node]
        out, pos = "", 0
        for repeat, i, _cycle in data.get("copy", ()):
            out += node[pos:len(repeat)] + f".{self.index(repeat, i)}"
            pos = len(repeat) + len(f".{i}")
        mapped = out + node[pos:]
        return mapped if mapped in self.g else node

    def loops_back(self, u: str, v: str) -> bool:
        """True for an edge from one copy of a repeated layer to the next that, collapsed, would
        point back to the same or an earlier drawn copy (the drawing says "× N" instead)."""
        copies_v = {r: i for r, i, _c in self.g.nodes[v].get("copy", ())}
        for repeat, i, _c in self.g.nodes[u].get("copy", ()):
            j = copies_v.get(repeat)
            if j is None:
                return False
            if i != j:
                return self.index(repeat, j) <= self.index(repeat, i)
        return False

    def repeats_of(self, node: str) -> list[str]:
        return [r for r, _i, _c in self.g.nodes[node].get("copy", ())]

    def exit_of(self, layer: str) -> str:
        """The last node of a layer: the source of the data edge that leaves it (or of the memory
        edge, for the last layer of a stack that another stack reads)."""
        prefix = layer + "."
        for u, v, d in self.g.edges(data=True):
            if d.get("role") in ("data", "memory") and u.startswith(prefix) and not v.startswith(prefix):
                return u
        raise KeyError(layer)

    def map_source(self, u: str, v: str) -> str:
        """Like map, but an edge leaving a repeat starts from the end of the last drawn layer."""
        v_repeats = set(self.repeats_of(v))
        for repeat in self.repeats_of(u):  # outermost first
            if repeat not in v_repeats:
                info = self.repeats[repeat]
                if self.detail == "full":
                    last = info["times"] - 1
                else:  # the last entry of the drawn cycle (its run start)
                    last = info["starts"][min(info["times"], info["cycle"]) - 1]
                layer = f"{self.map(repeat)}.{last}"
                exit_node = self.exit_of(layer) if layer in self.g else u
                if exit_node == u:
                    break
                return self.map_source(exit_node, v)
        return self.map(u)


def _fmt_count(n: int) -> str:
    if n >= 10**9:
        return f"{n / 10**9:.2f}B"
    if n >= 10**6:
        return f"{n / 10**6:.2f}M"
    if n >= 10**3:
        return f"{n / 10**3:.1f}K"
    return str(n)


def _fmt_shape(shape: Any) -> str:
    if not shape:
        return ""
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _junction_scales(d: dict) -> str:
    """"×0.22" for a scaled residual, "×0.5, ×1" for a parallel with branch scales, else ""."""
    if d.get("scale") is not None:
        return f"×{d['scale']:.4g}"
    if d.get("scales"):
        return ", ".join(f"×{s:.4g}" for s in d["scales"])
    return ""


def _leaf_node(node_id: str, d: dict, cluster: str | None) -> DNode:
    kind = d.get("kind", "?")
    if kind in JUNCTIONS:  # a scaled residual (x + s·f(x)) or sum (Σ s_i·f_i(x)) shows its scales beside the junction
        title, args = JUNCTIONS[kind], _junction_scales(d)
    elif kind in ("input", "output"):
        title, args = str(d.get("label") or kind), ""
    else:
        title, args = _title(d), str(d.get("label") or "")
    spec = d.get("spec")
    return DNode(node_id, kind, d.get("family") or "other", d.get("order", 0), cluster, title, args,
                 _explicit_name(d), d.get("out_shape"), int(d.get("params") or 0),
                 side_output=getattr(spec, "side_output", None), configures=bool(d.get("configures")),
                 reads_input=getattr(spec, "reads_input", None) is not None)


def build_view(g, detail: str = "blocks", *, merge_runs: bool = True, residual_clusters: bool = False) -> View:
    """The drawn graph: which nodes, clusters and edges a diagram of ``g`` has at a detail level."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, not {detail!r}")
    c = _Collapser(g, detail, merge_runs)
    nodes_data = dict(g.nodes(data=True))

    # ---- what each node is drawn as (layers view: boxes for repeated layers and top-level composites)
    def box_of(node: str) -> str | None:
        if detail != "layers":
            return None
        chain, parent = [], nodes_data[node].get("parent")
        while parent:
            chain.append(parent)
            parent = nodes_data[parent].get("parent")
        for anc in reversed(chain):  # outermost first
            kind = nodes_data[anc]["kind"]
            if kind == "layer" or (kind in ("residual", "parallel") and _top_level(nodes_data, anc)):
                return anc
        return None

    def drawn(node: str) -> str:
        mapped = c.map(node)
        return box_of(mapped) or mapped

    # ---- clusters
    clusters: dict[str, DCluster] = {}
    cluster_kinds = ({"stack", "repeat", "layer", "parallel", "branch", "with_memory"}
                     | ({"residual"} if residual_clusters else set()))
    for n, d in g.nodes(data=True):
        if not d.get("composite") or c.map(n) != n or n == "model":
            continue
        kind = d["kind"]
        if kind not in cluster_kinds:
            continue
        if detail == "layers" and (box_of(n) or _is_box(nodes_data, n)):
            continue
        label = sublabel = ""
        if kind == "stack":  # one stack of a graph model (encoder, decoder): its name and what it reads
            label = n
            reads = [str(md.get("label") or md.get("input")) for m, md in g.nodes(data=True)
                     if md.get("kind") == "input" and md.get("input") == d.get("input")]
            sublabel = f"input: {reads[0]}" if reads else ""
        elif kind == "repeat":
            info = c.repeats[n]
            times, cycle = info["times"], info["cycle"]
            names = d.get("labels") or []
            if detail == "full":
                label, sublabel = f"{times} layers", (names[0] if len(set(names)) == 1 else "")
            elif cycle == 1:
                label, sublabel = f"× {times}", (names[0] if names else "")
            elif times % cycle == 0:
                pattern = _pattern_text(names, cycle)
                label, sublabel = f"× {times // cycle}", f"{times} layers" + (f": {pattern}" if pattern else "")
            else:
                label, sublabel = f"{times} layers", f"cycling {_pattern_text(names, cycle) or f'{cycle} bodies'}"
            if d.get("shared"):  # one set of weights for every copy (or each pattern entry)
                sublabel = (sublabel + ", " if sublabel else "") + "shared weights"
        elif kind == "layer":
            repeat = d["parent"]
            info = c.repeats[repeat]
            index = int(n.rsplit(".", 1)[1])
            names = nodes_data[repeat].get("labels") or []
            name = names[index % info["cycle"]] if len(names) == info["cycle"] else ""
            if detail == "full":
                label = f"{name or 'layer'} {index}" if info["cycle"] > 1 or not name else f"layer {index}"
            elif info["cycle"] == 1:
                continue  # the repeat's own cluster is enough
            else:
                run = info["run_len"].get(index, 1)
                label = (name or f"layer {index}") + (f" × {run}" if run > 1 else "")
        elif kind == "parallel":
            label = "parallel"
        elif kind == "with_memory":  # run only when the model is given the memory, else skipped
            label, sublabel = f"with {d.get('needs')}", "skipped without it"
        params = 0
        if kind == "repeat":
            prefix = n + "."
            params = sum(int(md.get("params") or 0) for m, md in g.nodes(data=True)
                         if m.startswith(prefix) and not md.get("composite"))
        clusters[n] = DCluster(n, kind, label, sublabel, None, d.get("order", 0), params)

    def cluster_of(node: str) -> str | None:
        parent = nodes_data[node].get("parent")
        while parent and parent not in clusters:
            parent = nodes_data[parent].get("parent")
        return parent

    for cl in clusters.values():
        cl.parent = cluster_of(cl.id)

    # ---- nodes
    nodes: dict[str, DNode] = {}
    for n, d in sorted(g.nodes(data=True), key=lambda item: item[1].get("order", 0)):
        if c.map(n) != n:
            continue
        if detail == "layers":
            if box_of(n):
                continue  # drawn as a row of its box
            if d.get("composite"):
                if _is_box(nodes_data, n):
                    nodes[n] = _box_node(g, n, c, cluster_of(n))
                continue
        elif d.get("composite"):
            continue
        nodes[n] = _leaf_node(n, d, cluster_of(n))

    for node in nodes.values():  # an input read by one stack of a graph model is drawn inside that stack
        if node.kind == "input":
            readers = [cl for cl in clusters.values() if cl.kind == "stack"
                       and nodes_data[cl.id].get("input") == nodes_data[node.id].get("input")]
            if len(readers) == 1:
                node.cluster = readers[0].id
    for node in nodes.values():  # draw a parallel's sum after its branches
        if node.kind == "sum":
            prefix = node.id.rsplit(".", 1)[0] + "."
            node.order = max([m.order for m in nodes.values() if m.id.startswith(prefix)] + [node.order]) + 0.5

    # ---- edges
    priority = {"data": 0, "skip": 1, "pooled": 2, "memory": 3}
    chosen: dict[tuple[str, str], str] = {}
    for u, v, d in g.edges(data=True):
        role = d.get("role", "data")
        mu, mv = drawn(c.map_source(u, v)), drawn(c.map(v))
        if mu == mv or mu not in nodes or mv not in nodes or c.loops_back(u, v):
            continue
        key = (mu, mv)
        if key not in chosen or priority[role] < priority[chosen[key]]:
            chosen[key] = role
    edges = [DEdge(u, v, role) for (u, v), role in chosen.items()]
    _side_outputs(nodes, edges)
    edges += _tied_embeddings(g, nodes)
    edges.sort(key=lambda e: (nodes[e.u].order, nodes[e.v].order))
    return View(g.graph.get("name") or getattr(g.graph.get("spec"), "name", "model"), detail, nodes, clusters, edges,
                int(g.graph.get("total_params") or 0))


def _side_outputs(nodes: dict[str, DNode], edges: list[DEdge]) -> None:
    """A pooler is a side output: the stream bypasses it, and it feeds its own output node."""
    for pooler in [n for n in nodes.values() if n.side_output]:
        sources = [e.u for e in edges if e.v == pooler.id and e.role == "data"]
        outs = [e for e in edges if e.u == pooler.id]
        if len(sources) != 1 or not outs:
            continue
        side_id = f"output.{pooler.id}"  # "output" is a reserved name, so no block id starts so
        for e in outs:
            if e.v == "output":
                edges.append(DEdge(sources[0], "output", "data"))
                e.v, e.role = side_id, "data"
            else:
                e.u = sources[0]
        nodes[side_id] = DNode(side_id, "output", "io", pooler.order, pooler.cluster, pooler.side_output, "",
                               shape=pooler.shape)
    seen: set[tuple[str, str]] = set()
    unique = []
    for e in edges:
        if (e.u, e.v) not in seen:
            seen.add((e.u, e.v))
            unique.append(e)
    edges[:] = unique


def _tied_embeddings(g, nodes: dict[str, DNode]) -> list[DEdge]:
    """A dotted link from a shared embedding table to each embedding of another stack that reuses
    it (encoder and decoder of a translation model); ties within one stack are left to the label."""
    out = []
    tables = g.graph.get("embeddings") or {}
    for node in list(nodes.values()):
        if not node.reads_input:
            continue
        tie = getattr(g.nodes[node.id].get("spec"), "tie", None)
        source = tables.get(tie) if tie else None
        if source in nodes and source != node.id and _stack_of(g, source) != _stack_of(g, node.id):
            out.append(DEdge(source, node.id, "tied"))
    return out


def _stack_of(g, node: str) -> str | None:
    """The stack (of a graph model) that a node belongs to; None in a single-stack model."""
    while node is not None:
        data = g.nodes[node]
        if data.get("kind") == "stack":
            return node
        node = data.get("parent")
    return None


def _top_level(nodes_data: dict, n: str) -> bool:
    """A direct child of the model, or of one stack of a graph model."""
    parent = nodes_data[n].get("parent")
    return parent == "model" or (parent is not None and nodes_data[parent].get("kind") == "stack")


def _is_box(nodes_data: dict, n: str) -> bool:
    d = nodes_data[n]
    return d["kind"] == "layer" or (d["kind"] in ("residual", "parallel") and _top_level(nodes_data, n))


def _box_node(g, n: str, c: _Collapser, cluster: str | None) -> DNode:
    d = g.nodes[n]
    if d["kind"] == "layer":
        repeat = d["parent"]
        info = c.repeats[repeat]
        index = int(n.rsplit(".", 1)[1])
        names = g.nodes[repeat].get("labels") or []
        title = names[index % info["cycle"]] if len(names) == info["cycle"] else "layer"
        run = info["run_len"].get(index, 1) if c.detail != "full" else 1
        if c.detail == "full":
            title = f"{title} {index}"
        elif run > 1:
            title = f"{title} × {run}"
    else:
        title = d["kind"]
    prefix = n + "."
    inside = sorted((m for m, md in g.nodes(data=True) if m.startswith(prefix) and not md.get("composite")
                     and c.map(m) == m), key=lambda m: g.nodes[m]["order"])
    rows, params = [], 0
    for m in inside:
        md = g.nodes[m]
        params += int(md.get("params") or 0)
        if md["kind"] == "add":
            rows.append(("structure", "+ residual", _junction_scales(md)))
        elif md["kind"] == "sum":
            rows.append(("structure", "+ sum of branches", _junction_scales(md)))
        else:
            rows.append((md.get("family") or "other", _title(md), str(md.get("label") or "")))
    last = g.nodes[inside[-1]] if inside else d
    node = DNode(n, d["kind"], "structure", d.get("order", 0), cluster, title, "", None,
                 last.get("out_shape"), params, rows)
    return node


# ================================================================================ DOT
def _q(text: str) -> str:
    """A quoted DOT string. A newline stays a line break; other control characters are written as
    visible escapes (``\x1b``), so nothing from a spec reaches a terminal that prints the DOT."""
    text = "\n".join(printable(line) for line in str(text).split("\n"))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _h(text: Any) -> str:
    return _html_escape(printable(text), quote=True)


def _attrs(**attrs: Any) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, _HTML):
            parts.append(f"{key}=<{value}>")
        elif isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
        else:
            parts.append(f"{key}={_q(value)}")
    return "[" + ", ".join(parts) + "]"


class _HTML(str):
    """An HTML-like Graphviz label (emitted as <...>)."""


@dataclass
class _Opts:
    theme: str
    direction: str
    show_shapes: bool
    show_params: bool
    legend: bool
    title: bool


def _node_label(node: DNode, o: _Opts) -> _HTML:
    t = THEMES[o.theme]
    lines = []
    title = f"<B>{_h(node.title)}</B>"
    if node.name:
        title += f' <FONT POINT-SIZE="9" COLOR="{t["muted"]}">{_h(node.name)}</FONT>'
    lines.append(title)
    if node.args:
        lines.append(f'<FONT POINT-SIZE="10">{_h(node.args)}</FONT>')
    extra = _footer(node, o)
    if extra:
        lines.append(extra)
    return _HTML("<BR/>".join(lines))


def _footer(node: DNode, o: _Opts) -> str | None:
    """The optional muted line under a label: output shape and/or parameter count, on request."""
    extra = []
    if o.show_shapes and node.shape:
        extra.append(_fmt_shape(node.shape))
    if o.show_params and node.params:
        extra.append(f"{_fmt_count(node.params)} params")
    if not extra:
        return None
    return f'<FONT POINT-SIZE="9" COLOR="{THEMES[o.theme]["muted"]}">{_h(" · ".join(extra))}</FONT>'


def _box_label(node: DNode, o: _Opts) -> _HTML:
    t = THEMES[o.theme]
    rows = [f'<TR><TD ALIGN="CENTER" COLSPAN="1" CELLPADDING="4"><B>{_h(node.title)}</B></TD></TR>']
    for fam, title, args in node.rows:
        if fam == "structure":
            text = _h(" ".join(filter(None, (title, args))))
            rows.append(f'<TR><TD CELLPADDING="1"><FONT POINT-SIZE="9" COLOR="{t["muted"]}">{text}</FONT></TD></TR>')
            continue
        fill, line = colours(fam, o.theme)
        text = f"<B>{_h(title)}</B>" + (f'  <FONT POINT-SIZE="9">{_h(args)}</FONT>' if args else "")
        rows.append(f'<TR><TD BGCOLOR="{fill}" COLOR="{line}" BORDER="1" STYLE="ROUNDED" CELLPADDING="4">{text}</TD></TR>')
    extra = _footer(node, o)
    if extra:
        rows.append(f"<TR><TD>{extra}</TD></TR>")
    return _HTML('<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="2">' + "".join(rows) + "</TABLE>")


def _header_label(view: View, o: _Opts) -> _HTML | None:
    """The graph label: the title, the parameter count and the colour legend (a grid of swatches)."""
    t = THEMES[o.theme]
    families = view.families() if o.legend else []
    if not o.title and not families:
        return None
    columns = min(len(families), 4 if o.direction in ("TB", "BT") else 8) or 1
    rows = []
    if o.title:
        rows.append(f'<TR><TD COLSPAN="{columns}"><FONT POINT-SIZE="16"><B>{_h(view.name)}</B></FONT></TD></TR>')
        if view.total_params:
            rows.append(f'<TR><TD COLSPAN="{columns}"><FONT POINT-SIZE="10" COLOR="{t["muted"]}">'
                        f'{_fmt_count(view.total_params)} parameters</FONT></TD></TR>')
    for start in range(0, len(families), columns):
        cells = []
        for fam in families[start:start + columns]:
            fill, line = colours(fam, o.theme)
            cells.append(f'<TD BGCOLOR="{fill}" COLOR="{line}" BORDER="1" STYLE="ROUNDED" CELLPADDING="3">'
                         f'<FONT POINT-SIZE="9">{_h(family_style(fam).legend)}</FONT></TD>')
        cells += ["<TD></TD>"] * (columns - len(cells))
        rows.append("<TR>" + "".join(cells) + "</TR>")
    if families:
        rows.append(f'<TR><TD COLSPAN="{columns}" CELLPADDING="2"></TD></TR>')
    return _HTML('<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="4" CELLPADDING="1">' + "".join(rows) + "</TABLE>")


def _node_dot(node: DNode, o: _Opts) -> str:
    t = THEMES[o.theme]
    fill, line = colours(node.family, o.theme)
    if node.kind in JUNCTIONS:
        extra = {"xlabel": node.args} if node.args else {}
        return _attrs(label=node.title, shape="circle", width=0.28, height=0.28, fixedsize=True, fontsize=14,
                      style="filled", fillcolor=fill, color=line, penwidth=1.2, fontcolor=t["text"], **extra)
    if node.kind in ("input", "output"):
        return _attrs(label=node.title, shape="box", style="rounded", color=line, fontcolor=t["text"],
                      fontsize=11, penwidth=1, height=0.3, margin="0.12,0.04")
    if node.rows:
        return _attrs(label=_box_label(node, o), shape="box", style="rounded,filled", fillcolor=t["repeat_fill"],
                      color=t["repeat_line"], margin="0.05,0.05")
    style = "rounded,filled"
    if node.configures:
        style = "rounded,filled,dashed"  # configures the attention rather than adding to the stream
    return _attrs(label=_node_label(node, o), style=style, fillcolor=fill, color=line, penwidth=1.3,
                  fontcolor=t["text"])


def _with_forks(view: View) -> tuple[list[DEdge], dict[str, tuple[str | None, float]]]:
    """Edges with a fork point where each residual's identity path leaves the stream, so the skip
    edge starts inside the residual's cluster and the drawing reads like the papers' figures.
    Returns the edges and {fork id: (cluster, order)}."""
    edges = [DEdge(e.u, e.v, e.role) for e in view.edges]
    forks: dict[str, tuple[str | None, float]] = {}
    skips = [e for e in edges if e.role == "skip" and e.v.endswith(".add") and view.nodes[e.v].kind == "add"]
    skips.sort(key=lambda e: (len(e.v), view.nodes[e.v].order))  # outer residuals first
    for skip in skips:
        prefix = skip.v[: -len("add")]
        entry = [e for e in edges if e.role == "data" and e.v.startswith(prefix) and not e.u.startswith(prefix)
                 and e.v != skip.v]
        if not entry or len({e.u for e in entry}) != 1:
            continue
        fork = skip.v[: -len("add")] + "fork"
        orders = [view.nodes[e.v].order if e.v in view.nodes else forks[e.v][1] for e in entry]
        forks[fork] = (view.nodes[skip.v].cluster, min(orders) - 0.5)
        for e in entry:  # source -> fork -> each first block of the residual's body
            edges.append(DEdge(fork, e.v, "data"))
            e.v = fork
        edges[:] = [e for i, e in enumerate(edges) if e.v != fork or all((f.u, f.v) != (e.u, e.v) for f in edges[:i])]
        skip.u = fork

    def order(n: str) -> float:
        return view.nodes[n].order if n in view.nodes else forks[n][1]

    edges.sort(key=lambda e: (order(e.u), order(e.v)))
    return edges, forks


def _side_ports(direction: str) -> tuple[str, str]:
    return ("e", "e") if direction in ("TB", "BT") else ("s", "s")


@dataclass
class _MemoryLayout:
    """How the cross-attention (memory) edges of a view are drawn. Each memory stack's output is
    level with one block that reads it (the reader nearest it in depth), as in the papers' figures,
    so the edge runs straight across the gap between the stacks and never through a stack. When
    one output feeds several drawn blocks (``detail="full"``, or two cross-attentions in a layer),
    it feeds a dashed bus running down that gap, with one short level branch into each block."""

    level: list[list[str]] = field(default_factory=list)  # groups of nodes on one rank
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (u, v, kind): memory, bus, feed
    buses: dict[str, str] = field(default_factory=dict)  # point node of a bus -> the block it feeds
    slack: set[tuple[str, str]] = field(default_factory=set)  # data edges that may stretch to keep ranks level


def _natural_ranks(edges: list[DEdge]) -> dict[str, int]:
    """Longest path from the inputs over the flow edges: roughly the rank Graphviz gives each node."""
    import networkx as nx

    flow = nx.DiGraph()
    flow.add_edges_from((e.u, e.v) for e in edges if e.role not in ("memory", "tied"))
    rank: dict[str, int] = {}
    for n in nx.topological_sort(flow):
        rank[n] = max((rank[p] + 1 for p in flow.predecessors(n)), default=0)
    return rank


def _memory_layout(view: View, edges: list[DEdge], forks: dict) -> _MemoryLayout:
    out = _MemoryLayout()
    readers: dict[str, list[str]] = {}
    for e in edges:
        if e.role == "memory":
            readers.setdefault(e.u, []).append(e.v)
    if not readers:
        return out
    rank = _natural_ranks(edges)

    def order(n: str) -> float:
        return view.nodes[n].order if n in view.nodes else forks[n][1]

    def entry_edges(reader: str) -> list[tuple[str, str]]:
        """The data edges into the reader's residual (its fork), or into the reader: where the
        reading stack stretches when the memory stack's output is deeper than the reader."""
        fork = reader.rsplit(".", 1)[0] + ".fork"  # as _with_forks names the fork of a residual
        target = fork if fork in forks else reader
        return [(e.u, e.v) for e in edges if e.v == target and e.role == "data"]

    for source, targets in readers.items():
        targets = sorted(targets, key=lambda v: (rank.get(v, 0), order(v)))
        nearest = min(targets, key=lambda v: (abs(rank.get(v, 0) - rank.get(source, 0)), order(v)))
        out.slack |= {(e.u, e.v) for e in edges if e.v == source and e.role == "data"}
        out.slack |= set(entry_edges(nearest))
        if len(targets) == 1:
            out.level.append([source, nearest])
            out.edges.append((source, nearest, "memory"))
            continue
        buses = [f"{v}.memory" for v in targets]  # a leaf block has no children, so no id clashes
        out.buses.update(zip(buses, targets))
        for bus, v in zip(buses, targets):
            out.level.append([source, bus, v] if v == nearest else [bus, v])
            out.edges.append((bus, v, "feed"))
        out.edges.append((source, buses[targets.index(nearest)], "memory"))
        out.edges += [(a, b, "bus") for a, b in zip(buses, buses[1:])]
    return out


def to_dot(view: View, *, theme: str = "light", direction: str = "TB", show_shapes: bool = False,
           show_params: bool = False, legend: bool = True, title: bool = True) -> str:
    """The DOT source of a view."""
    if theme not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {theme!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    o = _Opts(theme, direction, show_shapes, show_params, legend, title)
    t = THEMES[theme]
    out: list[str] = [f"digraph {_q(view.name)} {{"]
    graph_attrs = dict(rankdir=direction, bgcolor=t["bg"], fontname=FONT, fontcolor=t["text"], fontsize=12,
                       nodesep=0.3, ranksep=0.28, newrank=True, outputorder="edgesfirst", pad=0.25)
    header = _header_label(view, o)
    if header:
        graph_attrs.update(label=header, labelloc="t", labeljust="c")
    out.append("  graph " + _attrs(**graph_attrs) + ";")
    out.append("  node " + _attrs(shape="box", fontname=FONT, fontsize=12, fontcolor=t["text"],
                                   margin="0.14,0.05", height=0.4) + ";")
    out.append("  edge " + _attrs(color=t["edge"], arrowsize=0.6, penwidth=1.2, fontname=FONT, fontsize=9,
                                   fontcolor=t["muted"]) + ";")

    children: dict[str | None, list[tuple[int, str, str]]] = {}
    for cl in view.clusters.values():
        children.setdefault(cl.parent, []).append((cl.order, "cluster", cl.id))
    for node in view.nodes.values():
        children.setdefault(node.cluster, []).append((node.order, "node", node.id))

    edges, forks = _with_forks(view)
    for fork_id, (cluster, order) in forks.items():
        children.setdefault(cluster, []).append((order, "fork", fork_id))
    memory = _memory_layout(view, edges, forks)
    for bus, reader in memory.buses.items():  # just before the reading stack, so the bus runs between the stacks
        stack = view.nodes[reader].cluster
        while stack is not None and view.clusters[stack].kind != "stack":
            stack = view.clusters[stack].parent
        where = view.clusters[stack] if stack is not None else None
        children.setdefault(where.parent if where else None, []).append(
            ((where.order if where else view.nodes[reader].order) - 0.5, "bus", bus))
    stacks = sorted(k for k in children.get(None, []) if k[1] == "cluster" and view.clusters[k[2]].kind == "stack")
    if direction in ("LR", "RL") and len(stacks) > 1:
        # Graphviz stacks clusters bottom-up across an LR rank: emit them in reverse so the memory
        # stack is on top and its edges enter the reader from above, away from the skip edges below.
        swap = dict(zip(stacks, reversed([k[0] for k in stacks])))
        children[None] = [(swap[k], *k[1:]) if k in swap else k for k in children[None]]

    def emit(parent: str | None, indent: str) -> None:
        for _order, what, ident in sorted(children.get(parent, [])):
            if what == "node":
                out.append(f"{indent}{_q(ident)} {_node_dot(view.nodes[ident], o)};")
                continue
            if what == "fork":
                out.append(f"{indent}{_q(ident)} {_attrs(shape='point', width=0.07, color=t['edge'], label='')};")
                continue
            if what == "bus":
                out.append(f"{indent}{_q(ident)} {_attrs(shape='point', width=0.06, color=t['memory'], label='')};")
                continue
            cl = view.clusters[ident]
            out.append(f"{indent}subgraph {_q('cluster_' + ident)} {{")
            out.append(f"{indent}  graph {_cluster_attrs(cl, o)};")
            emit(ident, indent + "  ")
            out.append(f"{indent}}}")

    emit(None, "  ")
    tail, head = _side_ports(direction)
    inputs = [n.id for n in view.nodes.values() if n.kind == "input"]
    if len(inputs) > 1:  # the stacks of a graph model start level, as in the papers
        out.append("  {rank=same; " + " ".join(_q(n) + ";" for n in inputs) + "}")
    for group in memory.level:  # the memory stack's output level with the block that reads it
        out.append("  {rank=same; " + " ".join(_q(n) + ";" for n in group) + "}")
    for e in edges:
        if e.v in forks:
            attrs = _attrs(weight=1 if (e.u, e.v) in memory.slack else 8, arrowhead="none")
        elif e.role == "skip":
            attrs = _attrs(tailport=tail, headport=head, color=t["skip"], weight=0)
        elif e.role == "pooled":
            attrs = _attrs(style="dashed", label=" pooled", weight=1)
        elif e.role == "memory":
            continue  # drawn below, by _memory_layout
        elif e.role == "tied":
            attrs = _attrs(style="dotted", dir="none", color=t["muted"], constraint=False, label=" shared")
        elif e.v in view.nodes and view.nodes[e.v].kind == "sum":
            attrs = _attrs(weight=1)  # let short branches stay at the top, beside the long ones
        elif (e.u, e.v) in memory.slack:
            attrs = _attrs(weight=1)  # stretch here to keep the memory level, not the top of a stack
        else:
            attrs = _attrs(weight=8)
        out.append(f"  {_q(e.u)} -> {_q(e.v)} {attrs};")
    for u, v, kind in memory.edges:  # cross-attention reads another stack: dashed, in its own colour
        style = dict(style="dashed", color=t["memory"], fontcolor=t["memory"], penwidth=1.4)
        if kind == "memory":  # the stack's output -> the reader, or onto its bus
            to_bus = v not in view.nodes
            attrs = _attrs(**style, label="memory", arrowhead="none" if to_bus else None,
                           **{"class": "memory-bus" if to_bus else "memory"})
        elif kind == "bus":
            attrs = _attrs(**style, arrowhead="none", weight=0, **{"class": "memory-bus"})
        else:  # feed: the bus -> one reader
            attrs = _attrs(**style, **{"class": "memory"})
        out.append(f"  {_q(u)} -> {_q(v)} {attrs};")
    out.append("}")
    return "\n".join(out) + "\n"


def _cluster_attrs(cl: DCluster, o: _Opts) -> str:
    t = THEMES[o.theme]
    if cl.kind == "stack":
        text = f'<FONT POINT-SIZE="15"><B>{_h(cl.label)}</B></FONT>'
        if cl.sublabel:
            text += f'<BR/><FONT POINT-SIZE="10" COLOR="{t["muted"]}">{_h(cl.sublabel)}</FONT>'
        return _attrs(label=_HTML(text), labeljust="l", labelloc="t", style="rounded", color=t["stack_line"],
                      penwidth=1.6, margin=14)
    if cl.kind == "repeat":
        text = f'<FONT POINT-SIZE="16"><B>{_h(cl.label)}</B></FONT>'
        sub = [cl.sublabel] if cl.sublabel else []
        if o.show_params and cl.params:
            sub.append(f"{_fmt_count(cl.params)} params")
        if sub:
            text += "".join(f'<BR/><FONT POINT-SIZE="10" COLOR="{t["muted"]}">{_h(line)}</FONT>' for line in sub)
        return _attrs(label=_HTML(text), labeljust="r", labelloc="t", style="rounded,filled", fillcolor=t["repeat_fill"],
                      color=t["repeat_line"], penwidth=1.2, margin=12)
    if cl.kind == "layer":
        return _attrs(label=_HTML(f'<FONT POINT-SIZE="11"><I>{_h(cl.label)}</I></FONT>'), labeljust="r",
                      labelloc="t", style="rounded,dashed", color=t["group_line"], penwidth=1, margin=8)
    if cl.kind == "branch":
        return _attrs(label="", style="invis", margin=4)
    if cl.kind == "parallel":
        return _attrs(label=_HTML(f'<FONT POINT-SIZE="9" COLOR="{t["muted"]}">{_h(cl.label)}</FONT>'),
                      labeljust="l", style="rounded,dotted", color=t["group_line"], margin=6)
    if cl.kind == "with_memory":
        text = f'<FONT POINT-SIZE="10"><I>{_h(cl.label)}</I></FONT>'
        if cl.sublabel:
            text += f'<BR/><FONT POINT-SIZE="9" COLOR="{t["muted"]}">{_h(cl.sublabel)}</FONT>'
        return _attrs(label=_HTML(text), labeljust="l", labelloc="t", style="rounded,dashed", color=t["group_line"],
                      margin=8)
    return _attrs(label="", style="rounded,dotted", color=t["group_line"], margin=6)


# ================================================================================ Mermaid
def _mid(node_id: str, taken: dict[str, str]) -> str:
    base = "n_" + re.sub(r"\W", "_", node_id)
    candidate, k = base, 1
    while candidate in taken.values() and taken.get(node_id) != candidate:
        k += 1
        candidate = f"{base}_{k}"
    taken[node_id] = candidate
    return candidate


def _mtext(text: str) -> str:
    """Text inside a quoted Mermaid label. Newlines and other control characters become visible
    escapes: a raw newline would end the label's line and start a statement of its own (a
    ``click ... href`` link); quotes, ``<``, ``>``, ``&`` and backticks become entities."""
    return (printable(text).replace("&", "&amp;").replace('"', "#quot;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("`", "#96;"))


def to_mermaid(view: View, *, theme: str = "light", direction: str = "TB", show_shapes: bool = False,
               show_params: bool = False) -> str:
    """A Mermaid flowchart of a view (paste into Markdown inside ```mermaid fences)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    ids: dict[str, str] = {}
    for node_id in view.nodes:
        _mid(node_id, ids)
    cids: dict[str, str] = {}
    for cl_id in view.clusters:
        cids[cl_id] = _mid("cluster." + cl_id, {**ids, **cids})
    out = [f"flowchart {direction}"]
    children: dict[str | None, list[tuple[int, str, str]]] = {}
    for cl in view.clusters.values():
        children.setdefault(cl.parent, []).append((cl.order, "cluster", cl.id))
    for node in view.nodes.values():
        children.setdefault(node.cluster, []).append((node.order, "node", node.id))

    def node_line(node: DNode) -> str:
        i = ids[node.id]
        if node.kind in JUNCTIONS:
            return f'{i}(("{_mtext(" ".join(filter(None, (node.title, node.args))))}"))'
        if node.kind in ("input", "output"):
            return f'{i}(["{_mtext(node.title)}"])'
        parts = [f"<b>{_mtext(node.title)}</b>" + (f" {_mtext(node.name)}" if node.name else "")]
        if node.rows:
            parts += [_mtext(f"{title} {args}".strip()) for _fam, title, args in node.rows]
        elif node.args:
            parts.append(_mtext(node.args))
        extra = []
        if show_shapes and node.shape:
            extra.append(_fmt_shape(node.shape))
        if show_params and node.params:
            extra.append(f"{_fmt_count(node.params)} params")
        if extra:
            parts.append(_mtext(" · ".join(extra)))
        return f'{i}["{"<br/>".join(parts)}"]'

    def emit(parent: str | None, indent: str) -> None:
        for _order, what, ident in sorted(children.get(parent, [])):
            if what == "node":
                out.append(indent + node_line(view.nodes[ident]))
                continue
            cl = view.clusters[ident]
            label = " ".join(x for x in (cl.label, f"({cl.sublabel})" if cl.sublabel else "") if x) or " "
            out.append(f'{indent}subgraph {cids[ident]} ["{_mtext(label)}"]')
            out.append(f"{indent}  direction {direction}")
            emit(ident, indent + "  ")
            out.append(f"{indent}end")

    emit(None, "  ")
    memory_links = []
    for k, e in enumerate(view.edges):
        arrow = {"data": "-->", "skip": "-->", "pooled": "-. pooled .->", "memory": "-. memory .->",
                 "tied": "-. shared .-"}[e.role]
        out.append(f"  {ids[e.u]} {arrow} {ids[e.v]}")
        if e.role == "memory":
            memory_links.append(str(k))
    if memory_links:  # cross-attention edges in their own colour, as in the Graphviz picture
        out.append(f"  linkStyle {','.join(memory_links)} stroke:{THEMES[theme]['memory']},stroke-width:1.5px")
    classes: dict[str, list[str]] = {}
    for node in view.nodes.values():
        if node.kind not in JUNCTIONS and node.kind not in ("input", "output"):
            classes.setdefault(node.family, []).append(ids[node.id])
    for fam in sorted(classes):
        fill, line = colours(fam, theme)
        out.append(f"  classDef {fam} fill:{fill},stroke:{line},color:{THEMES[theme]['text']}")
        out.append(f"  class {','.join(classes[fam])} {fam}")
    return "\n".join(out) + "\n"


# ================================================================================ API
def _graph_of(source: Any, overrides: Any):
    import networkx as nx

    if isinstance(source, nx.DiGraph):
        if overrides:
            raise ValueError("overrides need a spec, not an already resolved graph")
        return source
    from . import graph

    return graph(source, overrides=overrides)


def clean_svg(data: bytes | str) -> str:
    """SVG text without the engine's comments (version, title), so it is byte-stable."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
    return text


def _format_for(path: Path | None, fmt: str | None) -> str:
    """The format to write: ``fmt`` when given, else the one the file's suffix names (svg without a
    suffix). An unknown suffix is refused rather than filled with another format (x.jpg with SVG text)."""
    if fmt is None and path is not None and path.suffix and path.suffix.lower() not in SUFFIX_FORMATS:
        raise ValueError(f"cannot tell the format from the suffix '{shorten(path.suffix)}' of {shorten(path.name)}: "
                         f"use {', '.join(SUFFIX_FORMATS)}, or give --format / format= explicitly")
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(path.suffix.lower(), "svg") if path is not None else "svg"
    fmt = fmt.lower()
    if fmt == "mmd":
        fmt = "mermaid"
    if fmt == "gv":
        fmt = "dot"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def render_image(dot_source: str, fmt: str, *, engine: Engine | None = None, prefer: str | None = None) -> bytes:
    """svg/png/pdf bytes of a DOT text, with the engine found by :func:`archdsl.render_engine.find_engine`."""
    engine = engine or require_engine(fmt, prefer)
    data = run_engine(engine, dot_source, fmt, dpi=PNG_DPI)
    if fmt == "svg":
        data = clean_svg(data).encode("utf-8")
    return data


def render(source_or_spec: Any, path: str | Path | None = None, *, format: str | None = None,
           detail: str = "blocks", direction: str = "TB", theme: str = "light", show_shapes: bool = False,
           show_params: bool = False, overrides: dict | None = None, legend: bool = True,
           title: bool = True) -> str:
    """Draw an architecture. Returns the DOT source (the Mermaid text for ``format="mermaid"``);
    with ``path``, also writes the file in ``format`` (default: from the suffix, else svg).

    ``source_or_spec``: a spec path, YAML text, dict, :class:`~archdsl.spec.Spec`, or a graph from
    :func:`archdsl.graph`. ``detail``: blocks, layers or full. ``direction``: TB (top to bottom) or
    LR. ``theme``: light, dark or mono. svg/png/pdf need Graphviz (system ``dot`` or
    ``pip install graphviz-pure``); without one they raise :class:`RenderError` saying how to
    install it, while dot and mermaid always work.
    """
    path = Path(path) if path is not None else None
    fmt = _format_for(path, format)
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, not {detail!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if theme not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {theme!r}")
    g = _graph_of(source_or_spec, overrides)
    if detail == "full":  # every copy drawn: refuse a huge picture before collapsing anything
        _check_drawable(sum(1 for _, d in g.nodes(data=True) if not d.get("composite")), detail)
    view = build_view(g, detail)
    _check_drawable(len(view.nodes), detail)
    if fmt == "mermaid":
        text = to_mermaid(view, theme=theme, direction=direction, show_shapes=show_shapes, show_params=show_params)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text)
        return text
    dot_source = to_dot(view, theme=theme, direction=direction, show_shapes=show_shapes,
                        show_params=show_params, legend=legend, title=title)
    if path is None and fmt in ("svg", "png", "pdf"):
        require_engine(fmt)  # fail early and clearly: the caller asked for an image format
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "dot":
            write_text(path, dot_source)
        else:
            write_bytes(path, render_image(dot_source, fmt))
    return dot_source


def _check_drawable(boxes: int, detail: str) -> None:
    """Refuse a diagram of more than MAX_DRAWN_NODES boxes: laying it out would take minutes, and it
    could not be read anyway."""
    if boxes > MAX_DRAWN_NODES:
        better = "--detail blocks (each repeat drawn once) or --detail layers" if detail == "full" else \
            "a smaller --set of the sizes, or draw one block of the spec"
        raise RenderError(f"the diagram would have {boxes:,} boxes, more than archdsl draws ({MAX_DRAWN_NODES:,}); "
                          f"use {better}")


def dot_digest(dot_source: str) -> str:
    """A short hash of a DOT text (the gallery records it to tell whether an image is current)."""
    return hashlib.sha256(dot_source.encode("utf-8")).hexdigest()[:16]


# ================================================================================ CLI
def add_render_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``archdsl render SPEC -o FILE ...``; sets ``run=run_render`` as the handler."""
    parser.add_argument("spec", metavar="SPEC", help="the spec file")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write here (the suffix picks the format); without it, print DOT/Mermaid/SVG text")
    parser.add_argument("-f", "--format", choices=FORMATS, default=None,
                        help="svg, png, pdf, dot or mermaid (default: from the -o suffix, else svg)")
    parser.add_argument("--detail", choices=DETAILS, default="blocks",
                        help="blocks: each repeat drawn once, marked × N (default); layers: one box per layer; "
                             "full: every copy")
    parser.add_argument("--direction", choices=DIRECTIONS, default="TB", help="TB (top to bottom, default) or LR")
    parser.add_argument("--theme", choices=tuple(THEMES), default="light")
    parser.add_argument("--shapes", action="store_true", help="show each block's output shape")
    parser.add_argument("--params", action="store_true", help="show each block's parameter count")
    parser.add_argument("--no-legend", action="store_true", help="leave out the colour legend")
    existing = {a for action in parser._actions for a in action.option_strings}
    if "--set" not in existing:
        parser.add_argument("--set", action="append", metavar="VAR=VALUE", help="override a var (repeatable)")
    parser.set_defaults(run=run_render)
    return parser


def _parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set expects VAR=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()  # parsed as a YAML scalar by the loader
    return overrides


def run_render(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Handler of ``archdsl render``: writes the file (or prints text) and returns the exit code.
    Spec errors propagate as SpecError and engine problems as RenderError (a RuntimeError)."""
    try:
        overrides = _parse_sets(getattr(args, "set", None))
    except ValueError as exc:
        if parser is not None:
            parser.error(str(exc))
        raise
    output = Path(args.output) if args.output else None
    fmt = _format_for(output, args.format)
    if output is None and fmt in ("png", "pdf"):
        raise RenderError(f"{fmt} is binary: give a file with -o FILE.{fmt}")
    options = dict(format=fmt, detail=args.detail, direction=args.direction, theme=args.theme,
                   show_shapes=args.shapes, show_params=args.params, overrides=overrides or None,
                   legend=not args.no_legend)
    if output is not None:
        render(Path(args.spec), output, **options)
        print(f"wrote {output} ({fmt})")
        return 0
    text = render(Path(args.spec), **options)
    if fmt == "svg":
        text = render_image(text, "svg").decode("utf-8")
    sys.stdout.write(text)
    return 0


__all__ = ["render", "render_image", "build_view", "to_dot", "to_mermaid", "View", "RenderError", "FAMILY_STYLES",
           "THEMES", "FORMATS", "DETAILS", "add_render_arguments", "run_render", "find_engine",
           "clean_svg", "dot_digest", "INSTALL_HINT", "ENV_VAR"]
