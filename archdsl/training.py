"""`archdsl train`: next-token training of one or more specs on local text, and the comparison plot.

    import archdsl
    result = archdsl.train(["specs/gpt2.yaml", "specs/llama-small.yaml"], data="docs/",
                           overrides={"layers": 2, "d_model": 64, "vocab": 256}, steps=200, out="runs/cmp")
    print(result.runs[0].val_loss, result.plot)

Each spec is compiled with the same seed and trained on identical batches in the same order
(archdsl.data: batches are a function of the seed and the step), so their curves differ by
architecture alone. Per spec, ``OUT/<name>/`` holds ``metrics.jsonl`` (one JSON object per
step, with ``val_loss``/``val_ppl`` at evaluations), ``checkpoint-<step>/`` every
``checkpoint_every`` steps and the final ``model.safetensors``; ``OUT/loss.png`` has every
spec's curve.

Optimisation: AdamW (weight decay on matrices only), linear warm-up then cosine decay to
``min_lr``, gradient clipping by global norm, optional bf16 autocast and per-layer activation
checkpointing (torch.utils.checkpoint around each repeated layer).

Objectives: a decoder (one stack ending in logits) predicts every next token; an encoder-decoder
graph reads the first half of each window with its encoder and predicts the second half with
its decoder (next-span prediction, teacher-forced), so both train on the same text.

Checkpoints are data (no pickle): the model as archdsl.checkpoint writes it, and
``state.safetensors`` with the optimizer's tensors, the RNG state, and the step, schedule and
optimizer settings as JSON in its metadata. ``resume=True`` continues the latest checkpoint bit for
bit: six steps straight give the same parameters as three, a stop, and three more.

Under torchrun (``fsdp=True`` and/or ``tp=K``) the model is parallelised by archdsl.parallel and
checkpoints are torch.distributed.checkpoint folders instead (archdsl.parallel).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .atomic import write_text
from .data import DataError, load_corpus, tokenizer as make_tokenizer, train_batch, val_windows

STATE_FORMAT = "archdsl.train_state"
STATE_VERSION = 1


class TrainError(ValueError):
    """A training request that cannot run (not a language model, sizes that do not fit, bad settings)."""


@dataclass
class TrainConfig:
    """Every setting of a run; saved with each checkpoint, so a resumed run is checked against it."""

    steps: int = 200
    batch: int = 8  # windows per step (all data-parallel ranks together)
    seq_len: int = 128  # tokens per window (the model reads seq_len, predicts seq_len)
    lr: float = 3e-3
    min_lr: float | None = None  # the end of the cosine (default lr / 10)
    warmup: int | None = None  # warm-up steps (default: a tenth of the steps, at most 100)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    eval_every: int = 50  # validation every N steps (and always at the last step)
    eval_windows: int = 32  # held-out windows per validation
    checkpoint_every: int = 0  # a checkpoint every N steps (0: none but the final model)
    seed: int = 0  # weight initialisation, batches and dropout
    val_fraction: float = 0.1
    bf16: bool = False  # bfloat16 autocast of the forward and backward
    activation_checkpointing: bool = False  # recompute each repeated layer in the backward
    device: str = "cpu"
    tokenizer: str | None = None  # a tokenizer.json; None: UTF-8 bytes

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "seq_len", "eval_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainError(f"{name} must be a positive integer, got {value!r}")
        for name in ("eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TrainError(f"{name} must be a non-negative integer, got {value!r}")
        if self.warmup is not None and (not isinstance(self.warmup, int) or self.warmup < 0):
            raise TrainError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (
                    name == "lr" and value == 0):
                raise TrainError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
        if self.min_lr is not None and not (0 <= self.min_lr <= self.lr):
            raise TrainError(f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise TrainError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else min(100, self.steps // 10)

    @property
    def final_lr(self) -> float:
        return self.min_lr if self.min_lr is not None else self.lr / 10

    def lr_factor(self, step: int) -> float:
        """Multiplier of lr at `step` (0-based): linear warm-up to 1, then cosine to final_lr / lr."""
        warm = self.warmup_steps
        if step < warm:
            return (step + 1) / (warm + 1)
        span = max(1, self.steps - warm)
        progress = min(1.0, (step - warm) / span)
        floor = self.final_lr / self.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class RunResult:
    """One spec's run."""

    name: str
    spec: str  # where the spec came from
    params: int
    steps: int
    directory: Path
    val_loss: float | None
    val_ppl: float | None
    train_loss: float | None
    tokens_per_s: float | None
    metrics: list[dict] = field(repr=False, default_factory=list)

    @property
    def model_path(self) -> Path:
        return self.directory / "model.safetensors"


