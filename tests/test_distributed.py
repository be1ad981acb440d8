"""Distributed training on torch.distributed (CPU, gloo): FSDP2 and tensor parallelism planned from the
IR and the kinds, DCP checkpoints that reshard. The torchrun tests are marked `distributed` (they start
2 or 4 processes; CI runs them: `-m "not distributed"` leaves them out); the plan's pieces are unit tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.parallel import ParallelError, canonical, fsdp_units, fused_sections, rank_grouped

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests" / "fixtures" / "text" / "archdsl-language.md"
WORKER = ROOT / "tests" / "parallel_worker.py"
TINY = ["layers=2", "d_model=64", "heads=4", "kv_heads=2", "ffn=96", "vocab=256", "conv_layers=1", "dropout=0",
        "head_dim=16"]

needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def torchrun(n: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
                           "--standalone", *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


# ------------------------------------------------------------------------------------ the plan (no processes)
def test_fused_rows_are_grouped_per_rank_and_back():
    t = torch.arange(24.0)[:, None]  # q: 8 rows, k: 4, v: 4 ... then 8 more of another section
    sections = [8, 4, 4, 8]
    grouped = rank_grouped(t, sections, 2)
    rank0 = grouped[:12, 0].tolist()
    assert rank0 == [0, 1, 2, 3, 8, 9, 12, 13, 16, 17, 18, 19]  # the first half of every section
    assert torch.equal(canonical(grouped, sections, 2), t)


def test_the_plan_comes_from_the_ir_and_the_kinds():
    gpt2 = archdsl.compile(ROOT / "specs" / "gpt2.yaml", overrides={"layers": 2, "d_model": 32, "heads": 2}, device="meta")
    assert fsdp_units(gpt2) == ["h.0", "h.1"]  # the tied wte / lm_head stay in the root unit
    llama = archdsl.compile(ROOT / "specs" / "llama-small.yaml", overrides={"layers": 2}, device="meta")
    assert fsdp_units(llama) == ["embed_tokens", "layers.0", "layers.1", "lm_head"]
    t5 = archdsl.compile(ROOT / "specs" / "t5-small.yaml", overrides={"layers": 1}, device="meta")
    assert fsdp_units(t5) == ["encoder.block.0", "decoder.block.0"]  # every repeat's layers; the tied table in the root
    sections = fused_sections(llama)
    assert sections["layers.0.residual_0.attention.qkv.weight"] == {"q": 512, "k": 128, "v": 128}  # GQA: 8 + 2 + 2 heads
    assert sections["layers.0.residual_1.mlp.up.weight"] == {"gate": 1408, "up": 1408}
    assert "layers.0.residual_1.mlp.down.weight" not in sections


def test_a_plan_that_cannot_split_is_refused_by_name():
    llama = archdsl.compile(ROOT / "specs" / "llama-small.yaml", overrides={"layers": 1}, device="meta")
    attention = llama.get_submodule("layers.0.residual_0.attention")
    with pytest.raises(ValueError, match="2 kv heads do not split over 4 tensor-parallel ranks"):
        attention.tp_plan(4)
    assert set(attention.tp_plan(2)) == {"qkv", "out"}
    t5 = archdsl.compile(ROOT / "specs" / "t5-small.yaml", overrides={"layers": 1}, device="meta")
    with pytest.raises(ValueError, match="relative position bias"):
        t5.get_submodule("encoder.block.0.residual_0.attention").tp_plan(2)
    mlp = llama.get_submodule("layers.0.residual_1.mlp")
    with pytest.raises(ValueError, match="1408 hidden units do not split over 3"):
        mlp.tp_plan(3)


def test_parallelize_wants_a_mesh_it_understands():
    from archdsl.parallel import _mesh_dims

    class Mesh:
        ndim, mesh_dim_names = 3, ("a", "b", "c")
    with pytest.raises(ParallelError, match="1-D mesh"):
        _mesh_dims(Mesh())


# ------------------------------------------------------------------------------------ torchrun (2 and 4 processes)
@pytest.mark.distributed
@needs_gloo
def test_tensor_parallel_2_equals_the_unsharded_model(tmp_path):
    specs = ",".join([str(ROOT / "specs" / s) for s in ("llama-small.yaml", "conv-attention-hybrid.yaml", "qwen3-8b.yaml")]
                     + [str(ROOT / "tests" / "fixtures" / "gated-attention.yaml")])
    torchrun(2, str(WORKER), "tp", specs, str(tmp_path), *TINY)
    # GQA + gated MLP; MHA + conv; qk-norm; a per-head output gate (a fourth section of the fused projection)
    for name in ("llama-small", "conv-attention-hybrid", "qwen3-8b", "gated-attention"):
        result = json.loads((tmp_path / f"tp-{name}.json").read_text())
        assert result["logits"] < 1e-5, name
        reference, sharded = result["losses"]
        assert max(abs(a - b) for a, b in zip(reference, sharded)) < 1e-5, (name, result["losses"])
    warnings = json.loads((tmp_path / "tp-conv-attention-hybrid.json").read_text())["warnings"]
    assert warnings == ["kind 'conv1d' declares no tensor-parallel plan, so conv.0.residual.conv1d is replicated on "
                        "each of the 2 tensor-parallel ranks"]


def _losses(folder: Path, name: str) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / name / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.distributed
@needs_gloo
def test_fsdp_on_2_processes_and_tp_2_train_as_one_process_does(tmp_path):
    sets = [a for s in ("layers=2", "d_model=32", "heads=4", "kv_heads=2", "ffn=64", "vocab=256") for a in ("--set", s)]
    common = ["-m", "archdsl", "train", str(ROOT / "specs" / "llama-small.yaml"), "--data", str(TEXT), *sets,
              "--steps", "5", "--batch", "4", "--seq-len", "32", "--eval-every", "0", "--no-progress"]
    torch.set_num_threads(1)
    archdsl.train(ROOT / "specs" / "llama-small.yaml", TEXT, overrides=dict(s.split("=") for s in sets[1::2]),
                  steps=5, batch=4, seq_len=32, eval_every=0, progress=False, out=tmp_path / "one")
    single = _losses(tmp_path / "one", "llama-small")
    # FSDP over 2 ranks, stopped after 3 steps and resumed from its distributed checkpoint
    torchrun(2, *common, "--fsdp", "--out", str(tmp_path / "fsdp"), "--stop-at", "3")
    done = torchrun(2, *common, "--fsdp", "--out", str(tmp_path / "fsdp"), "--resume")
    assert "archdsl convert" in done.stderr
    fsdp = _losses(tmp_path / "fsdp", "llama-small")
    assert len(fsdp) == 5 and max(abs(a - b) for a, b in zip(single, fsdp)) < 1e-5, (single, fsdp)
    torchrun(2, *common, "--tp", "2", "--out", str(tmp_path / "tp"))
    tp = _losses(tmp_path / "tp", "llama-small")
    assert max(abs(a - b) for a, b in zip(single, tp)) < 1e-5, (single, tp)
    # the distributed checkpoint converts to one model file
    from archdsl.cli import main

    assert main(["convert", str(tmp_path / "fsdp" / "llama-small" / "checkpoint-0000005"), "-o",
                 str(tmp_path / "model.safetensors")]) == 0
    assert archdsl.load_model(tmp_path / "model.safetensors").num_parameters() == 34_976


def _logits_after_load(folder: Path) -> float:
    from safetensors.torch import load_file

    from archdsl.parallel import load_checkpoint

    saved = load_file(str(folder / "logits.safetensors"))
    model = load_checkpoint(folder / "ckpt")  # one process, no process group
    with torch.no_grad():
        return (model(saved["tokens"]) - saved["logits"]).abs().max().item()


@pytest.mark.distributed
@needs_gloo
def test_a_checkpoint_saved_on_2_processes_loads_on_1(tmp_path):
    # GPT-2: tied head, qkv biases (fused 1-D tensors that FSDP's row sharding cuts: gathered for the checkpoint)
    torchrun(2, str(WORKER), "dcp", str(ROOT / "specs" / "gpt2.yaml"), str(tmp_path), *TINY)
    assert _logits_after_load(tmp_path) < 1e-5
    files = sorted(p.name for p in (tmp_path / "ckpt" / "dcp").iterdir())
    assert files == ["shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]


@pytest.mark.distributed
@needs_gloo
def test_fsdp_by_tp_on_4_processes_loads_on_1(tmp_path):
    torchrun(4, str(WORKER), "dcp", str(ROOT / "specs" / "llama-small.yaml"), str(tmp_path), *TINY)
    assert _logits_after_load(tmp_path) < 1e-5
    state = json.loads((tmp_path / "ckpt" / "train_state.json").read_text())
    assert (state["world"], state["dp"], state["tp"]) == (4, 2, 2)
