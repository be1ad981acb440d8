"""One rank of the distributed checks in tests/test_distributed.py (run by torchrun, CPU, gloo).

    torchrun --nproc-per-node 2 tests/parallel_worker.py MODE SPEC OUT_DIR [VAR=VALUE ...]

MODE tp:   the model parallelised over a ('tp',) mesh next to the unsharded model (built from the same
           seed on every rank): the largest logit difference, then the losses of 3 AdamW steps of each,
           and the warnings; rank 0 writes them to OUT_DIR/tp-<spec name>.json.
MODE dcp:  FSDP (and --tp when the world has 2 x 2 ranks: 2-D) over all ranks, 3 training steps, a DCP
           checkpoint in OUT_DIR/ckpt, and the logits of the parallel model on fixed tokens in
           OUT_DIR/logits.safetensors, for the test to load on one process and compare.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import archdsl
from archdsl.parallel import Dist, parallelize, save_distributed
from archdsl.training import TrainConfig, clip_gradients, make_optimizer, make_scheduler


def main() -> None:
    mode, spec_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if mode == "tp" and "," in spec_path:  # several specs in one launch: SPEC,SPEC (overrides for each)
        for one in spec_path.split(","):
            sys.argv[2] = one
            main()
        return
    given = dict(a.split("=", 1) for a in sys.argv[4:])
    overrides = {k: v for k, v in given.items() if k in archdsl.load_spec(spec_path).vars}  # those it has
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(2))

    def loss_of(m):
        return torch.nn.functional.cross_entropy(m(tokens).flatten(0, 1), targets.flatten())

    if mode == "tp":
        reference = archdsl.compile(spec_path, overrides=overrides, seed=0)
        model = archdsl.compile(spec_path, overrides=overrides, seed=0)
        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
        warnings = parallelize(model, mesh)
        with torch.no_grad():
            logit_diff = (model(tokens) - reference(tokens)).abs().max().item()
        config = TrainConfig(lr=1e-2, warmup=0)
        results = {"logits": logit_diff, "warnings": warnings, "losses": []}
        for m in (reference, model):
            opt, losses = make_optimizer(m, config), []
            for _ in range(3):
                loss = loss_of(m)
                opt.zero_grad()
                loss.backward()
                clip_gradients(list(m.parameters()), 1.0)
                opt.step()
                losses.append(loss.item())
            results["losses"].append(losses)
        with torch.no_grad():
            results["logits_after"] = (model(tokens) - reference(tokens)).abs().max().item()
        if rank == 0:
            (out / f"tp-{model.spec.name}.json").write_text(json.dumps(results))
    elif mode == "dcp":
        tp = 2 if world == 4 else 1
        model = archdsl.compile(spec_path, overrides=overrides, seed=0)
        mesh = init_device_mesh("cpu", (world // tp, tp), mesh_dim_names=("dp", "tp"))
        parallelize(model, mesh)
        config = TrainConfig(lr=1e-2, warmup=0, steps=3)
        opt = make_optimizer(model, config)
        sched = make_scheduler(opt, config)
        for _ in range(3):
            loss = loss_of(model)
            opt.zero_grad()
            loss.backward()
            clip_gradients(list(model.parameters()), 1.0)
            opt.step()
            sched.step()
        d = Dist(rank, world, world // tp, tp, mesh["dp"].get_local_rank(), mesh, "cpu", True)
        save_distributed(out / "ckpt", model, opt, sched, 3, config, d)
        with torch.no_grad():
            logits = model(tokens)
        if rank == 0:
            from safetensors.torch import save_file

            save_file({"logits": logits.contiguous(), "tokens": tokens}, str(out / "logits.safetensors"))
    dist.barrier()


if __name__ == "__main__":
    main()
    # leave without tearing the gloo groups down at interpreter exit: under a loaded machine that teardown
    # has aborted a rank once ("terminate called without an active exception") after every result was written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
