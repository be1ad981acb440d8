"""Diagrams: every spec in every format, on both engines; the SVG/Mermaid agree with the IR; the
DOT of GPT-2 matches its snapshot; no engine gives a clear error; the gallery is current.
Graph models (encoder-decoder): stacks side by side, memory edges level and never through a stack,
over the fixtures in tests/fixtures and every graph spec in specs/."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import archdsl
import archdsl.diagram as render_mod
from archdsl import render_gallery
from archdsl.ir import in_first_cycle
from archdsl.diagram import FAMILY_STYLES, RenderError, add_render_arguments, render, run_render
from archdsl.render_engine import find_engine, graphviz_pure_path
from archdsl.spec import NODE_KINDS

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("encdec*.yaml"))


def is_graph_spec(path: Path) -> bool:
    """A spec whose model is a graph of named stacks (model: {graph: ...})."""
    return re.search(r"^model:\s*\n(\s+#.*\n)*\s+graph:", path.read_text(encoding="utf-8"), re.M) is not None


GRAPH_SPECS = FIXTURES + [p for p in SPECS if is_graph_spec(p)]
ALL_SPECS = SPECS + FIXTURES
SNAPSHOT = ROOT / "tests" / "snapshots" / "gpt2.dot"
SVG_NS = "{http://www.w3.org/2000/svg}"

ENGINES = {"dot": shutil.which("dot"), "graphviz-pure": graphviz_pure_path()}


@pytest.fixture(params=[name for name in sorted(ENGINES) if ENGINES[name]] or [None])
def engine(request, monkeypatch):
    """Each installed engine in turn, selected through ARCHDSL_DOT. graphviz-pure (a dependency) writes
    svg, png and pdf (through svglib), so every assertion runs after a pip install alone; with system
    Graphviz as well, each runs on both. test_system_dot_path says when system dot is missing."""
    if request.param is None:
        pytest.skip("no Graphviz engine is installed (pip install graphviz-pure)")
    path = ENGINES[request.param]
    monkeypatch.setenv("ARCHDSL_DOT", path)
    found = find_engine()
    assert found is not None and found.name == request.param
    return found


@pytest.fixture
def no_engine(monkeypatch):
    monkeypatch.setenv("ARCHDSL_DOT", "none")
    assert find_engine() is None


def spec_id(path: Path) -> str:
    return path.stem


# ----------------------------------------------------------------------------- what the IR says is drawn
def run_starts(g, repeat: str) -> list[int]:
    """Pattern entries identical to the previous one are drawn once ("local × 5")."""
    data = g.nodes[repeat]
    bodies = data["spec"].bodies()
    labels = data.get("labels") or [None] * len(bodies)
    starts = list(range(len(bodies)))
    for k in range(1, len(bodies)):
        same = [n.model_dump(by_alias=True) for n in bodies[k]] == [n.model_dump(by_alias=True) for n in bodies[k - 1]]
        if same and labels[k] == labels[k - 1]:
            starts[k] = starts[k - 1]
    return starts


def collapsed_blocks(g) -> set[str]:
    """Leaf ids of the collapsed graph: the first pattern cycle of every repeat (ir.in_first_cycle),
    keeping one copy of each run of identical pattern entries."""
    starts = {n: run_starts(g, n) for n, d in g.nodes(data=True) if d["kind"] == "repeat"}
    out = set()
    for n, d in g.nodes(data=True):
        if d["composite"] or not in_first_cycle(d):
            continue
        if all(starts[r][i] == i for r, i, _c in d.get("copy", ())):
            out.add(n)
    return out


def poolers_to_output(g) -> list[str]:
    return [u for u, v in g.in_edges("output") if g.nodes[u]["kind"] == "pooler"]


def memory_readers(g, drawn: set[str]) -> dict[str, list[str]]:
    """Memory stack -> the drawn blocks that cross-attend to it (one IR memory edge each)."""
    out: dict[str, list[str]] = {}
    for u, v, d in g.edges(data=True):
        if d["role"] == "memory" and v in drawn:
            out.setdefault(g.nodes[v]["spec"].cross, []).append(v)
    return out


def memory_buses(g, drawn: set[str]) -> set[str]:
    """A stack read by several drawn blocks feeds them through a bus: one point per reader."""
    return {f"{v}.memory" for readers in memory_readers(g, drawn).values() if len(readers) > 1 for v in readers}


def stack_of(g, node: str) -> str | None:
    while node is not None and g.nodes[node]["kind"] != "stack":
        node = g.nodes[node].get("parent")
    return node


def shared_links(g, drawn: set[str]) -> int:
    """Embeddings that share the table of an embedding in another stack (drawn as a dotted link)."""
    tables = g.graph.get("embeddings") or {}
    return sum(1 for n in drawn if g.nodes[n]["kind"] == "embedding" and g.nodes[n]["spec"].tie
               and stack_of(g, tables[g.nodes[n]["spec"].tie]) != stack_of(g, n))


def expected_svg_nodes(g) -> set[str]:
    """Blocks, plus a fork point where each residual's skip leaves the stream, a 'pooled' output per
    pooler, and the points of each memory bus."""
    blocks = collapsed_blocks(g)
    forks = {n[: -len("add")] + "fork" for n in blocks if g.nodes[n]["kind"] == "add"}
    side_outputs = {f"output.{p}" for p in poolers_to_output(g)}
    return blocks | forks | side_outputs | memory_buses(g, blocks)


# ----------------------------------------------------------------------------- registry
def test_every_node_kind_has_a_family_with_a_style():
    for kind, cls in NODE_KINDS.items():
        assert cls.family in FAMILY_STYLES, f"node kind {kind!r} has family {cls.family!r}, which has no style"
    for family in ("structure", "io", "recurrent", "conv"):  # junctions, input/output; reserved families
        assert family in FAMILY_STYLES
    for style in FAMILY_STYLES.values():
        assert len(style.light) == len(style.dark) == 2


def test_specs_exist():
    assert any(p.stem == "gpt2" for p in SPECS)


# ----------------------------------------------------------------------------- every spec, every format
@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_id)
@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_image_formats(spec, fmt, engine, tmp_path):
    if fmt not in engine.formats:
        pytest.skip(f"{engine.name} cannot write {fmt} (graphviz-pure writes pdf through svglib: pip install svglib)")
    out = tmp_path / f"{spec.stem}.{fmt}"
    dot = render(spec, out, format=fmt)
    assert dot.startswith("digraph")
    data = out.read_bytes()
    if fmt == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    elif fmt == "pdf":
        assert data.startswith(b"%PDF")
        if engine.name == "graphviz-pure":  # drawn from its svg by reportlab, whose text can be read back
            check_pdf(archdsl.graph(spec), data)
    else:
        check_svg(archdsl.graph(spec), data.decode("utf-8"))


def pdf_text(data: bytes) -> list[str]:
    """The strings a reportlab PDF draws (its page streams are ASCII85 + Flate encoded)."""
    import base64
    import zlib

    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", data, re.S):
        stream = stream.strip()
        raw = zlib.decompress(base64.a85decode(stream[:-2] if stream.endswith(b"~>") else stream))
        out += [t.replace(b"\\(", b"(").replace(b"\\)", b")").decode("latin-1")
                for t in re.findall(rb"\((.*?)(?<!\\)\) Tj", raw)]
    return out


def check_pdf(g, data: bytes) -> None:
    """The pdf shows what the svg shows: the title and arguments of every drawn block, and the legend."""
    from archdsl.diagram import build_view

    view = build_view(g)
    texts = set(pdf_text(data))
    for node in view.nodes.values():
        if node.kind not in ("add", "sum"):
            assert node.title in texts, (node.id, node.title)
        if node.args and node.args.isascii():
            assert node.args in texts, (node.id, node.args)
    assert view.name in texts


def check_svg(g, text: str) -> None:
    assert "<!--" not in text, "engine comments (version, timestamps) are stripped"
    root = ET.fromstring(text)
    nodes = [el for el in root.iter(f"{SVG_NS}g") if el.get("class") == "node"]
    titles = [el.find(f"{SVG_NS}title").text for el in nodes]
    assert len(titles) == len(set(titles))
    assert set(titles) == expected_svg_nodes(g)
    blocks = collapsed_blocks(g)
    for el, title in zip(nodes, titles):
        if title in blocks:  # every block is labelled
            words = "".join("".join(t.itertext()) for t in el.iter(f"{SVG_NS}text")).strip()
            assert words, f"node {title} has no label"
    if any(d["kind"] == "stack" for _, d in g.nodes(data=True)):
        check_graph_svg(g, root, memory_readers(g, blocks))


# ----------------------------------------------------------------------------- graph models: SVG geometry
def svg_points(el) -> list[tuple[float, float]]:
    """The coordinates an SVG element draws through (paths, polygons, ellipses)."""
    pts: list[tuple[float, float]] = []
    for child in el.iter():
        tag = child.tag.replace(SVG_NS, "")
        if tag == "path":
            nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", child.get("d", ""))]
            pts += list(zip(nums[0::2], nums[1::2]))
        elif tag in ("polygon", "polyline"):
            nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", child.get("points", ""))]
            pts += list(zip(nums[0::2], nums[1::2]))
        elif tag == "ellipse":
            cx, cy, rx, ry = (float(child.get(k)) for k in ("cx", "cy", "rx", "ry"))
            pts += [(cx - rx, cy - ry), (cx + rx, cy + ry)]
    return pts


def bbox(pts):
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def svg_groups(root, kind: str) -> dict[str, Any]:
    """title -> <g> of the SVG's nodes, clusters or edges."""
    out = {}
    for el in root.iter(f"{SVG_NS}g"):
        classes = (el.get("class") or "").split()
        if classes and classes[0] == kind:
            out[el.find(f"{SVG_NS}title").text] = el
    return out