@dataclass
class TrainResult:
    runs: list[RunResult]
    plot: Path | None  # OUT/loss.png, or None without matplotlib
    unigram_entropy: float  # nats per token of the training text's unigram distribution
    tokens: int  # tokens in the data (train + validation)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- objectives
class Objective:
    """How a model reads a batch of windows (B, seq_len + 1) and the loss it is trained on."""

    name = "next-token"

    def __init__(self, model: Any, seq_len: int):
        self.seq_len = seq_len

    def lengths(self) -> dict[str, int]:
        """Tokens each input carries (for the learned-position check)."""
        return {"tokens": self.seq_len}

    def targets(self) -> int:
        return self.seq_len  # predicted tokens per window

    def loss(self, model: Any, windows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = model(windows[:, :-1])
        return F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten(), reduction=reduction)


class NextSpan(Objective):
    """Encoder-decoder: the encoder reads the first half of the window, the decoder predicts the rest
    from the token before it on (teacher forcing). No special tokens are needed."""

    name = "next-span"

    def __init__(self, model: Any, seq_len: int):
        if seq_len < 2:
            raise TrainError("an encoder-decoder needs --seq-len of at least 2 (a source and a target half)")
        super().__init__(model, seq_len)
        self.split = seq_len // 2

    def lengths(self) -> dict[str, int]:
        return {"tokens": self.split, "decoder_tokens": self.seq_len - self.split}

    def targets(self) -> int:
        return self.seq_len - self.split

    def loss(self, model: Any, windows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        m = self.split
        logits = model(windows[:, :m], decoder_tokens=windows[:, m:-1])
        return F.cross_entropy(logits.float().flatten(0, 1), windows[:, m + 1:].flatten(), reduction=reduction)


def objective_for(model: Any, seq_len: int) -> Objective:
    """The objective a compiled model can train on, or a TrainError saying why it cannot."""
    name = model.spec.name
    inputs = model.graph.graph["inputs"]
    if not model.returns_logits or "image" in inputs:
        what = "images" if "image" in inputs else "tokens"
        returns = {None: "hidden states", "hidden": "hidden states"}.get(model.graph.graph["output"],
                                                                        model.graph.graph["output"])
        raise TrainError(f"'{name}' is not a language model: it reads {what} and returns {returns}, not logits "
                         "over a vocabulary "
                         "(train needs a spec ending in an lm_head)")
    objective = NextSpan(model, seq_len) if model.stack_inputs is not None else Objective(model, seq_len)
    for module_name, module in model.named_modules():  # next-token training of a layer that sees the future
        if module in model._stateful and getattr(module, "decodes", True) is False:  # would read the answer
            raise TrainError(f"'{name}': layer {module_name} is not causal (it sees later tokens), so next-token "
                             "training would let it read the tokens it predicts; make it causal "
                             "(attention: {causal: true})")
    limits = model.graph.graph["limits"]
    for stack, lim in limits.items():
        positions = lim.get("positions")
        kind = "tokens" if model.stack_inputs is None else model.stack_inputs.get(stack, "tokens")
        need = objective.lengths().get(kind, seq_len)
        if positions is not None and need > positions:
            where = f"stack '{stack}' of " if model.stack_inputs is not None else ""
            raise TrainError(f"--seq-len {seq_len} gives {need} tokens per window to {where}'{name}', more than its "
                             f"{positions} learned positions (hint: --seq-len {positions if model.stack_inputs is None else 2 * positions}, "
                             "or more positions with --set)")
    return objective


def check_vocab(model: Any, tok: Any) -> None:
    vocab = model.vocab
    if vocab is not None and vocab < tok.vocab_size:
        what = ("the byte tokenizer's 256 values" if tok.name == "bytes" else
                f"the {tok.vocab_size:,} tokens of {tok.name}")
        raise TrainError(f"'{model.spec.name}' has a vocabulary of {vocab:,}, smaller than {what} (hint: --set "
                         f"vocab={tok.vocab_size}, or whatever var sets its embedding's vocab)")


# ---------------------------------------------------------------------------------------------- layers
def repeated_layers(model: Any) -> list[str]:
    """Module paths of the layers of every repeat (each body instance), outermost ones only, in order:
    the units of activation checkpointing and of FSDP."""
    g = model.graph
    layers = [n for n, d in g.nodes(data=True) if d["kind"] == "layer"]
    chosen = set(layers)

    def inside_another(node: str) -> bool:
        parent = g.nodes[node].get("parent")
        while parent is not None:
            if parent in chosen:
                return True
            parent = g.nodes[parent].get("parent")
        return False
    return sorted((n for n in layers if not inside_another(n)), key=lambda n: g.nodes[n]["order"])


def checkpoint_activations(model: Any) -> int:
    """Recompute each repeated layer's forward in the backward instead of keeping its activations
    (torch.utils.checkpoint, non-reentrant; the RNG is replayed so dropout masks are the same).
    Returns how many layers were wrapped. The module tree and state_dict keys do not change."""
    from torch.utils.checkpoint import checkpoint

    def run(forward: Callable, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return forward(x, ctx)
        # the layer sees the masks built before it and builds its own in a private copy, so that the
        # recomputation does exactly the work of the first run (not less, finding them cached)
        masks = dict(ctx._masks)
        return checkpoint(lambda x: forward(x, replace(ctx, _masks=dict(masks))), x, use_reentrant=False)

    names = repeated_layers(model)
    for name in names:
        module = model.get_submodule(name)
        module.forward = partial(run, module.forward)  # an instance attribute: hooks (FSDP) stay around it
    return len(names)


# ---------------------------------------------------------------------------------------------- optimizer
def make_optimizer(model: Any, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices (dim >= 2: projections, embeddings) decay, vectors (norms, biases) do not."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(config.beta1, config.beta2),
                             eps=1e-8)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)


def clip_gradients(parameters: Sequence[torch.Tensor], max_norm: float) -> float:
    """Clip the global gradient norm; returns the norm before clipping. With DTensor gradients (FSDP,
    tensor parallel), each gradient's norm is reduced over its own mesh, so shards of one tensor and
    replicated copies each count once."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    from torch.distributed.tensor import DTensor

    if not any(isinstance(g, DTensor) for g in grads):  # one process: torch's own (max_norm inf: measure only)
        return float(torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None],
                                                    max_norm if max_norm > 0 else math.inf))
    import torch.distributed as dist

    # squared sums of the local shards, grouped by (mesh, mesh dims the tensor is sharded over), then one
    # all-reduce per group over exactly those dims: a replicated copy is counted once, a shard once each
    groups: dict[tuple, torch.Tensor] = {}
    for g in grads:
        if isinstance(g, DTensor):
            key = (g.device_mesh, tuple(i for i, p in enumerate(g.placements) if not p.is_replicate()))
            local = g.to_local()
        else:
            key, local = (None, ()), g
        square = local.detach().float().pow(2).sum()
        groups[key] = groups[key] + square if key in groups else square
    total_sq = torch.zeros((), dtype=torch.float32)
    for (mesh, dims), square in groups.items():
        for i in dims:
            dist.all_reduce(square, group=mesh.get_group(i))
        total_sq = total_sq + square.cpu()
    total = total_sq.sqrt()
    if max_norm > 0:
        coef = float(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        for g in grads:
            g.mul_(coef)
    return float(total)


# ---------------------------------------------------------------------------------------------- checkpoints
def _param_names(model: Any) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def save_train_state(path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
                     config: TrainConfig, extra: Mapping[str, Any] | None = None) -> None:
    """The optimizer's tensors (by parameter name), the RNG state, and step / schedule / optimizer
    settings / config as JSON metadata, in one safetensors file, atomically."""
    from safetensors.torch import save_file

    from .atomic import replacing

    names = _param_names(model)
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    for group in optimizer.param_groups:
        groups.append({**{k: v for k, v in group.items() if k != "params"},
                       "params": [names[id(p)] for p in group["params"]]})
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{names[id(p)]}/{key}"] = value.detach().contiguous().clone()
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    metadata = {"format": STATE_FORMAT, "format_version": str(STATE_VERSION), "step": str(step),
                "param_groups": json.dumps(groups), "scheduler": json.dumps(scheduler.state_dict()),
                "config": json.dumps(asdict(config)), "spec": model.spec.to_yaml()}
    metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_train_state(path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore what save_train_state wrote into a freshly built optimizer and scheduler; returns the metadata."""
    from .checkpoint import TensorFile

    with TensorFile(path) as file:
        meta = file.metadata
        if meta.get("format") != STATE_FORMAT or meta.get("format_version") != str(STATE_VERSION):
            raise TrainError(f"{path}: not a training state written by archdsl train")
        tensors = {name: file.read(name) for name in file.keys()}
    params = dict(model.named_parameters())
    groups = json.loads(meta["param_groups"])
    state: dict[int, dict] = {}
    flat: list[str] = [name for g in groups for name in g["params"]]
    for name in flat:
        if name not in params:
            raise TrainError(f"{path}: the optimizer state names parameter '{name}', which the model does not have")
    index = {name: i for i, name in enumerate(flat)}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, pname, skey = key.split("/", 2)
            state.setdefault(index[pname], {})[skey] = value
    optimizer.load_state_dict({"state": state, "param_groups": [
        {**{k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "params"},
         "params": [index[n] for n in g["params"]]} for g in groups]})
    scheduler.load_state_dict(json.loads(meta["scheduler"]))
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return meta


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"checkpoint-{step:07d}"


def latest_checkpoint(run_dir: Path, marker: str = "state.safetensors") -> Path | None:
    """The checkpoint folder of the highest step that is complete (its state file, written last, exists)."""
    found = [p for p in run_dir.glob("checkpoint-*") if (p / marker).is_file() and p.name[11:].isdigit()]
    return max(found, key=lambda p: int(p.name[11:]), default=None)


# ---------------------------------------------------------------------------------------------- metrics
def write_metrics(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(path: Path, up_to: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= up_to]


def plot_runs(runs: Sequence[RunResult], path: Path, *, entropy: float | None = None,
              title: str | None = None) -> Path | None:
    """One PNG with every run's validation loss (markers) and training loss (thin line) against the
    step; the legend gives each spec's parameter count. None (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from .atomic import replacing

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for i, run in enumerate(runs):
        color = f"C{i}"
        train = [(r["step"], r["loss"]) for r in run.metrics if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in run.metrics if "val_loss" in r]
        if train:
            ax.plot(*zip(*train), color=color, alpha=0.3, linewidth=0.8)
        label = f"{run.name} ({_count(run.params)} params)"
        if val:
            ax.plot(*zip(*val), color=color, marker="o", markersize=3.5, linewidth=1.6, label=label)
        else:
            ax.plot([], [], color=color, label=label)
    if entropy is not None:
        ax.axhline(entropy, color="grey", linestyle="--", linewidth=0.9, label=f"unigram entropy {entropy:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token): validation ●, training —")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    with replacing(path) as tmp:  # the legend as PNG text too, for programs (and tests) that read the plot
        fig.savefig(tmp, format="png", metadata={"Description": json.dumps(labels)})
    plt.close(fig)
    return path


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


# ---------------------------------------------------------------------------------------------- the run
class _Progress:
    """A tqdm bar (loss, tokens/s, ETA) on rank 0, or nothing."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                            file=sys.stderr, mininterval=0.5)

    def update(self, loss: float, tps: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
            self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _autocast(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if config.bf16 else nullcontext()


@torch.no_grad()
def evaluate(model: Any, objective: Objective, windows: np.ndarray, config: TrainConfig, device: torch.device) -> float:
    """Mean loss per predicted token over the held-out windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), config.batch):
        chunk = torch.as_tensor(windows[start: start + config.batch], device=device)
        with _autocast(config, device):
            total += float(objective.loss(model, chunk, reduction="sum"))
        count += chunk.shape[0] * objective.targets()
    model.train(was_training)
    return total / count


def _load_specs(sources: list, overrides: Mapping[str, Any] | None, max_params: int | None) -> list:
    """Each spec with the overrides it has vars for: in a comparison of specs with different vars, --set
    layers=2 applies to every spec with a `layers` var. A var that no spec has is an error (a typo)."""
    from .errors import ErrorItem, SpecError
    from .loader import load_spec

    if not overrides:
        return [load_spec(s, max_params=max_params) for s in sources]
    if len(sources) == 1:
        return [load_spec(sources[0], overrides=overrides, max_params=max_params)]
    known = [set(load_spec(s).vars) for s in sources]
    unused = [k for k in overrides if not any(k in vars_ for vars_ in known)]
    if unused:
        raise SpecError([ErrorItem.at(None, f"vars.{k}", f"no spec being trained has a var '{k}' to override",
                                      "check the name (archdsl validate SPEC lists a spec's problems)") for k in unused])
    return [load_spec(s, overrides={k: v for k, v in overrides.items() if k in vars_}, max_params=max_params)
            for s, vars_ in zip(sources, known)]


def _run_name(spec: Any, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name) or "model"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    taken.add(name)
    return name


def train(specs: Any, data: Any, *, overrides: Mapping[str, Any] | None = None, out: str | Path = "runs/train",
          resume: bool = False, stop_at: int | None = None, fsdp: bool = False, tp: int = 1,
          progress: bool | None = None, max_params: int | None = None, **settings: Any) -> TrainResult:
    """Train each spec (a path, YAML text, dict or Spec; or a list of them) on the text in `data` (files or
    folders), one after the other on identical batches; see the module docstring and TrainConfig for the
    settings (steps, batch, seq_len, lr, ...). Returns a TrainResult; writes everything under `out`.

    ``stop_at=N`` ends this call after step N with a checkpoint, as a job that runs out of time would
    (the schedule is still the one of ``steps``); ``resume=True`` continues from the latest checkpoint."""
    from .loader import load_spec

    unknown = set(settings) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"train() got unknown settings {sorted(unknown)}; see archdsl.training.TrainConfig")
    config = TrainConfig(**settings)
    if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 1):
        raise TrainError(f"stop_at must be a positive step, got {stop_at!r}")
    spec_list = list(specs) if isinstance(specs, (list, tuple)) else [specs]
    if not spec_list:
        raise TrainError("no spec to train")
    data_list = [data] if isinstance(data, (str, Path)) else list(data)
    dist = None
    if fsdp or tp != 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .parallel import setup

        dist = setup(fsdp=fsdp, tp=tp, device=config.device, batch=config.batch)
    device = torch.device(dist.device if dist is not None else config.device)
    rank0 = dist is None or dist.rank == 0
    show = (progress if progress is not None else True) and rank0
    loaded = _load_specs(spec_list, overrides, max_params)
    tok = make_tokenizer(config.tokenizer)
    corpus = load_corpus(data_list, tok, window=config.seq_len + 1, val_fraction=config.val_fraction)
    out = Path(out)
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    runs, notes = [], []
    for source, spec in zip(spec_list, loaded):
        name = _run_name(spec, taken)
        run = _train_one(spec, name, str(source) if isinstance(source, (str, Path)) else spec.name, corpus, config,
                         out / name, resume=resume, stop_at=stop_at, dist=dist, device=device, show=show, notes=notes)
        runs.append(run)
    plot = None
    entropy = corpus.unigram_entropy()
    if rank0:
        names = str(corpus.files[0]) if len(corpus.files) == 1 else f"{len(corpus.files)} files"
        title = f"{names}: {corpus.tokens:,} tokens ({tok.name}), batch {config.batch} × {config.seq_len}"
        plot = plot_runs(runs, out / "loss.png", entropy=entropy, title=title)
        if plot is None:
            notes.append("matplotlib is not installed, so no loss plot was drawn (pip install 'archdsl[train]'); "
                         "the metrics are in each run's metrics.jsonl")
    if dist is not None:
        dist.barrier()
        if rank0:
            notes.append("the models are distributed checkpoints (checkpoint-NNNNNNN/ in each run's folder); "
                         "archdsl convert FOLDER -o model.safetensors makes one model file of one")
    return TrainResult(runs, plot, entropy, corpus.tokens, notes)


def _train_one(spec: Any, name: str, source: str, corpus: Any, config: TrainConfig, run_dir: Path, *, resume: bool,
               stop_at: int | None, dist: Any, device: torch.device, show: bool, notes: list[str]) -> RunResult:
    from .compiler import compile_spec

    rank0 = dist is None or dist.rank == 0
    model = compile_spec(spec, seed=config.seed, device=device)
    params = model.num_parameters()
    objective = objective_for(model, config.seq_len)
    check_vocab(model, corpus.tokenizer)
    if config.activation_checkpointing and checkpoint_activations(model) == 0:
        notes.append(f"{name}: no repeated layers, so activation checkpointing changes nothing")
    model.train()
    if dist is not None:
        from .parallel import parallelize

        for warning in parallelize(model, dist.mesh, fsdp=dist.fsdp):
            if rank0:
                notes.append(f"{name}: {warning}")
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    start = 0
    metrics: list[dict] = []
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        start = _resume(model, optimizer, scheduler, spec, config, run_dir, dist)
        metrics = read_metrics(run_dir / "metrics.jsonl", start)
    else:
        torch.manual_seed(config.seed)  # dropout; the weights come from compile_spec's own generator
    window = config.seq_len + 1
    val = val_windows(corpus, window, config.eval_windows)
    local_rows = slice(None)
    if dist is not None:
        per = config.batch // dist.dp
        local_rows = slice(dist.dp_rank * per, (dist.dp_rank + 1) * per)
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    bar = _Progress(config.steps, start, name, show)
    tokens_per_step = config.batch * objective.targets()
    trained = [p for p in model.parameters() if p.requires_grad]
    aux = any(getattr(m, "aux_loss_coef", 0) for m in model.modules())
    last_loss, tps = None, None
    began = time.perf_counter()
    try:
        for step in range(start, end):
            t0 = time.perf_counter()
            batch = torch.as_tensor(train_batch(corpus, config.seed, step, config.batch, window)[local_rows],
                                    device=device)
            with _autocast(config, device):
                loss = objective.loss(model, batch)
                if aux:
                    from .blocks.feedforward import router_aux_loss

                    loss = loss + router_aux_loss(model, scaled=True).to(loss.device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = clip_gradients(trained, config.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            value = loss.detach()
            if dist is not None:
                value = dist.mean(value)
            last_loss = float(value)
            if not math.isfinite(last_loss):
                raise TrainError(f"{name}: the loss became {last_loss} at step {step + 1} (hint: a lower --lr, "
                                 "or --grad-clip 1.0)")
            if device.type == "cuda":
                torch.cuda.synchronize()
            tps = tokens_per_step / max(time.perf_counter() - t0, 1e-9)
            row = {"step": step + 1, "loss": round(last_loss, 6), "lr": lr, "grad_norm": round(norm, 6),
                   "tokens": (step + 1) * tokens_per_step, "tokens_per_s": round(tps, 1),
                   "elapsed_s": round(time.perf_counter() - began, 3)}
            done = step + 1 == config.steps
            if done or (config.eval_every and (step + 1) % config.eval_every == 0):
                val_loss = evaluate(model, objective, val, config, device)
                row.update(val_loss=round(val_loss, 6), val_ppl=round(math.exp(min(val_loss, 50)), 4))
                bar.write(f"{name}: step {step + 1}/{config.steps}  train {last_loss:.4f}  val {val_loss:.4f}  "
                          f"ppl {math.exp(min(val_loss, 50)):.2f}")
            metrics.append(row)
            bar.update(last_loss, tps)
            stopping = step + 1 == end and not done
            if (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and not done) or stopping:
                _save_checkpoint(model, optimizer, scheduler, step + 1, config, run_dir, dist)
                if rank0:
                    write_metrics(run_dir / "metrics.jsonl", metrics)
            elif rank0 and "val_loss" in row:
                write_metrics(run_dir / "metrics.jsonl", metrics)
    finally:
        bar.close()
    if end == config.steps and (start < config.steps or not _final_exists(run_dir, config.steps, dist)):
        _save_final(model, optimizer, scheduler, config, run_dir, dist)
    elif end < config.steps:
        notes.append(f"{name}: stopped after step {end} of {config.steps}; continue with --resume")
    if rank0:
        write_metrics(run_dir / "metrics.jsonl", metrics)
    vals = [r for r in metrics if "val_loss" in r]
    last_val = vals[-1] if vals else None
    trains = [r["loss"] for r in metrics]
    speeds = [r["tokens_per_s"] for r in metrics[len(metrics) // 5:]] or [0.0]  # after the first steps' warm-up
    return RunResult(name, source, params, end, run_dir, last_val["val_loss"] if last_val else None,
                     last_val["val_ppl"] if last_val else None, trains[-1] if trains else last_loss,
                     float(np.median(speeds)) if metrics else tps, metrics)


def _final_exists(run_dir: Path, steps: int, dist: Any) -> bool:
    if dist is None:
        return (run_dir / "model.safetensors").exists()
    from .parallel import STATE_FILE

    return (checkpoint_dir(run_dir, steps) / STATE_FILE).is_file()


def _save_checkpoint(model, optimizer, scheduler, step, config, run_dir, dist) -> Path:
    folder = checkpoint_dir(run_dir, step)
    if dist is not None:
        from .parallel import save_distributed

        save_distributed(folder, model, optimizer, scheduler, step, config, dist)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.safetensors")
    save_train_state(folder / "state.safetensors", model, optimizer, scheduler, step, config)  # last: marks it complete
    return folder


def _save_final(model, optimizer, scheduler, config, run_dir, dist) -> None:
    """The final model: model.safetensors (single process), or a distributed checkpoint of the last step."""
    if dist is not None:
        _save_checkpoint(model, optimizer, scheduler, config.steps, config, run_dir, dist)
        return
    if config.checkpoint_every:
        _save_checkpoint(model, optimizer, scheduler, config.steps, config, run_dir, dist)
    model.save(run_dir / "model.safetensors")


_RESUME_FIXED = ("batch", "seq_len", "seed", "val_fraction", "tokenizer")  # changing these would not be a resume


def _resume(model, optimizer, scheduler, spec, config, run_dir, dist) -> int:
    if dist is not None:
        from .parallel import load_distributed

        return load_distributed(run_dir, model, optimizer, scheduler, spec, config, dist)
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise TrainError(f"--resume: no complete checkpoint in {run_dir} (train with --checkpoint-every N first)")
    from .checkpoint import load_model

    saved = load_model(folder / "model.safetensors")
    if saved.spec.to_yaml() != spec.to_yaml():
        raise TrainError(f"--resume: {folder} was trained from a different spec than '{spec.name}' with these --set "
                         "values; resume with the same spec and overrides, or train into another --out")
    check_resume_config(folder / "state.safetensors", config)
    model.load_state_dict(saved.state_dict())
    load = load_train_state(folder / "state.safetensors", model, optimizer, scheduler)
    return int(load["step"])


def check_resume_config(path: Path, config: TrainConfig, saved: Mapping[str, Any] | None = None) -> dict:
    """The saved run's config; a TrainError if a setting that defines the run (batch, seq_len, seed, ...) changed."""
    if saved is None:
        from .checkpoint import TensorFile

        with TensorFile(path) as file:
            saved = json.loads(file.metadata.get("config", "{}"))
    changed = [f"{k} {saved.get(k)!r} -> {getattr(config, k)!r}" for k in _RESUME_FIXED if saved.get(k) != getattr(config, k)]
    if changed:
        raise TrainError(f"--resume: {path.parent} was trained with other settings ({'; '.join(changed)}); resume "
                         "with the same ones (steps, lr and the intervals may change)")
    return dict(saved)


__all__ = ["train", "TrainConfig", "TrainResult", "RunResult", "TrainError", "DataError", "objective_for",
           "repeated_layers", "checkpoint_activations", "plot_runs", "evaluate"]
