"""Negative controls: a check that passes on the right model must fail on a broken one.

A *check* is a callable ``check(model)`` that raises AssertionError when the model is not what the
test claims (its logits differ from transformers', its greedy tokens from the naive loop's, ...);
what it compares against is computed beforehand, from the oracle. ``assert_catches(model, check)``
runs the check on the model as given (it must pass), then on copies of the model with one
deliberate breakage each, and raises AssertionError naming every breakage the check did not notice:
such a check cannot see what it claims to prove, which is a bug in the test.

Breakages are written against the module tree (``named_modules``, parameters, buffers, forward
hooks) and never edit archdsl's source, so they survive refactors of its internals. Each one says
why it does not apply to a model (no biases to swap, no rotary positions, ...); breakages that act on
the inputs (dropping the padding mask) also record whether they ever acted during the check, and are
"not reached" when they did not (the check gives no padding). A test may exempt a breakage by name
with the reason (``exempt={"drop_attention_mask": "..."}``); exemptions are reported like the rest.

The full matrix over every family of the parity and generation tests, which also writes
docs/testing.md: ``python tests/controls.py --write``. tests/test_controls.py runs a subset.
"""
from __future__ import annotations

import copy
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

if __name__ == "__main__":  # this checkout's archdsl and tests, before any installed copy
    sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(os.path.abspath(__file__))]

import torch
from torch import nn

from archdsl.blocks.attention import Attention, CrossAttention, LatentAttention
from archdsl.blocks.embedding import LearnedPositional, RelativePositionBias, Rotary, SinusoidalPositional
from archdsl.blocks.linear_mixers import GatedDeltaNet, LightningAttention, RecurrentBlock, ShortConv
from archdsl.blocks.norm import LayerNorm, RMSNorm
from archdsl.blocks.sequence import Conv1d, _Recurrent
from archdsl.blocks.ssm import Mamba, Mamba2

Check = Callable[[nn.Module], None]
SELF_ATTENTION = (Attention, LatentAttention)
# token mixers other than attention: they carry a state (or a window) along the sequence, and read the padding mask
STATE_MIXERS = (Mamba, Mamba2, GatedDeltaNet, ShortConv, RecurrentBlock, LightningAttention, Conv1d, _Recurrent)
NORMS = (LayerNorm, RMSNorm)


class NotApplicable(Exception):
    """The breakage has nothing to act on in this model (the message says why)."""


@dataclass
class Applied:
    """What a breakage did to a model; `acted` is set by hooks that only act on some inputs."""

    detail: str
    acted: list[bool] = field(default_factory=lambda: [True])

    @property
    def reached(self) -> bool:
        return any(self.acted)


@dataclass(frozen=True)
class Breakage:
    name: str
    what: str  # one line for docs/testing.md
    apply: Callable[[nn.Module], Applied]


@dataclass
class Outcome:
    breakage: str
    status: str  # caught | survived | not applicable | not reached | exempt
    detail: str


# ------------------------------------------------------------------------------------ helpers
def _layer_of(name: str) -> str:
    """The layer a module or parameter belongs to: its path up to the first index ("layers.3"), or ""."""
    match = re.match(r"^(.*?\.\d+)(\.|$)", name)
    return match.group(1) if match else ""


def _same_role(name: str) -> str:
    """A parameter's or module's name with its layer index blanked: equal for the same role in two layers."""
    return re.sub(r"\.\d+(\.|$)", r".#\1", name, count=1)


def _pick_pair(items: list[tuple[str, Any]], key: Callable[[Any], Any], order: tuple[str, ...]
               ) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """Two items with equal key(item), found in the given order of preference: "one layer" (two
    items of one layer), "two layers" (one role in two layers), "anywhere"; NotApplicable if none."""
    tests = {"one layer": lambda a, b: _layer_of(a) != "" and _layer_of(a) == _layer_of(b),
             "two layers": lambda a, b: _layer_of(a) != _layer_of(b) and _same_role(a) == _same_role(b),
             "anywhere": lambda a, b: True}
    for preference in order:
        for i, (a_name, a) in enumerate(items):
            for b_name, b in items[i + 1:]:
                if key(a) == key(b) and tests[preference](a_name, b_name):
                    return (a_name, a), (b_name, b)
    raise NotApplicable


