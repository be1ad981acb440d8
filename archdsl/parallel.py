"""Distributed training on torch.distributed: FSDP2 and tensor parallelism planned from the spec.

    torchrun --nproc-per-node 4 -m archdsl train spec.yaml --data text/ --fsdp --tp 2

The processes form a 2-D device mesh ``(dp, tp)``; ``archdsl.parallelize(model, mesh)`` applies

* **tensor parallelism** over ``tp``, from each kind's own plan: a module built by a kind may define
  ``tp_plan(tp) -> {submodule: ParallelStyle}`` (torch.distributed.tensor.parallel styles, or
  :class:`FusedColwise` for a fused projection whose sections — q|k|v, gate|up — must each be split)
  and ``tp_localize(rank, tp)`` to switch its forward to the sizes of one rank (heads per rank). A
  plan may be ``{}``: replicated on purpose (norms, embeddings, the head). A module with parameters
  and no plan is replicated and named in a warning;
* **FSDP2** (``fully_shard``) over ``dp``, with the units read from the IR: every layer of every
  repeat (each body instance), each embedding, each head, then the root for what is left. A tied
  table (embedding shared with the head) stays in the root, as one unit cannot lend a parameter
  to another.

Distributed checkpoints are torch.distributed.checkpoint (DCP) folders written with its
safetensors storage (``HuggingFaceStorageWriter``: one file per rank with the offsets of its shards;
no pickle), so a checkpoint saved on N processes loads on any other number, or on one
(:func:`load_checkpoint`, ``archdsl convert``). Fused projections are stored section by section
(``qkv.weight`` as ``qkv.weight/q``, ``/k``, ``/v``), whatever the layout that wrote them, which is
what lets a checkpoint written under tensor parallelism load unsharded and the reverse.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle

STATE_FILE = "train_state.json"
DCP_FOLDER = "dcp"


class ParallelError(ValueError):
    """A model or a launch that cannot be parallelised as asked (sizes that do not divide, no torchrun)."""


# ---------------------------------------------------------------------------------------------- styles
def rank_grouped(t: torch.Tensor, sections: Sequence[int], tp: int) -> torch.Tensor:
    """Rows [s0 | s1 | ...] reordered as [s0 part r | s1 part r | ...] for r = 0..tp-1, so that an even
    split along dim 0 gives each rank its part of every section (its q, k and v heads)."""
    if tp == 1:
        return t
    parts = [piece.chunk(tp, dim=0) for piece in t.split(list(sections), dim=0)]
    return torch.cat([parts[i][r] for r in range(tp) for i in range(len(sections))], dim=0)


def canonical(t: torch.Tensor, sections: Sequence[int], tp: int) -> torch.Tensor:
    """The inverse of rank_grouped."""
    if tp == 1:
        return t
    local = [s // tp for s in sections]
    per_rank = [chunk.split(local, dim=0) for chunk in t.chunk(tp, dim=0)]
    return torch.cat([per_rank[r][i] for i in range(len(sections)) for r in range(tp)], dim=0)


class FusedColwise(ColwiseParallel):
    """ColwiseParallel for a Linear whose output rows are sections computed together (q|k|v, gate|up):
    each section is split evenly across the ranks, so rank r computes its part of every section and
    the module's forward splits its local output by the local section sizes."""

    def __init__(self, sections: dict[str, int] | Sequence[tuple[str, int]]):
        super().__init__()
        self.sections = dict(sections)

    def _partition_linear_fn(self, name: str, module: nn.Module, device_mesh: Any) -> None:
        tp = device_mesh.size()
        sizes = list(self.sections.values())
        for pname, param in module.named_parameters():
            grouped = rank_grouped(param.detach(), sizes, tp)
            module.register_parameter(pname, nn.Parameter(distribute_tensor(grouped, device_mesh, [Shard(0)]),
                                                          requires_grad=param.requires_grad))

    def __repr__(self) -> str:
        return f"FusedColwise({self.sections})"


