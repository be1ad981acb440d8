"""The summary table: per-block parameters, output shapes and FLOPs, from the IR alone.

No weights are allocated, so a 70B spec is summarised as fast as a tiny one. Repeated layers
are shown once with their multiplicity; totals are exact sums over every copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .ir import in_first_cycle, leaves


@dataclass
class Row:
    block: str  # IR node id (= module path of the first copy)
    kind: str
    args: str
    out_shape: tuple
    params: int  # per copy
    flops: int  # per token, per copy
    copies: int  # how many times this block occurs
    depth: int


@dataclass
class Summary:
    name: str
    rows: list[Row] = field(default_factory=list)
    total_params: int = 0
    flops_per_token: int = 0
    seq_len: int = 0
    kv_cache_bytes_per_token: int = 0  # decode state that grows with the context, at 2 bytes per value (bf16)
    state_bytes: int = 0  # decode state that does not (convolution, recurrent state), bf16, per sequence
    # node kind -> [layers, bytes per token, fixed bytes] (bf16, summed over every copy), for decode_table
    state_by_kind: dict[str, list[int]] = field(default_factory=dict)
    context: int | None = None  # a context at which __str__ adds the decode-state table (--context)

    def decode_state_bytes(self, context: int) -> int:
        """Memory one sequence's decode state takes at `context` positions (bf16)."""
        return self.kv_cache_bytes_per_token * context + self.state_bytes

    def decode_table(self, context: int) -> str:
        """Decode-state memory of one sequence at `context` positions, per node kind and in total (bf16):
        attention's keys and values grow with the context, a state-space or recurrent state does not."""
        header = ("decode state", "layers", "per token", "fixed", f"at context {context:,}")
        rows = [header]
        for kind, (layers, per_token, fixed) in self.state_by_kind.items():
            rows.append((kind, str(layers), _bytes(per_token), _bytes(fixed), _bytes(per_token * context + fixed)))
        total = [sum(v[i] for v in self.state_by_kind.values()) for i in range(3)]
        rows.append(("total", str(total[0]), _bytes(total[1]), _bytes(total[2]), _bytes(self.decode_state_bytes(context))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = []
        for i, row in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("  ".join("-" * w for w in widths))
            lines.append("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                                   for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
        return "\n".join(lines + ["(bf16, one sequence; multiply by the batch)"])

    def param_bytes(self, bytes_per_param: int = 4) -> int:
        return self.total_params * bytes_per_param

    def __str__(self) -> str:
        header = ("block", "kind", "args", "output", "params", "×", "FLOPs/token")
        table = [header]
        for r in self.rows:
            shape = "(" + ", ".join(str(s) for s in r.out_shape) + ")" if r.out_shape else ""
            table.append(("  " * r.depth + r.block, r.kind, r.args, shape, f"{r.params:,}" if r.params else "",
                          str(r.copies) if r.copies > 1 else "", _si(r.flops) if r.flops else ""))
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = [f"{self.name}"]
        for i, row in enumerate(table):
            lines.append("  ".join(cell.ljust(w) if c < 4 else cell.rjust(w)
                                   for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [
            "",
            f"total parameters      {self.total_params:,}",
            f"weights               {_bytes(self.param_bytes(4))} fp32, {_bytes(self.param_bytes(2))} bf16",
            f"forward FLOPs/token   {_si(self.flops_per_token)} (attention at context {self.seq_len})",
            f"KV cache per token    {_bytes(self.kv_cache_bytes_per_token)} (bf16)",
        ]
        if self.state_bytes:
            lines.append(f"fixed decode state    {_bytes(self.state_bytes)} per sequence (bf16)")
        if self.kv_cache_bytes_per_token or self.state_bytes:
            lines.append(f"decode state          {_bytes(self.decode_state_bytes(self.seq_len))} per sequence at "
                         f"context {self.seq_len} (bf16)")
        if self.context is not None:
            lines += ["", self.decode_table(self.context) if self.state_by_kind else
                      f"no decode state: '{self.name}' keeps nothing per sequence while decoding"]
        return "\n".join(lines)


def _si(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _copies(g: nx.DiGraph, data: dict) -> int:
    """Number of instances of a block: product over enclosing repeats of times / pattern length."""
    n = 1
    for repeat_id, _, cycle in data.get("copy", ()):
        times = g.nodes[repeat_id]["times"]
        n *= times // cycle + (1 if (data_index(data, repeat_id) < times % cycle) else 0)
    return n


def data_index(data: dict, repeat_id: str) -> int:
    for rid, i, _ in data.get("copy", ()):
        if rid == repeat_id:
            return i
    return 0


def summarize(g: nx.DiGraph) -> Summary:
    out = Summary(name=g.graph["spec"].name, total_params=g.graph["total_params"],
                  flops_per_token=g.graph["flops_per_token"], seq_len=g.graph["seq_len"])
    for node, data in g.nodes(data=True):  # every copy of every layer is a node of the graph
        state = data.get("decode_state")
        if state is not None:
            out.kv_cache_bytes_per_token += state.per_token * 2
            out.state_bytes += state.fixed * 2
            entry = out.state_by_kind.setdefault(data["kind"], [0, 0, 0])
            entry[0] += 1
            entry[1] += state.per_token * 2
            entry[2] += state.fixed * 2
    shown = [n for n in leaves(g) if in_first_cycle(g.nodes[n]) and g.nodes[n]["kind"] not in ("add", "sum")]
    seen_repeats: set[str] = set()
    for node in shown:
        data = g.nodes[node]
        for repeat_id, _, _ in data.get("copy", ()):
            if repeat_id not in seen_repeats:
                seen_repeats.add(repeat_id)
                r = g.nodes[repeat_id]
                out.rows.append(Row(repeat_id, "repeat", f"× {r['times']}" + (", shared weights" if r.get("shared") else ""), (), 0, 0, 1,
                                    depth=len(r.get("copy", ()))))
        out.rows.append(Row(node, data["kind"], data["label"], data.get("out_shape") or (), data["params"],
                            data["flops"], _copies(g, data), depth=len(data.get("copy", ()))))
    return out