def edge_ends(title: str) -> tuple[str, str]:
    """(tail, head) of an SVG edge title "u->v" or "u:e->v:w" (ports dropped)."""
    u, v = title.split("->")
    return tuple(re.sub(r":(n|ne|e|se|s|sw|w|nw|c|_)$", "", x) for x in (u, v))  # type: ignore[return-value]


def check_graph_svg(g, root, readers: dict[str, list[str]], *, geometry: bool = True) -> None:
    """Stacks are clusters, the memory stack left of its readers; one memory edge into each drawn
    reader; memory edges (and buses) run between the stacks, through no block."""
    clusters = svg_groups(root, "cluster")
    stacks = [n for n, d in g.nodes(data=True) if d["kind"] == "stack"]
    for stack in stacks:
        assert f"cluster_{stack}" in clusters, f"stack {stack} is not drawn as a cluster"
    edges = svg_groups(root, "edge")
    memory = {t: el for t, el in edges.items() if "memory" in (el.get("class") or "").split()}
    wired = {t: el for t, el in edges.items() if {"memory", "memory-bus"} & set((el.get("class") or "").split())}
    expected = sorted(v for vs in readers.values() for v in vs)
    assert sorted(edge_ends(t)[1] for t in memory) == expected, "one memory edge into each drawn cross-attention"
    for title in memory:  # a stack read by several drawn blocks feeds them from a bus, else directly
        u, v = edge_ends(title)
        stack, targets = next((s, r) for s, r in readers.items() if v in r)
        if len(targets) > 1:
            assert u == f"{v}.memory", title
        else:  # straight from a node of the stack it reads (the drawn copy of its last block, or its layer box)
            assert not u.endswith(".memory") and u in g and stack_of(g, u) == stack, title
    if not geometry:
        return
    nodes = {t: bbox(svg_points(el)) for t, el in svg_groups(root, "node").items()}
    for memory_stack, targets in readers.items():
        reader_stacks = {stack_of(g, v) for v in targets}
        left = bbox(svg_points(clusters[f"cluster_{memory_stack}"]))
        for stack in reader_stacks:
            right = bbox(svg_points(clusters[f"cluster_{stack}"]))
            assert left[2] < right[0], f"{memory_stack} is not drawn left of {stack}"
    sources = {edge_ends(t)[0] for t in wired} - {edge_ends(t)[1] for t in wired}
    targets = {edge_ends(t)[1] for t in memory}
    lo = min((nodes[s][0] + nodes[s][2]) / 2 for s in sources)
    hi = max((nodes[v][0] + nodes[v][2]) / 2 for v in targets)
    for title, el in wired.items():
        u, v = edge_ends(title)
        for x, y in svg_points(el.find(f"{SVG_NS}path")):
            assert lo - 1 <= x <= hi + 1, f"memory edge {title} strays outside the gap between the stacks"
            for n, (x0, y0, x1, y1) in nodes.items():
                if n not in (u, v) and x0 + 2 < x < x1 - 2 and y0 + 2 < y < y1 - 2:
                    raise AssertionError(f"memory edge {title} runs through {n}")