class HeadSharded(ParallelStyle):
    """A module applied to each head of a head-sharded tensor with one shared weight (qk-norm over
    (batch, seq, heads, head_dim)): the weight is replicated and its gradient summed over the ranks,
    the input is marked as sharded on the heads dimension."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.dim = dim

    def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
        from torch.distributed.tensor import distribute_module

        def partition(name: str, mod: nn.Module, mesh: Any) -> None:
            for pname, param in list(mod.named_parameters(recurse=False)):
                mod.register_parameter(pname, nn.Parameter(DTensor.from_local(param.detach(), mesh, [Replicate()],
                                                                              run_check=False)))

        def inputs(mod: nn.Module, args: tuple, mesh: Any) -> tuple:
            return (DTensor.from_local(args[0], mesh, [Shard(self.dim)], run_check=False), *args[1:])

        def outputs(mod: nn.Module, out: Any, mesh: Any) -> Any:
            return out.to_local() if isinstance(out, DTensor) else out

        return distribute_module(module, device_mesh, partition, inputs, outputs)


# ---------------------------------------------------------------------------------------------- the plan
def _leaf_modules(model: Any) -> list[tuple[str, str, nn.Module]]:
    """(module path, kind, module) of every node a kind built, in execution order."""
    from .ir import leaves

    g = model.graph
    return [(node, g.nodes[node]["kind"], model.get_submodule(node)) for node in leaves(g)
            if "spec" in g.nodes[node]]


def fused_sections(model: Any) -> dict[str, dict[str, int]]:
    """Parameter name -> its sections ({'q': rows, 'k': rows, 'v': rows}) for every fused projection, as
    the kinds' tensor-parallel plans declare them (FusedColwise)."""
    out: dict[str, dict[str, int]] = {}
    for path, _, module in _leaf_modules(model):
        plan = module.tp_plan(1) if hasattr(module, "tp_plan") else {}
        for sub, style in plan.items():
            if isinstance(style, FusedColwise):
                target = module.get_submodule(sub)
                for pname, _ in target.named_parameters(recurse=False):
                    out[f"{path}.{sub}.{pname}"] = dict(style.sections)
    return out


def _mesh_dims(mesh: Any) -> tuple[Any | None, Any | None]:
    """(dp mesh, tp mesh) of a 1-D or 2-D mesh; a 1-D mesh is data-parallel unless it is named 'tp'."""
    names = mesh.mesh_dim_names or ()
    if mesh.ndim == 1:
        return (None, mesh) if names == ("tp",) else (mesh, None)
    if mesh.ndim == 2 and set(names) == {"dp", "tp"}:
        return mesh["dp"], mesh["tp"]
    raise ParallelError("archdsl.parallelize takes a 1-D mesh (data parallel; named ('tp',) for tensor parallel) "
                        "or a 2-D mesh with mesh_dim_names ('dp', 'tp')")


def parallelize(model: Any, mesh: Any, *, fsdp: bool = True, tp: bool = True) -> list[str]:
    """Shard `model` (an ArchModel) over `mesh` in place: tensor parallelism over its 'tp' dimension from the
    kinds' plans, then FSDP2 over its 'dp' dimension with the IR's units. Returns warnings (kinds that
    declare no plan and are replicated). Sizes that do not split (kv heads over the tp ranks, ...) are a
    ParallelError naming the layer."""
    from torch.distributed.tensor.parallel import parallelize_module

    dp_mesh, tp_mesh = _mesh_dims(mesh)
    model._archdsl_fused = fused_sections(model)  # before the plan replaces the parameters
    model._archdsl_tp = tp_mesh.size() if (tp and tp_mesh is not None) else 1
    warnings: list[str] = []
    if tp and tp_mesh is not None and tp_mesh.size() > 1:
        size, rank = tp_mesh.size(), tp_mesh.get_local_rank()
        unplanned: dict[str, list[str]] = {}
        for path, kind, module in _leaf_modules(model):
            if not hasattr(module, "tp_plan"):
                if any(True for _ in module.parameters()):
                    unplanned.setdefault(kind, []).append(path)
                continue
            try:
                plan = module.tp_plan(size)
            except ValueError as exc:
                raise ParallelError(f"{path} ({kind}): {exc}") from None
            if plan:
                parallelize_module(module, tp_mesh, plan)
            if hasattr(module, "tp_localize"):
                module.tp_localize(rank, size)
        for kind, paths in unplanned.items():
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            warnings.append(f"kind '{kind}' declares no tensor-parallel plan, so {shown} "
                            f"{'is' if len(paths) == 1 else 'are'} replicated on each of the {size} tensor-parallel "
                            "ranks")
    if fsdp and dp_mesh is not None:
        _fully_shard(model, dp_mesh)
    return warnings


