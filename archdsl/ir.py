"""Resolve a Spec into the block graph (networkx) that the compiler, summary and renderer read.

Node ids are the module paths of the compiled model (``h.3.residual_1.mlp``), so a diagram,
a summary row, an error and a ``state_dict`` key all use the same name. Nodes:

* leaves (``composite=False``): one per block instance, with ``kind``, ``spec`` (the
  Pydantic node), ``config`` (its fields), ``family``, ``in_width``/``out_width``,
  ``in_shape``/``out_shape``, ``params``, ``flops`` (per token), ``loc`` (file:line), ``parent``,
  ``copy`` (repeat indices; the collapsed view keeps the first cycle), ``positional`` (id of
  the rotary/alibi node that governs an attention);
* junctions ``kind="add"`` (residual) and ``kind="sum"`` (parallel), and ``input``/``output``;
* composites (``composite=True``: ``model``, residuals, parallels, repeats and their
  ``layer``/``branch`` children) with an ordered ``children`` list, for the module tree.

Data edges carry ``role="data"``; a residual's identity path is an edge with ``role="skip"``.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import replace
from typing import Any, Callable

import networkx as nx

from .errors import ErrorCollector, ErrorItem, Loc, SpecError
from .kinds import REGISTRY
from .limits import MAX_GRAPH_NODES, MAX_LAYERS, MAX_NESTING
from .spec import NodeSpec, Repeat, Scope, Spec
from .spec.structure import Parallel, Residual, WithMemory

DEFAULT_MAX_PARAMS = 10**12
# Top-level nodes become attributes of the compiled model, so they must not shadow nn.Module's
# API or ArchModel's own attributes (tests/test_language.py checks this list against torch).
RESERVED_NAMES = {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile",
    "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "generate",
    "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict",
    "compile_decoding", "materialize", "modules", "mtia", "named_buffers", "named_children", "named_modules", "named_parameters",
    "new_cache", "num_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "save", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to",
    "to_empty", "train", "type", "xpu", "zero_grad",
    # transformers (5.x) adds this to torch.nn.Module itself when its modeling code is imported
    "smart_apply",
    # instance attributes and IR node ids
    "spec", "graph", "training", "config", "input", "output", "model", "decoder_input", "image_input", "vocab",
    "returns_logits", "has_pooler", "max_positions", "stack_inputs",
}


def default_max_params() -> int:
    value = os.environ.get("ARCHDSL_MAX_PARAMS")
    return check_budget(value, "ARCHDSL_MAX_PARAMS") if value else DEFAULT_MAX_PARAMS


def check_budget(value: Any, what: str = "max_params") -> int:
    """A parameter budget as an int; ValueError naming `what` unless it is a positive, finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{what}={value!r} is not a parameter budget: give a positive number such as 2e12")
    return int(number)