def _modules(model: nn.Module, types: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, types)]


def _changed_context(ctx: Any, **changes: Any) -> Any:
    """A shallow copy of a block's forward context with some fields replaced; the masks it has built
    are not shared (they were built from the original fields), everything else (rotary tables, the
    cache) is."""
    out = copy.copy(ctx)
    for name, value in changes.items():
        if not hasattr(out, name):
            raise AssertionError(f"the forward context has no {name!r} any more: update tests/controls.py")
        setattr(out, name, value)
    if hasattr(out, "_masks"):
        out._masks = {}
    return out


def _context_hook(modules: list[tuple[str, nn.Module]], change: Callable[[Any], dict | None]) -> list[bool]:
    """A forward pre-hook on each module that replaces its context (the second argument) by one with
    change(ctx)'s fields; returns the list that records whether any call was changed."""
    acted: list[bool] = []

    def hook(module: nn.Module, args: tuple) -> tuple | None:
        x, ctx, *rest = args
        changes = change(ctx)
        acted.append(bool(changes))
        return (x, _changed_context(ctx, **changes), *rest) if changes else None

    for _, m in modules:
        m.register_forward_pre_hook(hook)
    return acted


# ------------------------------------------------------------------------------------ breakages
def zero_attention(model: nn.Module) -> Applied:
    found = _modules(model, SELF_ATTENTION)
    if not found:
        raise NotApplicable("no self-attention")
    for _, m in found:
        m.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    return Applied(f"{len(found)} self-attention outputs are 0")


def zero_cross_attention(model: nn.Module) -> Applied:
    found = _modules(model, (CrossAttention,))
    if not found:
        raise NotApplicable("no cross-attention")
    for _, m in found:
        m.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    return Applied(f"{len(found)} cross-attention outputs are 0")


def drop_attention_mask(model: nn.Module) -> Applied:
    found = _modules(model, SELF_ATTENTION)
    if not found:
        raise NotApplicable("no self-attention")
    acted = _context_hook(found, lambda ctx: {"key_padding": None} if ctx.key_padding is not None else None)
    return Applied("self-attention attends to padding", acted)


def zero_state_mixer(model: nn.Module) -> Applied:
    found = _modules(model, STATE_MIXERS)
    if not found:
        raise NotApplicable("no state-carrying mixer (Mamba, DeltaNet, RG-LRU, short conv, lightning attention, conv, RNN)")
    for _, m in found:
        m.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    return Applied(f"{len(found)} state-mixer outputs are 0")


def drop_mixer_mask(model: nn.Module) -> Applied:
    found = _modules(model, STATE_MIXERS)
    if not found:
        raise NotApplicable("no state-carrying mixer")
    acted = _context_hook(found, lambda ctx: {"key_padding": None} if ctx.key_padding is not None else None)
    return Applied("state mixers carry padding into their state", acted)


def drop_memory_mask(model: nn.Module) -> Applied:
    found = _modules(model, (CrossAttention,))
    if not found:
        raise NotApplicable("no cross-attention")

    def change(ctx: Any) -> dict | None:
        if all(padding is None for _, padding in ctx.memory.values()):
            return None
        return {"memory": {name: (x, None) for name, (x, _) in ctx.memory.items()}}
    return Applied("cross-attention attends to source padding", _context_hook(found, change))


def swap_biases(model: nn.Module) -> Applied:
    in_norms = {id(p) for _, m in _modules(model, NORMS) for p in m.parameters()}
    biases = [(n, p) for n, p in model.named_parameters() if n.endswith("bias") and id(p) not in in_norms]
    try:  # one bias in two layers first: two biases of one layer may both feed one sum (a parallel block)
        (a_name, a), (b_name, b) = _pick_pair(biases, lambda p: p.shape, ("two layers", "one layer", "anywhere"))
    except NotApplicable:
        raise NotApplicable("no two biases of one shape (outside norms)") from None
    with torch.no_grad():
        saved = a.clone()
        a.copy_(b)
        b.copy_(saved)
    return Applied(f"{a_name} <-> {b_name}")