def fsdp_units(model: Any) -> list[str]:
    """Module paths of the FSDP units, from the IR: each repeated layer, each embedding and each head,
    except a tied table and the nodes sharing it (they stay in the root unit)."""
    from .training import repeated_layers

    g = model.graph
    tied_tables = {g.graph["embeddings"][d["spec"].tied_to()] for _, d in g.nodes(data=True)
                   if "spec" in d and d["spec"].tied_to()}
    sharing = {n for n, d in g.nodes(data=True) if "spec" in d and d["spec"].tied_to()} | tied_tables
    embeddings = [n for n in g.graph["embeddings"].values() if n not in sharing]
    heads = [n for n, d in g.nodes(data=True) if "spec" in d and d["spec"].output and n not in sharing]
    return embeddings + repeated_layers(model) + heads


def _fully_shard(model: Any, mesh: Any) -> None:
    from torch.distributed.fsdp import fully_shard

    fused = {id(p) for name, p in model.named_parameters() if name in model._archdsl_fused and p.dim() == 2}

    def placement(param: nn.Parameter) -> Shard:
        # fused projections are sharded across their input dimension, so each section's rows stay whole
        # on every rank and a checkpoint can store the sections separately without gathering them
        return Shard(1) if id(param) in fused else Shard(0)

    for path in fsdp_units(model):
        fully_shard(model.get_submodule(path), mesh=mesh, shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, shard_placement_fn=placement)


# ---------------------------------------------------------------------------------------------- launching
@dataclass
class Dist:
    """This process's place in a torchrun launch."""

    rank: int
    world: int
    dp: int
    tp: int
    dp_rank: int
    mesh: Any
    device: str
    fsdp: bool

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().clone().float()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world

    def barrier(self) -> None:
        dist.barrier()


def setup(*, fsdp: bool, tp: int, device: str, batch: int) -> Dist:
    """The process group and the (dp, tp) mesh of a torchrun launch (gloo on CPU, NCCL on CUDA)."""
    from torch.distributed.device_mesh import init_device_mesh

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ParallelError("--fsdp and --tp run under torchrun, which starts one process per rank: torchrun "
                            "--nproc-per-node N -m archdsl train ...")
    world = int(os.environ["WORLD_SIZE"])
    if world % tp:
        raise ParallelError(f"--tp {tp} does not divide the {world} processes (the mesh is processes / tp "
                            "data-parallel x tp tensor-parallel)")
    dp = world // tp
    if dp > 1 and not fsdp:
        raise ParallelError(f"{world} processes with --tp {tp} leave {dp} data-parallel ranks: add --fsdp to shard "
                            "them (archdsl's data parallelism is FSDP)")
    if batch % dp:
        raise ParallelError(f"--batch {batch} does not split over {dp} data-parallel ranks; use a multiple of {dp}")
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    rank = dist.get_rank()
    mesh = init_device_mesh(torch.device(device).type, (dp, tp), mesh_dim_names=("dp", "tp"))
    return Dist(rank, world, dp, tp, mesh["dp"].get_local_rank(), mesh, device, fsdp)


# ---------------------------------------------------------------------------------------------- checkpoints
def _is_aligned(t: DTensor, tp: int) -> bool:
    """True when each section of a fused DTensor is a regular DTensor of the same placements: its rows
    are split only by the tensor-parallel plan (rank-grouped) and any other sharding is across columns."""
    names = t.device_mesh.mesh_dim_names or ()
    for i, p in enumerate(t.placements):
        if isinstance(p, Replicate):
            continue
        if type(p) is Shard and p.dim != 0:
            continue
        if type(p) is Shard and p.dim == 0 and (names[i:i + 1] == ("tp",) or t.device_mesh.ndim == 1) and \
                t.device_mesh.size(i) == tp:
            continue
        return False
    return True