class _Builder:
    def __init__(self, spec: Spec, seq_len: int, budget: int):
        self.spec = spec
        self.budget, self.params = budget, 0  # the parameter budget, and the parameters of the nodes added so far
        self.rotary_sizes: dict[str, tuple[int, str]] = {}  # rotary node id -> (dims per head, first attention)
        self.g = nx.DiGraph(name=spec.name)
        self.errors = ErrorCollector()
        self.seq_len = seq_len
        self.embeddings: dict[str, tuple[int, int]] = {}
        self.embedding_ids: dict[str, str] = {}  # name -> node id, for tied heads
        self.memory_widths: dict[str, int] = {}  # stack name -> output width, once resolved
        self.given: dict[str, int] = {}  # memories the model is given when called (SingleStack.memories) -> width
        self.inside_memory: list[str] = []  # the memories of the with_memory nodes around the node being resolved
        self.stack_ends: dict[str, str] = {}  # stack name -> id of its last node
        self.stack_id, self.stack_width = "model", 0  # the stack being resolved
        self.stack_input = "tokens"  # the input of the stack being resolved
        self.placed: dict[str, list[str]] = {}  # kind -> ids of its nodes, for kinds placed once per model
        self.limits: dict[str, dict[str, int]] = {}  # stack -> model input -> its range (vocab, max positions)
        self.order = 0

    # ------------------------------------------------------------------ helpers
    def check_rotary_size(self, node: NodeSpec, node_id: str, scope: Scope, width: int, report) -> int | None:
        """One rotary node computes one table of cos/sin: every node it governs must rotate the same
        number of dims per head (the first one sets it). Returns the dims this node rotates."""
        pos = scope.positional
        if pos is None or pos.type != "rotary" or not node.uses_positional():
            return None
        rotation = node.rotary_dims(width, pos)
        if rotation is None:
            return None
        rotated, field = rotation
        first = self.rotary_sizes.setdefault(scope.positional_id, (rotated, node_id))
        if first[0] != rotated:
            report(field, f"the rotary node {scope.positional_id} rotates {first[0]} dims per head (set by {first[1]}); "
                   f"this layer would rotate {rotated}", "give layers of another head size their own "
                   "`- positional: {kind: rotary}` node, or the same head size")
        return rotated

    def check_input(self, node: NodeSpec, width: int | None, report) -> bool:
        """A stack starts from a raw input (token ids or pixels): its first node must be one that reads
        that input, and a node that reads it cannot come later. Returns False to skip the node."""
        own = "image" if self.stack_input == "image" else "tokens"
        reads = node.reads()
        if reads is not None and reads != own and (width is not None or self.stack_input == "tokens"):
            # a stack that left its input at the default (tokens) probably means the input this node reads
            report(None, f"{_article(node.kind)} {node.kind} reads {INPUT_LABELS[reads]}: it must be the first node of a stack with "
                   f"input: {reads}", f"set input: {reads} beside width and layers, and put the {node.kind} first")
            return False
        if width is None and reads != own:
            reader = next((k.name for k in REGISTRY if k.spec.reads_input == own), "node that reads it")
            report(None, f"the input is {INPUT_WORDS[own]}: the first node that transforms it must be "
                   f"{_article(reader)} {reader}", f"start the stack with - {reader}: {{...}}")
            return False
        if reads is not None and width is not None:
            report(None, f"{_article(node.kind)} {node.kind} reads the {INPUT_LABELS[reads]} and must be the first node of its stack: "
                   "here it would discard the stream built so far",
                   "move it first (an embedding with input: token_type_ids adds a second table to the stream)")
            return False
        return True

    def check_placement(self, node: NodeSpec, node_id: str, parent: str, report) -> None:
        """Kinds that end the model or write a side output go at the top level of a stack, once per model."""
        if "top_level" in node.placement and parent != self.stack_id:
            last = "last" in node.placement
            report(None, f"{_article(node.kind)} {node.kind} must be at the top level of its stack",
                   "make it the last node of the model" if last else "move it after the last layer")
        if "once" in node.placement:
            self.placed.setdefault(node.kind, []).append(node_id)
    def report_for(self, node: NodeSpec, path: str):
        def report(field: str | None, message: str, hint: str | None = None) -> None:
            self.errors.add(node.loc_of(field), f"{path}.{node.kind}" + (f".{field}" if field else ""), message, hint)
        return report

    def add(self, node_id: str, **attrs: Any) -> str:
        attrs.setdefault("composite", False)
        attrs["order"] = self.order
        self.order += 1
        self.params += attrs.get("params") or 0
        self.g.add_node(node_id, **attrs)
        return node_id

    def child_names(self, nodes: list[NodeSpec], path: str) -> list[str]:
        names = [n.name or n.default_name() for n in nodes]
        counts = Counter(names)  # one pass: tens of thousands of siblings are named in linear time
        first: dict[str, NodeSpec] = {}
        for i, n in enumerate(nodes):
            where = f"{path}[{i}].{n.kind}.name"
            if n.name and n.name in first:  # the repeat is the mistake, as for duplicate YAML keys
                earlier = first[n.name].loc_of("name")
                at = f" (the first at line {earlier.line})" if earlier and earlier.line else ""
                self.errors.add(n.loc_of("name"), where, f"two nodes here are named '{n.name}'{at}",
                                "names must be unique among siblings")
            elif n.name:
                first[n.name] = n
            if n.name in RESERVED_NAMES:
                self.errors.add(n.loc_of("name"), where, f"'{n.name}' is a reserved name", "pick another module name")
        out, seen = [], {}
        for name, n in zip(names, nodes):
            if n.name is None and counts[name] > 1:
                while True:  # skip suffixes a sibling took explicitly, or two nodes would share one graph id
                    seen[name] = seen.get(name, -1) + 1
                    if f"{name}_{seen[name]}" not in first:
                        break
                name = f"{name}_{seen[name]}"
            out.append(name)
        return out

    # ------------------------------------------------------------------ walking
    def sequence(self, nodes: list[NodeSpec], prefix: str, parent: str, source: str, width: int | None,
                 scope: Scope, path: str, copy: tuple) -> tuple[str, int | None]:
        children = []
        for i, (node, name) in enumerate(zip(nodes, self.child_names(nodes, path))):
            node_id = f"{prefix}.{name}" if prefix else name
            children.append(node_id)
            source, width, scope = self.node(node, node_id, parent, source, width, scope, f"{path}[{i}]", copy)
        self.g.nodes[parent].setdefault("children", []).extend(children)
        return source, width

    def node(self, node: NodeSpec, node_id: str, parent: str, source: str, width: int | None, scope: Scope,
             path: str, copy: tuple) -> tuple[str, int | None, Scope]:
        report = self.report_for(node, path)
        common = dict(kind=node.kind, spec=node, family=node.family, parent=parent, loc=node.loc_of(), path=f"{path}.{node.kind}",
                      copy=copy, label=node.summary_args(), config=node.model_dump(by_alias=True, exclude={"body", "branches", "pattern"}))
        if not self.check_input(node, width, report):
            return source, width, scope
        if isinstance(node, Residual):
            return self.residual(node, node_id, parent, source, width, scope, path, copy, common), width, scope
        if isinstance(node, Parallel):
            return self.parallel(node, node_id, parent, source, width, scope, path, copy, common), width, scope
        if isinstance(node, Repeat):
            return self.repeat(node, node_id, parent, source, width, scope, path, copy, common)
        if isinstance(node, WithMemory):
            return self.with_memory(node, node_id, source, width, scope, path, copy, common), width, scope
        in_width = width if width is not None else node.start_width(self.stack_width)
        scope = replace(scope, width=in_width, report=report, embeddings=dict(self.embeddings),
                        memory_widths=dict(self.memory_widths), top_level=parent == self.stack_id)
        node.check(scope)
        self.check_placement(node, node_id, parent, report)
        out_width = node.out_width(in_width)
        in_shape, out_shape = node.shapes(width, out_width, scope)
        governed = node.uses_positional()
        self.add(node_id, **common, in_width=in_width, out_width=out_width, in_shape=in_shape, out_shape=out_shape,
                 params=node.param_count(scope), flops=node.flops_per_token(scope),
                 decode_state=node.decode_state(scope), memory=node.memory(),
                 positional=scope.positional_id if governed else None)
        self.g.add_edge(source, node_id, role="data", width=width)
        self.g.nodes[node_id]["rotary_dims"] = self.check_rotary_size(node, node_id, scope, in_width, report)
        memory = node.memory()
        if memory in self.stack_ends:
            self.g.add_edge(self.stack_ends[memory], node_id, role="memory", width=self.memory_widths[memory])
        elif memory in self.given and memory not in self.inside_memory:
            report(None, f"this reads the memory '{memory}', which the model is given when called, outside a "
                   f"with_memory of it: without the memory the model could not run",
                   f"wrap the block in - with_memory: {{needs: {memory}, body: [...]}}")
        table = node.table()
        if table is not None:
            name = table[0] or node_id
            self.embeddings[name] = (table[1], out_width)
            self.embedding_ids[name] = node_id
        limits = self.limits.setdefault(self.stack_id, {})
        for what, limit in node.input_limits(in_width).items():
            limits[what] = min(limits.get(what, limit), limit)  # the tightest table bounds the input
        after = node.next_scope(scope, node_id)
        self.g.nodes[node_id]["configures"] = after.positional_id == node_id  # it governs the nodes after it
        return node_id, out_width, after

    def residual(self, node: Residual, node_id, parent, source, width, scope, path, copy, common) -> str:
        self.add(node_id, **{**common, "composite": True}, in_width=width, out_width=width)
        end, out_width = self.sequence(node.body, node_id, node_id, source, width, scope, f"{path}.residual.body", copy)
        if out_width != width:
            self.errors.add(node.loc_of(), f"{path}.residual",
                            f"the residual branch changes the width from {width} to {out_width}",
                            "x + f(x) needs f to keep the width; move the projection outside the residual")
        add = self.add(f"{node_id}.add", kind="add", family="structure", parent=node_id, copy=copy, loc=node.loc_of(),
                       label="+", scale=node.scale, in_width=width, out_width=width, out_shape=("batch", "seq", width), params=0, flops=0)
        self.g.add_edge(end, add, role="data", width=out_width)
        self.g.add_edge(source, add, role="skip", width=width)
        return add

    def with_memory(self, node: WithMemory, node_id, source, width, scope, path, copy, common) -> str:
        """The body, run only when the model is given the memory: the stream passes it unchanged otherwise."""
        self.add(node_id, **{**common, "composite": True}, in_width=width, out_width=width, needs=node.needs)
        if node.needs not in self.given:
            declared = ", ".join(self.given) or "none"
            self.errors.add(node.loc_of("needs"), f"{path}.with_memory.needs",
                            f"'{node.needs}' is not a memory the model is given (memories: {declared})",
                            f"declare it beside width and layers: memories: {{{node.needs}: WIDTH}}"
                            if node.needs not in self.stack_ends else "a stack's output is always there: "
                            "read it with attention: {cross: ...} directly")
        self.inside_memory.append(node.needs)
        try:
            end, out_width = self.sequence(node.body, node_id, node_id, source, width, scope,
                                           f"{path}.with_memory.body", copy)
        finally:
            self.inside_memory.pop()
        if out_width != width:
            self.errors.add(node.loc_of(), f"{path}.with_memory",
                            f"the body changes the width from {width} to {out_width}",
                            "without the memory the stream passes unchanged, so the body must keep the width")
        return end

    def parallel(self, node: Parallel, node_id, parent, source, width, scope, path, copy, common) -> str:
        self.add(node_id, **{**common, "composite": True}, in_width=width, out_width=width)
        total = self.add(f"{node_id}.sum", kind="sum", family="structure", parent=node_id, copy=copy, loc=node.loc_of(),
                         label="Σ", scales=node.scales, in_width=width, out_width=width, out_shape=("batch", "seq", width),
                         params=0, flops=0)
        branch_ids = []
        for b, branch in enumerate(node.branches):
            branch_id = self.add(f"{node_id}.{b}", kind="branch", composite=True, parent=node_id, copy=copy,
                                 loc=node.loc_of(), family="structure")
            branch_ids.append(branch_id)
            end, out_width = self.sequence(branch, branch_id, branch_id, source, width, scope,
                                           f"{path}.parallel.branches[{b}]", copy)
            if out_width != width:
                self.errors.add(node.loc_of(), f"{path}.parallel.branches[{b}]",
                                f"branch {b} changes the width from {width} to {out_width}",
                                "parallel branches are summed, so each must keep the width")
            self.g.add_edge(end, total, role="data", width=out_width)
        self.g.nodes[node_id]["children"] = branch_ids + [total]
        return total

    def repeat(self, node: Repeat, node_id, parent, source, width, scope, path, copy, common):
        self.add(node_id, **{**common, "composite": True}, in_width=width, times=node.times,
                 labels=node.labels, cycle=len(node.bodies()), shared=node.shared)
        layer_ids = []
        cycle, before_params = len(node.bodies()), self.params
        for i in range(node.times):  # bounded: build_graph counted the layers of every repeat first
            if i == cycle and node.times > cycle:  # one cycle built: refuse an over-budget stack before building it
                projected = before_params + (self.params - before_params) * node.times // cycle
                if projected > self.budget:
                    self.errors.add(node.loc_of("times"), f"{path}.repeat.times",
                                    f"{node.times:,} layers make the model at least {projected:,} parameters, over "
                                    f"the budget of {self.budget:,}", "check the sizes, or raise the budget with "
                                    "max_params= / --max-params / ARCHDSL_MAX_PARAMS")
                    break
            layer_id = self.add(f"{node_id}.{i}", kind="layer", composite=True, parent=node_id,
                                copy=copy + ((node_id, i, len(node.bodies())),), loc=node.loc_of(), family="structure")
            layer_ids.append(layer_id)
            bodies_path = f"{path}.repeat." + ("body" if node.body is not None else f"pattern[{i % len(node.bodies())}]")
            before = len(self.errors.errors)
            source, new_width = self.sequence(node.body_for(i), layer_id, layer_id, source, width, scope, bodies_path,
                                              copy + ((node_id, i, len(node.bodies())),))
            if new_width != width and len(self.errors.errors) == before:
                self.errors.add(node.loc_of(), f"{path}.repeat", f"one layer changes the width from {width} to {new_width}",
                                "a repeated layer must keep the width so it can feed the next copy")
            width = new_width
        self.g.nodes[node_id]["children"] = layer_ids
        self.g.nodes[node_id]["out_width"] = width
        if node.shared:
            self.share_copies(node_id, layer_ids, cycle)
        return source, width, scope

    def share_copies(self, node_id: str, layer_ids: list[str], cycle: int) -> None:
        """repeat: {shared: true}: every node of layer i >= cycle uses the parameters of its counterpart in layer
        i % cycle (``shares``), so it adds none of its own to the totals."""
        for i, layer_id in enumerate(layer_ids[cycle:], start=cycle):
            first = f"{node_id}.{i % cycle}"
            for n in [n for n in self.g.nodes if n.startswith(layer_id + ".")]:
                data = self.g.nodes[n]
                if "spec" in data and not data["composite"]:
                    data["shares"] = first + n[len(layer_id):]
                    self.params -= data.get("params") or 0
                    data["params"] = 0