def swap_norms(model: nn.Module) -> Applied:
    inside_attention = {id(p) for _, m in _modules(model, SELF_ATTENTION + (CrossAttention,)) for p in m.parameters()}
    norms = [(n, m) for n, m in _modules(model, NORMS) if id(m.weight) not in inside_attention]
    try:
        (a_name, a), (b_name, b) = _pick_pair(
            norms, lambda m: (type(m), m.weight.shape, getattr(m, "bias", None) is not None),
            ("one layer", "two layers", "anywhere"))
    except NotApplicable:
        raise NotApplicable("no two norms of one shape (outside attention)") from None
    with torch.no_grad():
        for name, p in a.named_parameters(recurse=False):
            q = b.get_parameter(name)
            saved = p.clone()
            p.copy_(q)
            q.copy_(saved)
    return Applied(f"{a_name} <-> {b_name}")


def shift_positions(model: nn.Module) -> Applied:
    """The last token of every forward sits one position too far (a uniform shift would be invisible
    to rotary attention, which sees relative positions only): the newest token's off-by-one."""
    found = _modules(model, (Rotary, LearnedPositional, SinusoidalPositional))
    if not found:
        raise NotApplicable("no rotary, learned or sinusoidal positions")

    acted: list[bool] = []
    for _, m in found:
        limit = m.max_len if isinstance(m, LearnedPositional) else None

        def hook(module: nn.Module, args: tuple, limit: int | None = limit) -> tuple:
            x, ctx, *rest = args
            positions = ctx.positions.clone()
            last = positions[..., -1]
            shifted = last + 1 if limit is None else torch.where(last + 1 < limit, last + 1, last - 1)
            positions[..., -1] = shifted
            acted.append(True)
            return (x, _changed_context(ctx, positions=positions), *rest)
        m.register_forward_pre_hook(hook)
    return Applied(f"last position + 1 in {len(found)} positional node(s)", acted)


def round_buffers_bf16(model: nn.Module) -> Applied:
    """Derived buffers (not in the state_dict: rotary/sinusoidal frequencies, ALiBi slopes) rounded
    to bfloat16 and back: the bug of computing them in the weights' half precision."""
    persistent = set(model.state_dict())
    changed = []
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name in persistent or not b.is_floating_point():
                continue
            rounded = b.to(torch.bfloat16).to(b.dtype)
            if not torch.equal(rounded, b):
                b.copy_(rounded)
                changed.append(name)
    if not changed:
        raise NotApplicable("no derived buffer that bfloat16 rounds (ALiBi slopes of powers of 2 are exact)")
    return Applied(", ".join(changed))


def drop_positional(model: nn.Module) -> Applied:
    """Every positional node does nothing: learned and sinusoidal add nothing, rotary rotates by 0,
    ALiBi slopes and relative position biases are 0."""
    done = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (LearnedPositional, SinusoidalPositional)):
                m.register_forward_hook(lambda module, args, out: args[0])
            elif isinstance(m, Rotary):
                m.inv_freq.zero_()
            elif isinstance(m, RelativePositionBias):
                m.weight.zero_()
            elif isinstance(m, Attention) and m.alibi_slopes is not None:
                m.alibi_slopes.zero_()
            else:
                continue
            done.append(name)
    if not done:
        raise NotApplicable("no positional node")
    return Applied(f"{len(done)} node(s): {', '.join(done[:3])}{' ...' if len(done) > 3 else ''}")