def _pieces(name: str, t: torch.Tensor, sections: dict[str, int] | None, tp: int,
            writebacks: list) -> dict[str, torch.Tensor]:
    """The checkpoint entries of one tensor: itself, or one per section of a fused tensor (views, so a
    load writes straight into the model and the optimizer)."""
    if sections is None:
        return {name: t}
    sizes = list(sections.values())
    if not isinstance(t, DTensor):  # one process: the canonical layout
        return {f"{name}/{label}": piece for label, piece in zip(sections, t.detach().split(sizes, dim=0))}
    if _is_aligned(t, tp):
        local = t.to_local().detach()
        out = {}
        parts = local.split([s // tp for s in sizes], dim=0)
        for (label, size), part in zip(sections.items(), parts):
            shape = (size, *t.shape[1:])
            stride = torch.empty(shape, device="meta").stride()
            out[f"{name}/{label}"] = DTensor.from_local(part, t.device_mesh, t.placements, run_check=False,
                                                        shape=torch.Size(shape), stride=stride)
        return out
    # a layout that cuts sections (a fused bias under FSDP): gather it, store it whole, write back after a load
    full = canonical(t.detach().full_tensor(), sizes, tp)
    writebacks.append((t, full, sizes, tp))
    return {f"{name}/{label}": piece for label, piece in zip(sections, full.split(sizes, dim=0))}


def _write_back(writebacks: list) -> None:
    for t, full, sizes, tp in writebacks:
        local = distribute_tensor(rank_grouped(full, sizes, tp), t.device_mesh, t.placements).to_local()
        with torch.no_grad():
            t.to_local().copy_(local)


def checkpoint_state(model: Any, optimizer: Any = None) -> tuple[dict[str, torch.Tensor], list]:
    """The tensors a distributed checkpoint holds, keyed independently of the layout: ``model/<param>``
    (sections for fused ones), ``model/<buffer>``, ``optim/<state>/<param>``; and the pending write-backs."""
    fused = getattr(model, "_archdsl_fused", None)
    if fused is None:
        fused = fused_sections(model)
    tp = getattr(model, "_archdsl_tp", 1)
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():  # a forward without backward (evaluation) can leave the root gathered
        if isinstance(module, FSDPModule):
            module.reshard()
    writebacks: list = []
    state: dict[str, torch.Tensor] = {}
    params = dict(model.named_parameters())
    for name, p in params.items():
        state.update(_pieces(f"model/{name}", p, fused.get(name), tp, writebacks))
    param_ids = {id(p) for p in params.values()}
    for name, b in model.state_dict(keep_vars=True).items():
        if id(b) not in param_ids and name not in params and not isinstance(b, nn.Parameter):
            state[f"model/{name}"] = b
    if optimizer is not None:
        for name, p in params.items():
            for key, value in optimizer.state.get(p, {}).items():
                if key == "step":
                    continue  # one count for every parameter: in the JSON state
                if isinstance(value, torch.Tensor):
                    state.update(_pieces(f"optim/{key}/{name}", value, fused.get(name), tp, writebacks))
    return state, writebacks


def _init_optimizer_state(optimizer: Any) -> None:
    """AdamW creates its state on the first step; take one with zero gradients and lr 0 so that the
    tensors exist (and are then overwritten by the load)."""
    saved = [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"], g["weight_decay"] = 0.0, 0.0
        for p in g["params"]:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for g, (lr, wd) in zip(optimizer.param_groups, saved):
        g["lr"], g["weight_decay"] = lr, wd


def save_distributed(folder: Path, model: Any, optimizer: Any, scheduler: Any, step: int, config: Any,
                     d: Dist) -> None:
    """A DCP checkpoint of model and optimizer (every rank writes its shards), each rank's RNG state, then
    (rank 0, last: it marks the checkpoint complete) train_state.json with the step, the schedule, the
    optimizer settings, the config and the spec."""
    import torch.distributed.checkpoint as dcp
    from dataclasses import asdict
    from safetensors.torch import save_file
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    from . import __version__
    from .atomic import replacing, write_text

    if d.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DCP_FOLDER).mkdir(exist_ok=True)
    d.barrier()
    state, _ = checkpoint_state(model, optimizer)
    dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(folder / DCP_FOLDER), save_distributed=True))
    with replacing(folder / f"rng-rank{d.rank}.safetensors") as tmp:
        save_file({"torch": torch.get_rng_state()}, str(tmp))
    d.barrier()
    if d.rank == 0:
        steps = [s["step"] for s in optimizer.state.values() if "step" in s]
        info = {"format": "archdsl.dcp_checkpoint", "format_version": 1, "archdsl_version": __version__,
                "step": step, "optimizer_step": float(steps[0]) if steps else 0.0,
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
                "scheduler": scheduler.state_dict(), "config": asdict(config), "spec": model.spec.to_yaml(),
                "world": d.world, "dp": d.dp, "tp": d.tp, "fused": model._archdsl_fused}
        write_text(folder / STATE_FILE, json.dumps(info, indent=1))
    d.barrier()