def build_graph(spec: Spec, *, max_params: int | None = None, seq_len: int | None = None) -> nx.DiGraph:
    """The resolved block graph of a spec; raises SpecError on graph-level problems (widths, ties, budget)."""
    from .errors import SpecError  # noqa: F401  (raised by the collector)

    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ValueError(f"seq_len must be a positive integer (the context for attention FLOPs), got {seq_len!r}")
    budget = check_budget(max_params) if max_params is not None else default_max_params()
    _check_size(spec)
    seq_len = seq_len or _context_length(spec)
    b = _Builder(spec, seq_len, budget)
    b.add("model", kind="model", composite=True, parent=None, loc=None, family="structure", copy=())
    stacks = spec.model.stacks()
    graph_form = "" not in stacks
    for name in _stack_order(stacks, b):
        stack = stacks[name]
        input_id = INPUT_NODES[stack.input]
        if input_id not in b.g:
            shape = ("batch", "channels", "height", "width") if stack.input == "image" else ("batch", "seq")
            b.add(input_id, kind="input", parent="model", family="io", out_shape=shape, out_width=None,
                  copy=(), label=INPUT_LABELS[stack.input], params=0, flops=0, loc=None, input=stack.input)
        path = f"model.graph.{name}.layers" if graph_form else "model.layers"
        if graph_form:
            if name in RESERVED_NAMES:
                b.errors.add(_where(spec, f"model.graph.{name}"), f"model.graph.{name}", f"'{name}' is a reserved name",
                             "rename the stack")
            b.add(name, kind="stack", composite=True, parent="model", loc=None, family="structure", copy=(),
                  width=stack.width, input=stack.input)
            b.g.nodes["model"].setdefault("children", []).append(name)
        b.stack_id, b.stack_width = (name if graph_form else "model"), stack.width
        b.stack_input = stack.input
        b.given = dict(getattr(stack, "memories", {}) or {})
        b.memory_widths.update(b.given)
        scope = Scope(width=stack.width, seq_len=seq_len)
        end, width = b.sequence(stack.layers, name, b.stack_id, input_id, None, scope, path, ())
        b.stack_ends[name], b.memory_widths[name] = end, width or stack.width
    output_stack = spec.model.output if graph_form else ""
    end, width = b.stack_ends.get(output_stack, "input"), b.memory_widths.get(output_stack)
    if graph_form:
        readers = {b.g.nodes[v]["memory"] for u, v, d in b.g.edges(data=True) if d["role"] == "memory"}
        for name in stacks:
            if name != output_stack and name not in readers:
                b.errors.add(_where(spec, f"model.graph.{name}"), f"model.graph.{name}", f"stack '{name}' is neither "
                             "the output nor read by any "
                             "cross-attention", f"add attention: {{cross: {name}}} to another stack, or remove it")
    for kind, placed in b.placed.items():
        for extra in placed[1:]:
            b.errors.add(b.g.nodes[extra]["loc"], b.g.nodes[extra]["path"], f"a model has at most one {kind}",
                         "remove one of them")
        last = b.g.nodes[placed[0]]
        if "last" in last["spec"].placement and placed[0] != end:
            b.errors.add(last["loc"], last["path"], f"{_article(kind)} {kind} ends the model (it returns {last['spec'].output}), so "
                         "it must be the last node of the model's output", "move it to the end, after the final norm")
    returns = b.g.nodes[end]["spec"].output if end in b.g and "spec" in b.g.nodes[end] else None
    side_outputs = [n for n, d in b.g.nodes(data=True) if "spec" in d and d["spec"].side_output]
    b.add("output", kind="output", parent="model", family="io", copy=(), loc=None, params=0, flops=0,
          label={"logits": "logits", "classes": "class logits"}.get(returns or "", "hidden states"),
          out_shape=("batch", width) if returns == "classes" else ("batch", "seq", width), out_width=width)
    b.g.add_edge(end, "output", role="data", width=width)
    for node in side_outputs:
        b.g.add_edge(node, "output", role=b.g.nodes[node]["spec"].side_output, width=width)
    b.errors.raise_if_any()

    total = sum(d.get("params", 0) for _, d in b.g.nodes(data=True))
    if total > budget:
        biggest = max((n for n, d in b.g.nodes(data=True) if not d["composite"]), key=lambda n: b.g.nodes[n].get("params", 0))
        data = b.g.nodes[biggest]
        b.errors.add(data["loc"], data["path"], f"the model has {total:,} parameters, over the budget of {budget:,} "
                     f"(largest block: {biggest} with {data['params']:,})",
                     "check the sizes, or raise the budget with max_params= / --max-params / ARCHDSL_MAX_PARAMS")
        b.errors.raise_if_any()
    residual_branches = sum(1 for n, d in b.g.nodes(data=True)
                            if "spec" in d and d["spec"].residual_branch and _inside_residual(b.g, n))
    b.g.graph.update(spec=spec, total_params=total, embeddings=b.embedding_ids, stacks=b.stack_ends,
                     inputs=[d["input"] for _, d in b.g.nodes(data=True) if d["kind"] == "input"], seq_len=seq_len,
                     memories=dict(b.given),
                     output=returns or "hidden", limits=b.limits,
                     has_pooler=any(b.g.nodes[n]["spec"].side_output == "pooled" for n in side_outputs),
                     residual_branches=max(residual_branches, 1),
                     flops_per_token=sum(d.get("flops", 0) for _, d in b.g.nodes(data=True)))
    return b.g