BREAKAGES = [
    Breakage("zero_attention", "every self-attention output is 0", zero_attention),
    Breakage("zero_cross_attention", "every cross-attention output is 0", zero_cross_attention),
    Breakage("drop_attention_mask", "self-attention ignores the padding mask", drop_attention_mask),
    Breakage("zero_state_mixer", "every state-carrying mixer (Mamba, DeltaNet, RG-LRU, conv, RNN) outputs 0",
             zero_state_mixer),
    Breakage("drop_mixer_mask", "state-carrying mixers ignore the padding mask", drop_mixer_mask),
    Breakage("drop_memory_mask", "cross-attention ignores the source padding", drop_memory_mask),
    Breakage("swap_biases", "two biases of one shape swapped (one layer's if it has two)", swap_biases),
    Breakage("swap_norms", "two norms of one shape swapped (one layer's if it has two)", swap_norms),
    Breakage("shift_positions", "the last token of each forward one position too far", shift_positions),
    Breakage("round_buffers_bf16", "derived buffers (rotary frequencies, ALiBi slopes) rounded to bf16",
             round_buffers_bf16),
    Breakage("drop_positional", "every positional node does nothing", drop_positional),
]
BY_NAME = {b.name: b for b in BREAKAGES}
# what a greedy check of a left-padded batch must catch itself, not through a logits check: generation that
# depends on the context (attention, state mixers) and on the padding mask
MUST_CATCH = ("zero_attention", "zero_state_mixer", "drop_attention_mask", "drop_mixer_mask")


# ------------------------------------------------------------------------------------ weights
@torch.no_grad()
def context_weights(model: nn.Module, seed: int = 0, *, embedding_std: float = 0.01) -> nn.Module:
    """Weights under which what a model computes depends on every parameter and on the context.

    compile()'s initial weights (zero biases, unit norms, N(0, 0.02) matrices) let a swapped bias or
    norm pass unseen, and barely look at the context: 28 of 86 models generated the same greedy
    tokens with attention zeroed. Here every matrix is N(0, 1/fan_in), so attention and MLP keep the
    scale of their input; vectors (norms, biases) and checkpoint buffers move by N(0, 0.1); an
    embedding that an LM head shares is N(0, embedding_std), small, so that the tied head does not
    keep choosing the token it was given (and a norm right after the embedding, BLOOM's, which would
    undo that, gets a small scale instead: its weight and its bias, which is the same vector for
    every token; left at N(0, 0.1) beside a weight of 0.1 it made half of every token's input one
    constant, and BLOOM's nearly uniform ALiBi attention averaged the rest away: most contexts of a
    shrunk bloom-560m ended in one hidden state and one greedy token). Untied embeddings stay at the
    matrices' scale, so that tokens weigh as much as additive positions.
    """
    from archdsl.blocks.embedding import Embedding
    from archdsl.blocks.heads import LMHead

    g = torch.Generator().manual_seed(seed)
    heads = {id(m.weight) for m in model.modules() if isinstance(m, LMHead)}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, Embedding) and id(m.weight) in heads}
    children = list(model.children())
    after_embedding = {id(p) for a, b in zip(children, children[1:]) if isinstance(a, Embedding)
                       and id(a.weight) in tables and isinstance(b, NORMS) for p in b.parameters()}
    for p in model.parameters():
        if id(p) in tables:
            p.normal_(0.0, embedding_std, generator=g)
        elif p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
        else:
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        if id(p) in after_embedding:
            p.mul_(0.1)
    persistent = set(model.state_dict())
    for name, b in model.named_buffers():
        if name in persistent and b.is_floating_point():
            b.add_(torch.randn(b.shape, generator=g) * 0.1)
    return model


# ------------------------------------------------------------------------------------ the controls
@dataclass
class Case:
    """One check of a test, ready for the controls: make() -> (the archdsl model, its check).

    The test runs the same make() and check, so what the controls prove of the check is true of the
    test. `test` is the test function (its docstring says what it proves), `tolerance` how close
    "equal" is, `exempt` the breakages this check does not claim to see, with the reason.
    """

    test: Callable
    id: str
    make: Callable[[], tuple[nn.Module, Check]]
    tolerance: str
    exempt: dict[str, str] = field(default_factory=dict)
    # A check of discrete results (greedy tokens) sees a small breakage only where it moves an argmax.
    # Such a case names the logits check of the same model and path (`covered_by`): a breakage it
    # survives is "covered" where that check catches it, and still "survived" where it does not, or
    # where the breakage is one this check must see itself (`must_catch`: zeroed attention must change
    # what a model generates, so that generation depends on the context).
    covered_by: "Case | None" = None
    must_catch: tuple[str, ...] = ()
    _outcomes: list | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.test.__module__}.py::{self.test.__name__}[{self.id}]"

    def run(self) -> list[Outcome]:
        if self._outcomes is None:
            model, check = self.make()
            outcomes = run_controls(model, check, exempt=self.exempt)
            if self.covered_by is not None and any(o.status == "survived" and o.breakage not in self.must_catch
                                                   for o in outcomes):
                caught = {o.breakage for o in self.covered_by.run() if o.status == "caught"}
                outcomes = [Outcome(o.breakage, "covered", f"caught by {self.covered_by.name}")
                            if o.status == "survived" and o.breakage in caught and o.breakage not in self.must_catch
                            else o for o in outcomes]
            self._outcomes = outcomes
        return self._outcomes