@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_id)
@pytest.mark.parametrize("detail", ["blocks", "layers", "full"])
def test_text_formats_at_every_detail(spec, detail, tmp_path, no_engine):
    dot = render(spec, tmp_path / "d.dot", detail=detail)
    assert (tmp_path / "d.dot").read_text(encoding="utf-8") == dot
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    mermaid = render(spec, tmp_path / "d.mmd", detail=detail)
    assert mermaid.startswith("flowchart TB")
    assert (tmp_path / "d.mmd").read_text(encoding="utf-8") == mermaid


def defines(dot: str, node: str) -> int:
    """How many times a DOT text defines a node (edges not counted)."""
    return len(re.findall(r'^\s*"' + re.escape(node) + r'" \[', dot, re.M))


def test_detail_levels_on_gpt2(no_engine):
    spec = ROOT / "specs" / "gpt2.yaml"
    blocks = render(spec, format="dot")
    full = render(spec, format="dot", detail="full")
    layers = render(spec, format="dot", detail="layers")
    assert defines(blocks, "h.0.residual_0.attention") == 1 and defines(blocks, "h.1.residual_0.attention") == 0
    assert all(defines(full, f"h.{i}.residual_0.attention") == 1 for i in range(12))
    assert defines(layers, "h.0") == 1 and defines(layers, "h.0.residual_0.attention") == 0
    assert defines(layers, "h.1") == 0 and "× 12" in layers