def _where(spec: Spec, path: str) -> Loc | None:
    """Where a part of the model that is not a node (a stack of a graph model) is written: its line
    when the loader recorded it, else at least the spec's file."""
    loc = getattr(spec, "_locs", {}).get(path) or spec._locs.get(path.rsplit(".", 1)[0])
    return loc or (Loc(spec._source) if spec._source else None)


def _count(n: int) -> str:
    return f"{n:,}" if n <= 10**30 else f"about 10^{len(str(n)) - 1}"


def _footprint(nodes: list, path: str, depth: int = 0) -> tuple[int, int]:
    """(graph nodes, repeated layers) that ``nodes`` resolve to, counted from the spec without building
    anything: nested repeats multiply, so a repeat of 100,000 layers of a repeat of 100,000 layers is
    refused here, at the repeat, in microseconds. Raises SpecError at the innermost repeat that makes
    too many, or at a composite nested too deeply (a Spec built in Python skips the loader's check)."""
    total_nodes = total_layers = 0
    for i, node in enumerate(nodes):
        where = f"{path}[{i}].{node.kind}"
        if isinstance(node, (Residual, Parallel, Repeat, WithMemory)) and depth >= MAX_NESTING:
            raise SpecError([ErrorItem.at(node.loc_of(), f"{path}[{i}]", f"composite nodes (residual, parallel, repeat, with_memory) "
                                          f"nest more than {MAX_NESTING} deep here", "flatten the spec")])
        if isinstance(node, (Residual, WithMemory)):
            inner, layers = _footprint(node.body, f"{where}.body", depth + 1)
            total_nodes, total_layers = total_nodes + inner + 2, total_layers + layers  # + the junction
        elif isinstance(node, Parallel):
            for b, branch in enumerate(node.branches):
                inner, layers = _footprint(branch, f"{where}.branches[{b}]", depth + 1)
                total_nodes, total_layers = total_nodes + inner + 1, total_layers + layers
            total_nodes += 2
        elif isinstance(node, Repeat):
            bodies = node.bodies()
            sizes = [_footprint(body, f"{where}." + ("body" if node.body is not None else f"pattern[{k}]"), depth + 1)
                     for k, body in enumerate(bodies)]
            full, rest = divmod(node.times, len(bodies))
            inner = full * sum(n for n, _ in sizes) + sum(n for n, _ in sizes[:rest])
            layers = node.times + full * sum(m for _, m in sizes) + sum(m for _, m in sizes[:rest])
            nodes_here = 1 + node.times + inner
            nested = layers > node.times
            if layers > MAX_LAYERS:
                raise SpecError([ErrorItem.at(node.loc_of("times"), f"{where}.times", f"{_count(layers)} layers is more "
                                              f"than archdsl builds ({MAX_LAYERS:,} in a model"
                                              + ("; repeats inside repeats multiply)" if nested else ")"),
                                              "check the layer counts")])
            if nodes_here > MAX_GRAPH_NODES:
                raise SpecError([ErrorItem.at(node.loc_of("times"), f"{where}.times", f"{node.times:,} layers of "
                                              f"this repeat make {_count(nodes_here)} blocks, more than archdsl builds "
                                              f"({MAX_GRAPH_NODES:,} in a model)", "check the layer count")])
            total_nodes, total_layers = total_nodes + nodes_here, total_layers + layers
        else:
            total_nodes += 1
    return total_nodes, total_layers