def pair_cases(tests: dict[Callable, str], params: Iterable[str], imported: Callable[[str], tuple],
               exempt: dict[tuple[Callable, str], dict[str, str]] | None = None,
               covered_by: dict[Callable, Callable] | None = None, must_catch: tuple[str, ...] = ()) -> Iterable[Case]:
    """Cases of tests written against a fixture (param, reference, archdsl model): the check is the
    test body itself, called with (param, reference, the broken copy), so the controls run exactly
    what the test runs. `tests` maps each test to its tolerance, `exempt` (test, param) to exemptions,
    `covered_by` a greedy test to the logits test of the same model (listed before it); `must_catch`
    as in Case, for those greedy tests."""
    made: dict[tuple[Callable, str], Case] = {}
    for test, tolerance in tests.items():
        for param in params:
            def make(test=test, param=param):
                name, reference, model = imported(param)
                return model, lambda m: test((name, reference, m))
            cover = (covered_by or {}).get(test)
            case = Case(test, param, make, tolerance, dict((exempt or {}).get((test, param), {})),
                        covered_by=None if cover is None else made[(cover, param)],
                        must_catch=must_catch if cover is not None else ())
            made[(test, param)] = case
            yield case


def run_controls(model: nn.Module, check: Check, *, breakages: Iterable[Breakage] = BREAKAGES,
                 exempt: dict[str, str] | None = None) -> list[Outcome]:
    """The check on the model as given (it must pass), then on a broken copy per breakage."""
    exempt = dict(exempt or {})
    unknown = set(exempt) - set(BY_NAME)
    assert not unknown, f"exempt names unknown breakages {sorted(unknown)}"
    check(model)  # the unbroken model must pass, or the controls mean nothing
    out = []
    for breakage in breakages:
        if breakage.name in exempt:
            out.append(Outcome(breakage.name, "exempt", exempt[breakage.name]))
            continue
        broken = copy.deepcopy(model)
        try:
            applied = breakage.apply(broken)
        except NotApplicable as why:
            out.append(Outcome(breakage.name, "not applicable", str(why)))
            continue
        try:
            check(broken)
        except Exception as failure:  # noqa: BLE001 - an error is a failing test too
            kind = "" if isinstance(failure, AssertionError) else f" ({type(failure).__name__})"
            out.append(Outcome(breakage.name, "caught", applied.detail + kind))
            continue
        if not applied.reached:
            out.append(Outcome(breakage.name, "not reached", "the check's inputs never gave it anything to act on"))
        else:
            out.append(Outcome(breakage.name, "survived", applied.detail))
    return out


def assert_catches(model: nn.Module, check: Check, *, breakages: Iterable[Breakage] = BREAKAGES,
                   exempt: dict[str, str] | None = None, expect: Iterable[str] = ()) -> list[Outcome]:
    """run_controls, and AssertionError if a breakage survived or one named in `expect` was not caught."""
    outcomes = run_controls(model, check, breakages=breakages, exempt=exempt)
    survived = [o for o in outcomes if o.status == "survived"]
    missing = [o for o in outcomes if o.breakage in set(expect) and o.status != "caught"]
    if survived or missing:
        lines = [f"  {o.breakage}: {o.status} ({o.detail})" for o in survived + missing]
        raise AssertionError("the check does not notice these breakages of the model:\n" + "\n".join(lines))
    return outcomes