def test_svg_engines_agree_on_the_nodes(monkeypatch):
    installed = {k: v for k, v in ENGINES.items() if v}
    if len(installed) < 2:
        pytest.skip("needs both engines (apt-get install graphviz; pip install graphviz-pure)")
    titles = []
    for path in installed.values():
        monkeypatch.setenv("ARCHDSL_DOT", path)
        svg = render_mod.render_image(render(ROOT / "specs" / "gpt2.yaml", format="dot"), "svg").decode()
        root = ET.fromstring(svg)
        titles.append({el.find(f"{SVG_NS}title").text for el in root.iter(f"{SVG_NS}g") if el.get("class") == "node"})
    assert titles[0] == titles[1]


# ----------------------------------------------------------------------------- snapshot and content
def test_gpt2_dot_matches_snapshot(no_engine):
    dot = render(ROOT / "specs" / "gpt2.yaml", format="dot")
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(dot, encoding="utf-8")
    assert SNAPSHOT.is_file(), "no snapshot: run UPDATE_SNAPSHOTS=1 pytest tests/test_render.py"
    assert dot == SNAPSHOT.read_text(encoding="utf-8"), \
        "the DOT of gpt2 changed; if intended, run UPDATE_SNAPSHOTS=1 pytest tests/test_render.py"


def test_gpt2_dot_content(no_engine):
    dot = render(ROOT / "specs" / "gpt2.yaml", format="dot")
    assert "× 12" in dot
    assert "12 heads, causal" in dot and "gelu_tanh, hidden 3072" in dot
    assert dot.count('label="+"') == 2  # the two residual junctions, drawn once
    assert dot.count('tailport="e", headport="e"') == 2  # skip edges routed to the side
    for legend in ("attention", "feed-forward", "normalisation", "embedding", "positional", "head"):
        assert f">{legend}</FONT>" in dot