def _check_size(spec: Spec) -> None:
    """Refuse a model too big to resolve before resolving any of it (see archdsl/limits.py)."""
    total_nodes = total_layers = 0
    for name, stack in spec.model.stacks().items():
        path = f"model.graph.{name}.layers" if name else "model.layers"
        n, layers = _footprint(stack.layers, path)
        total_nodes, total_layers = total_nodes + n, total_layers + layers
    if total_layers > MAX_LAYERS or total_nodes > MAX_GRAPH_NODES:
        what = (f"{_count(total_layers)} layers" if total_layers > MAX_LAYERS else f"{_count(total_nodes)} blocks")
        raise SpecError([ErrorItem.at(_where(spec, "model"), "model", f"the model has {what} in all, more than archdsl "
                                      f"builds ({MAX_LAYERS:,} layers, {MAX_GRAPH_NODES:,} blocks)",
                                      "check the layer counts")])


INPUT_NODES = {"tokens": "input", "decoder_tokens": "decoder_input", "image": "image_input"}
INPUT_LABELS = {"tokens": "token ids", "decoder_tokens": "decoder token ids", "image": "pixel values"}
INPUT_WORDS = {"tokens": "token ids", "image": "an image"}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _cross_references(nodes: list) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        if node.memory():
            found.add(node.memory())
        for child in ("body",):
            if isinstance(getattr(node, child, None), list):
                found |= _cross_references(getattr(node, child))
        for group in ("branches", "pattern"):
            for body in getattr(node, group, None) or []:
                found |= _cross_references(body)
    return found