# ------------------------------------------------------------------------------------ the matrix
MODULES = ["test_hf_parity", "test_families", "test_encoder_decoder", "test_bert_parity", "test_vision", "test_numerics",
           "test_generate", "test_hf_ssm", "test_hf_linear", "test_ssm", "test_linear_mixers", "test_hf_encoder"]
DOC = "docs/testing.md"
STATUSES = ("caught", "covered", "not applicable", "not reached", "exempt", "survived")


def all_cases(modules: Iterable[str] = MODULES) -> list[Case]:
    """Every test module's control_cases(), in order (building nothing yet)."""
    import importlib

    return [case for name in modules for case in importlib.import_module(name).control_cases()]


def run_matrix(cases: list[Case], *, log: Callable[[str], None] = print) -> list[tuple[Case, list[Outcome]]]:
    results = []
    for case in cases:
        outcomes = case.run()
        results.append((case, outcomes))
        survived = [o.breakage for o in outcomes if o.status == "survived"]
        log(f"{case.name}: " + (f"SURVIVED {', '.join(survived)}" if survived else "ok"))
    return results


def _by_test(items):
    """(case, ...) items grouped by the case's test, in order."""
    tests: dict[Callable, list] = {}
    for item in items:
        tests.setdefault(item[0].test, []).append(item)
    return tests


# the matrix's column for each breakage, in the order of BREAKAGES
LABELS = {"zero_attention": "attn", "zero_cross_attention": "xattn", "drop_attention_mask": "mask",
          "zero_state_mixer": "mixer", "drop_mixer_mask": "mixmask", "drop_memory_mask": "srcmask",
          "swap_biases": "bias", "swap_norms": "norm", "shift_positions": "shift", "round_buffers_bf16": "bf16",
          "drop_positional": "pos"}


def _test_name(test: Callable) -> str:
    return f"{test.__module__}.py::{test.__name__}"


def tests_table(cases: list[Case]) -> list[str]:
    """The table of what each test proves, its cases and tolerances: built from the cases alone (no
    controls run), so that tests/test_controls.py can tell whether docs/testing.md is stale."""
    lines = ["| test | what it proves | cases | tolerance |", "|---|---|---|---|"]
    for test, rows in _by_test([(c,) for c in cases]).items():
        tolerances: dict[str, int] = {}
        for (case,) in rows:
            tolerances[case.tolerance] = tolerances.get(case.tolerance, 0) + 1
        tolerance = "; ".join(t if len(tolerances) == 1 else f"{t} ({n})" for t, n in tolerances.items())
        lines.append(f"| `{_test_name(test)}` | {' '.join((test.__doc__ or '').split())} | {len(rows)} | {tolerance} |")
    return lines


def _cell(counts: dict[str, int]) -> str:
    parts = [str(counts["caught"])] if counts["caught"] else []
    parts += [f"{counts[s]} {short}" for s, short in (("covered", "cov"), ("exempt", "ex"), ("not reached", "nr"))
              if counts[s]]
    parts += [f"**{counts['survived']} SURVIVED**"] if counts["survived"] else []
    return ", ".join(parts) or "·"