def test_shapes_and_params_on_request(no_engine):
    spec = ROOT / "specs" / "gpt2.yaml"
    plain = render(spec, format="dot")
    rich = render(spec, format="dot", show_shapes=True, show_params=True)
    assert "(batch, seq, 768)" not in plain and "2.36M params" not in plain
    assert "(batch, seq, 768)" in rich and "2.36M params" in rich  # one attention block
    assert "(batch, seq, 50257)" in rich  # the LM head's logits


SCALED_RESIDUAL = """
name: scaled
model:
  width: 32
  layers:
    - embedding: {vocab: 50}
    - repeat: 2
      body:
        - residual: {scale: 0.25, body: [rmsnorm, {attention: {heads: 4, causal: true}}]}
        - residual: [rmsnorm, {mlp: {hidden: 64}}]
    - lm_head: {vocab: 50}
"""


def test_a_scaled_residual_shows_its_scale(engine, tmp_path):
    """x + 0.25 f(x): the scale sits beside the residual's + junction (DOT, SVG, Mermaid and the layers boxes)."""
    dot = render(SCALED_RESIDUAL, format="dot")
    assert dot.count('xlabel="×0.25"') == 1
    svg = tmp_path / "scaled.svg"
    render(SCALED_RESIDUAL, svg)
    assert "×0.25" in "".join(ET.parse(svg).getroot().itertext())
    assert '(("+ ×0.25"))' in render(SCALED_RESIDUAL, format="mermaid")
    assert "×0.25" in render(SCALED_RESIDUAL, format="dot", detail="layers")


def test_pattern_repeat_draws_one_cycle(no_engine):
    spec = ROOT / "specs" / "local-global-decoder.yaml"
    dot = render(spec, format="dot")
    assert "local × 5" in dot and "× 2" in dot and "global" in dot
    assert dot.count("window 256") == 1


def test_overrides_and_direction(no_engine):
    dot = render(ROOT / "specs" / "gpt2.yaml", format="dot", overrides={"layers": 3}, direction="LR", theme="dark")
    assert "× 3" in dot and 'rankdir="LR"' in dot
    with pytest.raises(ValueError):
        render(ROOT / "specs" / "gpt2.yaml", format="dot", detail="everything")


# ----------------------------------------------------------------------------- Mermaid parsed back
MERMAID_NODE = re.compile(r"^\s*(n_\w+)(\[\"|\(\(\"|\(\[\")", re.M)
MERMAID_EDGE = re.compile(r"^\s*(n_\w+)\s+(-->|-\.[^>]*\.->|-\.[^>]*\.-)\s+(n_\w+)\s*$", re.M)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_id)
def test_mermaid_parses_back(spec, no_engine):
    g = archdsl.graph(spec)
    text = render(spec, format="mermaid")
    defined = MERMAID_NODE.findall(text)
    names = [d[0] for d in defined]
    assert len(names) == len(set(names))
    blocks = collapsed_blocks(g)
    side_outputs = poolers_to_output(g)
    assert len(names) == len(blocks) + len(side_outputs)
    edges = MERMAID_EDGE.findall(text)
    assert len(edges) == text.count("-->") + text.count(".->") + text.count(" .- ")
    for u, _arrow, v in edges:
        assert u in names and v in names
    # collapsing loses no input of a drawn block: every block keeps its in-degree, cross-attention
    # memory included (a pooler adds one edge: the stream bypasses it to the output, and it feeds
    # its own "pooled" output; an embedding shared across stacks adds a dotted link)
    expected_edges = sum(g.in_degree(n) for n in blocks) + len(side_outputs) + shared_links(g, blocks)
    assert len(edges) == expected_edges
    readers = memory_readers(g, blocks)
    assert text.count("-. memory .->") == sum(len(r) for r in readers.values())
    assert text.count("-. shared .-") == shared_links(g, blocks)
    lines = [line.strip() for line in text.splitlines()]
    assert sum(line.startswith("subgraph ") for line in lines) == lines.count("end")
    for name, data in g.nodes(data=True):  # one subgraph per stack of a graph model, labelled with its input
        if data["kind"] == "stack":
            reads = next(d["label"] for _, d in g.nodes(data=True) if d["kind"] == "input" and d["input"] == data["input"])
            assert f'subgraph n_cluster_{name} ["{name} (input: {reads})"]' in text