def _stack_order(stacks: dict, b: "_Builder") -> list[str]:
    """Stacks ordered so that every stack comes after the stacks it cross-attends to."""
    deps = nx.DiGraph()
    deps.add_nodes_from(stacks)
    for name, stack in stacks.items():
        for memory in _cross_references(stack.layers):
            if memory in stacks:
                deps.add_edge(memory, name)
    try:
        return list(nx.lexicographical_topological_sort(deps, key=list(stacks).index))
    except nx.NetworkXUnfeasible:
        cycle = " -> ".join(u for u, _ in nx.find_cycle(deps))
        b.errors.add(_where(b.spec, "model.graph"), "model.graph", f"stacks cross-attend to each other in a cycle: {cycle}",
                     "an encoder must be computed before the decoder that reads it")
        b.errors.raise_if_any()
        return []


def _inside_residual(g: nx.DiGraph, node: str) -> bool:
    parent = g.nodes[node].get("parent")
    while parent:
        if g.nodes[parent]["kind"] == "residual":
            return True
        parent = g.nodes[parent].get("parent")
    return False


def _context_length(spec: Spec) -> int:
    """Sequence length used for attention FLOPs: the learned positions' max_len or the patch tokens of an
    image, else 2048."""
    nodes = [n for stack in spec.model.stacks().values() for n in _walk(stack.layers)]
    lengths = [n.context_length() for n in nodes if n.context_length()]
    return max(lengths, default=2048)