def render_doc(results: list[tuple[Case, list[Outcome]]], command: str) -> str:
    """docs/testing.md: what each test proves and its tolerance, and per test how many of its cases
    catch each breakage; exemptions with their reasons and the covered cases collapsed below."""
    totals = {s: sum(1 for _, outs in results for o in outs if o.status == s) for s in STATUSES}
    lines = [
        "# Testing: what the parity and generation tests prove",
        "",
        f"Generated by `{command}` from the negative controls of `tests/controls.py`; do not edit by hand.",
        "",
        "Each parity or generation check compares archdsl with an oracle (transformers' model on the same weights, a",
        "hand-written forward, or, for the KV cache, archdsl's full forward or naive loop on the unbroken model), and",
        "is run again on copies of the archdsl model with one deliberate breakage each: it must fail on every one",
        "that applies. *n/a*: the model has nothing for the breakage to act on; *nr* (not reached): the check's inputs",
        "never gave it anything to do (no padding); *ex* (exempt): the test says why it does not claim to see it;",
        "*cov* (covered): a greedy-token check missed a breakage too small to move an argmax, and the logits check of",
        "the same model catches it (zeroed attention or state mixers a greedy check must catch itself, and so must",
        "the greedy checks of test_hf_ssm.py and test_hf_linear.py a dropped padding mask).",
        "`tests/test_controls.py` runs a subset on every test run; the command above runs them all.",
        "`tests/test_hf_verify.py` compares parameter roles and counts on the meta device, no values: it has no",
        "check for a breakage to fail.",
        "",
        (f"**This run: {len(results)} cases × {len(BREAKAGES)} breakages: {totals['caught']} caught, "
         f"{totals['covered']} covered, {totals['not applicable']} n/a, {totals['not reached']} not reached, "
         f"{totals['exempt']} exempt, {totals['survived']} survived.**"),
        "",
        "## Breakages",
        "",
        "| column | breakage | what it does |",
        "|---|---|---|",
    ]
    lines += [f"| {LABELS[b.name]} | `{b.name}` | {b.what} |" for b in BREAKAGES]
    lines += ["", "## Tests", ""] + tests_table([c for c, _ in results])
    lines += ["", "## Cases that catch each breakage", "",
              "Per test: in how many cases the breakage is caught (and covered, exempt, not reached); `·`: applies to",
              "none of its cases.", "",
              "| test | " + " | ".join(LABELS[b.name] for b in BREAKAGES) + " |", "|---|" + "---|" * len(BREAKAGES)]
    exempt: dict[str, dict[str, list[str]]] = {}
    covered: dict[str, list[str]] = {}
    tests = _by_test(results)
    for test, rows in tests.items():
        cells = []
        for b in BREAKAGES:
            counts = {s: 0 for s in STATUSES}
            for case, outcomes in rows:
                o = next(o for o in outcomes if o.breakage == b.name)
                counts[o.status] += 1
                if o.status == "exempt":
                    exempt.setdefault(f"`{b.name}`: {o.detail}", {}).setdefault(_test_name(test), []).append(case.id)
                elif o.status == "covered":
                    covered.setdefault(f"`{_test_name(test)}` `{b.name}`", []).append(case.id)
            cells.append(_cell(counts))
        lines.append(f"| `{_test_name(test)}` | " + " | ".join(cells) + " |")
    lines += ["", "## Exemptions", ""]
    counts = {_test_name(test): len(rows) for test, rows in tests.items()}
    for reason, where in exempt.items():
        lines.append(f"- {reason}: " + "; ".join(
            f"`{t}` ({f'all {len(ids)} cases' if len(ids) == counts[t] else ', '.join(ids)})" for t, ids in where.items()))
    lines += ["", "<details><summary>Covered cases (greedy checks whose logits check catches the breakage)</summary>",
              ""]
    lines += [f"- {key}: {', '.join(ids)}" for key, ids in covered.items()]
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time
    import warnings
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Run the negative controls of every parity and generation test.")
    parser.add_argument("--write", action="store_true", help=f"write {DOC} from the results")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--module", action="append", choices=MODULES, help="only these test modules")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    cases = [c for c in all_cases(args.module or MODULES) if args.k in c.name]
    results = run_matrix(cases)
    runs = sum(1 for _, outs in results for o in outs if o.status in ("caught", "survived"))
    survived = [(c.name, o.breakage) for c, outs in results for o in outs if o.status == "survived"]
    print(f"{len(results)} cases, {runs} broken models checked, {len(survived)} survived "
          f"({time.perf_counter() - start:.0f} s)")
    if args.write:
        if args.k or args.module:
            parser.error("--write needs the whole matrix (no -k, no --module)")
        (root / DOC).write_text(render_doc(results, "python tests/controls.py --write"), encoding="utf-8")
        print(f"wrote {DOC}")
    return 1 if survived else 0


if __name__ == "__main__":  # run as the module the tests import (one Case class, one list of breakages)
    import controls

    raise SystemExit(controls.main())
