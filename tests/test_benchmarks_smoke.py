"""The benchmark harness runs (tiny sizes, one or two repetitions), so that it cannot rot.

Never a timed assertion: only that benchmarks/run.py --smoke exits 0 and prints its ratio table. The
x-transformers column is filled only where that package (the bench extra) is installed, the harness
skips it otherwise; transformers is in the test extra, so the Hugging Face checks always run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import need

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_harness_smoke():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    header = next((line for line in out.splitlines() if line.startswith("| measurement |")), None)
    assert header is not None, out[-3000:]
    for column in ("archdsl", "reference", "archdsl/ref", "archdsl/HF sdpa", "archdsl/x-t"):
        assert f" {column} |" in header
    rows = [line for line in out.splitlines() if line.startswith("| ") and line != header]
    labels = " ".join(rows)
    for what in ("train step", "inference forward", "build", "peak memory"):
        assert what in labels, what
    need("transformers")  # the reference and HF models got archdsl's weights and were checked equal before timing
    assert "equal archdsl's (checked)" in out
    load = next(r for r in rows if "load from_pretrained" in r and "peak RSS" in r)  # each loader ran
    assert [c.strip() for c in load.strip("|").split("|")][1] != "–"
    assert "load_model of the same weights" in labels
    train = next(r for r in rows if "train step" in r)
    cells = [c.strip() for c in train.strip("|").split("|")]
    assert cells[1] != "–" and cells[2] != "–"  # archdsl and reference timed
    names = [c.strip() for c in header.strip("|").split("|")]
    assert cells[names.index("archdsl/ref")] != "–"  # archdsl / reference ratio
    for what in ("decode step", "MoE train step", "MoE greedy generate"):  # the speed sections ran
        assert what in labels, what
    assert "greedy generate" in labels


def test_decode_profile_accounts_for_the_step():
    """`benchmarks/decode.py --profile` (the "where the time goes" table of docs/benchmarks.md) runs and
    reports every group, the matmuls among them, for both shapes and batches."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decode.py"), "--profile", "--mode", "smoke",
                           "--steps", "3", "--threads", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    heads = [line for line in proc.stdout.splitlines() if "decode steps" in line]
    assert len(heads) == 4 and all("ms per step" in h for h in heads), proc.stdout
    assert proc.stdout.count("matmuls (the bound's work)") == 4 and proc.stdout.count("Python and dispatch") == 4