def _walk(nodes: list) -> Any:
    """Every node, nested ones included (a positional node inside a repeated layer: Gemma 3)."""
    for node in nodes:
        yield node
        if isinstance(node, (Residual, Repeat, WithMemory)):
            for body in (node.bodies() if isinstance(node, Repeat) else [node.body]):
                yield from _walk(body)
        elif isinstance(node, Parallel):
            for branch in node.branches:
                yield from _walk(branch)


def leaves(g: nx.DiGraph) -> list[str]:
    """Leaf block ids in execution order."""
    return sorted((n for n, d in g.nodes(data=True) if not d["composite"] and d["kind"] not in ("input", "output")),
                  key=lambda n: g.nodes[n]["order"])


def layer_numbering(g: nx.DiGraph, stack: str = "model") -> Callable[[str], int | None]:
    """node id -> the index of the repeated layer it sits in, counting the layers of every top-level
    repeat of `stack` in order (0, 1, ...), or None outside them. Checkpoint importers use this to pair
    archdsl's blocks with a checkpoint's numbered layers."""
    layers = [n for n in sorted(g.nodes, key=lambda n: g.nodes[n]["order"])
              if g.nodes[n]["kind"] == "layer" and g.nodes[g.nodes[n]["parent"]].get("parent") == stack]
    index = {layer: i for i, layer in enumerate(layers)}

    def layer_of(node: str) -> int | None:
        parent = g.nodes[node].get("parent")
        while parent is not None and parent not in index:
            parent = g.nodes[parent].get("parent")
        return index.get(parent) if parent is not None else None
    return layer_of


def in_first_cycle(data: dict) -> bool:
    """True for nodes of the collapsed view: the first copy of each repeat (one full pattern cycle)."""
    return all(i < cycle for _, i, cycle in data.get("copy", ()))


__all__ = ["build_graph", "leaves", "layer_numbering", "in_first_cycle", "Loc"]