# ----------------------------------------------------------------------------- graph models
@pytest.mark.parametrize("spec", GRAPH_SPECS, ids=spec_id)
@pytest.mark.parametrize("detail", ["blocks", "layers", "full"])
def test_graph_memory_edges_between_stacks(spec, detail, engine):
    """Encoder left, decoder right; at every detail one memory edge per drawn cross-attention
    (full: one per copy, as in the IR; layers: one per layer box that reads), and none runs
    through a block."""
    g = archdsl.graph(spec)
    svg = render_mod.render_image(render(spec, format="dot", detail=detail), "svg").decode()
    root = ET.fromstring(svg)
    if detail == "layers":  # readers are layer boxes
        readers: dict[str, list[str]] = {}
        for e in render_mod.build_view(g, detail).edges:
            if e.role == "memory":
                readers.setdefault(stack_of(g, e.u), []).append(e.v)
        buses = {f"{v}.memory" for r in readers.values() if len(r) > 1 for v in r}
    else:
        drawn = collapsed_blocks(g) if detail == "blocks" else {n for n, d in g.nodes(data=True) if not d["composite"]}
        readers, buses = memory_readers(g, drawn), memory_buses(g, drawn)
    if detail == "full":
        assert sum(map(len, readers.values())) == sum(1 for *_e, d in g.edges(data=True) if d["role"] == "memory")
    assert readers
    check_graph_svg(g, root, readers)
    assert buses <= set(svg_groups(root, "node"))


@pytest.mark.parametrize("spec", GRAPH_SPECS, ids=spec_id)
def test_graph_detail_levels(spec, no_engine):
    g = archdsl.graph(spec)
    stacks = [n for n, d in sorted(g.nodes(data=True), key=lambda item: item[1]["order"]) if d["kind"] == "stack"]
    ir_memory = [(u, v) for u, v, d in g.edges(data=True) if d["role"] == "memory"]
    assert ir_memory, "a graph spec has cross-attention"
    per_detail = {}
    for detail in ("blocks", "layers", "full"):
        dot = render(spec, format="dot", detail=detail)
        view = render_mod.build_view(g, detail)
        positions = [dot.index(f'subgraph "cluster_{s}"') for s in stacks]
        assert positions == sorted(positions), "stacks are drawn in dependency order (encoder left)"
        assert [c.id for c in view.clusters.values() if c.kind == "stack"] == stacks
        for node in view.nodes.values():  # each input sits in the stack that reads it
            if node.kind == "input":
                assert node.cluster in stacks and g.nodes[node.cluster]["input"] == g.nodes[node.id]["input"]
        per_detail[detail] = dot.count('class="memory"')
        assert per_detail[detail] == sum(1 for e in view.edges if e.role == "memory")
        assert dot.count('label="memory"') == len({g.nodes[v]["spec"].cross for _u, v in ir_memory})  # one per stack read
    assert per_detail["full"] == len(ir_memory)  # one per copy
    assert per_detail["blocks"] == sum(map(len, memory_readers(g, collapsed_blocks(g)).values()))
    assert 1 <= per_detail["layers"] <= per_detail["blocks"]
    full = render(spec, format="dot", detail="full")
    assert all(defines(full, v) == 1 for _u, v in ir_memory)