def _read_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    if not path.is_file():
        raise ParallelError(f"{folder}: not a distributed checkpoint of archdsl train (no {STATE_FILE}; a "
                            "single-process checkpoint holds model.safetensors, which load_model reads)")
    try:
        info = json.loads(path.read_text())
    except ValueError as exc:
        raise ParallelError(f"{path}: not JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != "archdsl.dcp_checkpoint" or not isinstance(
            info.get("spec"), str):
        raise ParallelError(f"{path}: not the state file of an archdsl distributed checkpoint")
    return info


def load_distributed(run_dir: Path, model: Any, optimizer: Any, scheduler: Any, spec: Any, config: Any,
                     d: Dist) -> int:
    """Resume from the latest complete distributed checkpoint in run_dir (any earlier layout); returns its step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    from .training import TrainError, check_resume_config, latest_checkpoint

    folder = latest_checkpoint(run_dir, marker=STATE_FILE)
    if folder is None:
        raise TrainError(f"--resume: no complete distributed checkpoint in {run_dir} (train with --checkpoint-every "
                         "N first)")
    info = _read_state(folder)
    if info["spec"] != spec.to_yaml():
        raise TrainError(f"--resume: {folder} was trained from a different spec than '{spec.name}' with these --set "
                         "values")
    check_resume_config(folder / STATE_FILE, config, info["config"])
    _init_optimizer_state(optimizer)
    state, writebacks = checkpoint_state(model, optimizer)
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(folder / DCP_FOLDER)))
    _write_back(writebacks)
    for group, saved in zip(optimizer.param_groups, info["param_groups"]):
        group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items()})
    for s in optimizer.state.values():
        if "step" in s:
            s["step"].fill_(info["optimizer_step"])
    scheduler.load_state_dict(info["scheduler"])
    rng = folder / f"rng-rank{d.rank}.safetensors"
    if info.get("world") == d.world and rng.is_file():
        from safetensors.torch import load_file

        torch.set_rng_state(load_file(str(rng))["torch"])
    else:  # another layout: a fresh stream per rank and step
        torch.manual_seed(config.seed * 1_000_003 + info["step"] * 1009 + d.rank)
    return int(info["step"])


def load_checkpoint(folder: str | Path, *, device: Any = "cpu") -> Any:
    """The ArchModel of a distributed checkpoint folder, on one process (no torchrun needed): DCP reshards
    whatever layout wrote it into the unsharded model."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    from .compiler import compile_spec
    from .loader import load_spec

    folder = Path(folder)
    info = _read_state(folder)
    spec = load_spec(info["spec"], text_name=f"{folder / STATE_FILE} (embedded spec)")
    model = compile_spec(spec, device=device)
    state, _ = checkpoint_state(model)
    import warnings

    with warnings.catch_warnings():  # one process without a process group is what this function is for
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=HuggingFaceStorageReader(str(folder / DCP_FOLDER)))
    return model.eval()


def convert_checkpoint(folder: Path, output: Path) -> Any:
    """A distributed checkpoint folder -> one safetensors model file (ArchModel.save); returns the model."""
    model = load_checkpoint(folder)
    model.save(output)
    return model


__all__ = ["parallelize", "fsdp_units", "fused_sections", "FusedColwise", "HeadSharded", "setup", "Dist",
           "save_distributed", "load_distributed", "load_checkpoint", "convert_checkpoint", "checkpoint_state",
           "ParallelError", "rank_grouped", "canonical"]