def test_encdec_dot_content(no_engine):
    spec = ROOT / "tests" / "fixtures" / "encdec.yaml"
    dot = render(spec, format="dot")
    assert ">encoder</B>" in dot and ">decoder</B>" in dot
    assert ">input: token ids<" in dot and ">input: decoder token ids<" in dot
    assert '{rank=same; "input"; "decoder_input";}' in dot  # the stacks start level
    # the encoder's output is level with the cross-attention it feeds: a straight dashed edge
    assert '{rank=same; "encoder.layernorm"; "decoder.layers.0.residual_1.attention";}' in dot
    memory = [line for line in dot.splitlines() if line.startswith('  "encoder.layernorm" -> ')]
    assert len(memory) == 1 and 'style="dashed"' in memory[0] and 'label="memory"' in memory[0]
    tied = [line for line in dot.splitlines() if line.startswith('  "encoder.shared" -> "decoder.embedding"')]
    assert len(tied) == 1 and 'style="dotted"' in tied[0] and "shared" in tied[0] and "constraint=false" in tied[0]
    assert "shared with shared" in dot and "tied to shared" in dot  # the labels say it too
    assert dot.count("× 2") == 2  # each stack has its own repeat cluster
    lr = render(spec, format="dot", direction="LR")  # Graphviz stacks LR clusters bottom-up: emitted reversed
    assert lr.index('subgraph "cluster_decoder"') < lr.index('subgraph "cluster_encoder"')
    full = render(spec, format="dot", detail="full")
    assert full.count('class="memory"') == 2 and full.count('class="memory-bus"') == 2  # a bus: source + link
    for theme in ("dark", "mono"):
        assert 'class="memory"' in render(spec, format="dot", theme=theme)


def test_graph_spec_renders_with_cli(tmp_path, no_engine, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_render_arguments(sub.add_parser("render"))
    spec = ROOT / "tests" / "fixtures" / "encdec-postnorm.yaml"
    for detail in ("blocks", "layers", "full"):
        out = tmp_path / f"t-{detail}.mmd"
        args = parser.parse_args(["render", str(spec), "-o", str(out), "--detail", detail, "--set", "layers=2"])
        assert args.run(args, parser) == 0
        text = out.read_text(encoding="utf-8")
        assert "-. memory .->" in text and "linkStyle" in text
    capsys.readouterr()


# ----------------------------------------------------------------------------- engines
def test_system_dot_path(monkeypatch, tmp_path):
    if not ENGINES["dot"]:
        pytest.skip("system Graphviz not installed (apt-get install graphviz)")
    monkeypatch.delenv("ARCHDSL_DOT", raising=False)
    engine = find_engine()
    assert engine is not None and engine.name == "dot"  # preferred when present
    render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.pdf")
    assert (tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")


def test_graphviz_pure_path(monkeypatch, tmp_path):
    if not ENGINES["graphviz-pure"]:
        pytest.skip("graphviz-pure not installed (pip install graphviz-pure)")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.delenv("ARCHDSL_DOT", raising=False)
    monkeypatch.setenv("PATH", str(empty))  # no system dot: found next to the Python executable
    engine = find_engine()
    assert engine is not None and engine.name == "graphviz-pure", engine
    render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")
    render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.pdf")  # pdf from its svg, through svglib
    pdf = (tmp_path / "g.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and "gpt2" in pdf_text(pdf)
    render(ROOT / "specs" / "gpt2.yaml", tmp_path / "again.pdf")
    assert (tmp_path / "again.pdf").read_bytes() == pdf, "byte-stable: no timestamps"


def test_pdf_without_svglib_says_what_to_install(monkeypatch, tmp_path):
    if not ENGINES["graphviz-pure"]:
        pytest.skip("graphviz-pure not installed (pip install graphviz-pure)")
    import archdsl.render_engine as engine_mod

    monkeypatch.setenv("ARCHDSL_DOT", ENGINES["graphviz-pure"])
    monkeypatch.setattr(engine_mod, "_svg_to_pdf_available", lambda: False)
    engine_mod._find.cache_clear()
    try:
        with pytest.raises(RenderError, match="pip install svglib"):
            render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.pdf")
        assert not (tmp_path / "g.pdf").exists()
    finally:
        engine_mod._find.cache_clear()


def test_no_engine_gives_a_clear_error(no_engine, tmp_path):
    spec = ROOT / "specs" / "gpt2.yaml"
    for fmt in ("svg", "png", "pdf"):
        with pytest.raises(RenderError) as info:
            render(spec, tmp_path / f"g.{fmt}")
        message = str(info.value)
        assert "pip install graphviz-pure" in message and "apt-get install graphviz" in message
        assert info.value.__cause__ is None and isinstance(info.value, RuntimeError)
        assert not (tmp_path / f"g.{fmt}").exists()
    with pytest.raises(RenderError, match="pip install graphviz-pure"):
        render(spec, format="svg")
    assert render(spec, tmp_path / "g.dot").startswith("digraph")
    assert render(spec, tmp_path / "g.mmd").startswith("flowchart")


def test_bad_archdsl_dot(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHDSL_DOT", str(tmp_path / "missing-dot"))
    with pytest.raises(RenderError, match="ARCHDSL_DOT"):
        render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.svg")


# ----------------------------------------------------------------------------- API and CLI hooks
def test_torch_free_and_callable_module():
    code = ("import sys, archdsl, archdsl.diagram; "
            "text = archdsl.render('specs/gpt2.yaml', format='mermaid'); "
            "assert text.startswith('flowchart'); "
            "assert 'torch' not in sys.modules, 'rendering imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_cli_hooks(tmp_path, no_engine, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_render_arguments(sub.add_parser("render"))
    out = tmp_path / "gpt2.mmd"
    args = parser.parse_args(["render", str(ROOT / "specs" / "gpt2.yaml"), "-o", str(out), "--set", "layers=2",
                              "--detail", "full", "--shapes"])
    assert args.run(args, parser) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert text.startswith("flowchart") and "h_1_residual_0_attention" in text and "(batch, seq, 768)" in text
    args = parser.parse_args(["render", str(ROOT / "specs" / "gpt2.yaml"), "--format", "dot"])
    assert run_render(args, parser) == 0
    assert capsys.readouterr().out.startswith("digraph")
    args = parser.parse_args(["render", str(ROOT / "specs" / "gpt2.yaml"), "-o", str(tmp_path / "g.svg")])
    with pytest.raises(RenderError, match="pip install graphviz-pure"):
        run_render(args, parser)


# ----------------------------------------------------------------------------- gallery
def test_gallery_is_current():
    """Fails when a spec in specs/ has no current diagram in docs/gallery: run python -m archdsl.render_gallery."""
    fix = "run: python -m archdsl.render_gallery"
    items = render_gallery.entries(ROOT)
    assert {e.stem for e in items} == {p.stem for p in SPECS}
    engine = find_engine(prefer=render_gallery.GALLERY_ENGINE)
    for e in items:
        path = ROOT / "docs" / "gallery" / f"{e.stem}.svg"
        assert path.is_file(), f"specs/{e.stem}.yaml has no diagram in docs/gallery; {fix}"
        text = path.read_text(encoding="utf-8")
        stamp = render_gallery.read_stamp(text)
        assert stamp and stamp["dot"] == e.digest, f"docs/gallery/{e.stem}.svg is out of date; {fix}"
        if engine is not None and engine.ident == stamp["engine"]:  # same engine: compare the SVG itself
            assert render_gallery.svg_for(e) == text, f"docs/gallery/{e.stem}.svg is out of date; {fix}"
        ET.fromstring(text.encode("utf-8"))
    md = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    assert md == render_gallery.markdown(items), f"docs/gallery.md is out of date; {fix}"
    for e in items:
        assert f"](gallery/{e.stem}.svg)" in md
    assert render_gallery.stale(ROOT) == []


def test_every_leaf_kind_has_a_title():
    from archdsl.spec import NODE_KINDS

    untitled = sorted(kind for kind, cls in NODE_KINDS.items() if cls.leaf and not cls.title)
    assert not untitled, f"leaf kinds without a diagram title: {untitled}"
