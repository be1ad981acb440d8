"""Peak memory of one training step, each model measured in a fresh forked process.

    python benchmarks/memory.py '<json list of jobs>'     (run.py calls this; prints one JSON line per job)

CPU: what is measured is the resident-set growth of the process during one training step
(forward + backward + AdamW step, gradients freed before it): the kernel's high-water mark VmHWM is
reset through /proc/self/clear_refs just before the step and read after it; the figure is
VmHWM(after) - VmRSS(before). A warm-up step runs first so that the AdamW state already exists (it is
part of the baseline, not of the peak). This counts activations, gradients and temporaries as the
allocator really obtained them from the OS, in a process that has never run another model (every
job is forked from a parent that imported the libraries but never computed, so no memory is reused
across models, and OpenMP is first used in the child). run.py starts this worker with a fixed glibc mmap
threshold (MALLOC_MMAP_THRESHOLD_=65536): otherwise glibc raises the threshold after each large free, so
later tensors come from the heap and are not returned on free, and the figure depended on allocation
history (the GPT-2-shaped archdsl / reference ratio was 0.75, 1.00 and 1.41 in three runs; with the fixed
threshold two runs agree to 0.1 MiB).
CUDA: torch.cuda.max_memory_allocated() during the step minus memory_allocated() before it.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(job: dict) -> dict:
    import torch
    from torch.nn import functional as F

    import bench_models

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    model, logits_of = bench_models.build_for_training(job["impl"], job["arch"], job["size"], device)
    if model is None:
        return {**job, "skipped": True}
    V, B, S = job["size"]["vocab"], job["size"]["batch"], job["size"]["seq"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, S), generator=g).to(device)
    y = torch.randint(0, V, (B, S), generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits_of(model(x)).reshape(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # AdamW state allocated here
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {**job, "baseline": before, "peak_delta": peak - before, "what": "torch.cuda.max_memory_allocated"}
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS high-water mark to the current RSS
    step()
    peak = _status("VmHWM")
    return {**job, "baseline": before, "peak_delta": peak - before, "what": "VmHWM - VmRSS"}


def main(jobs: list[dict]) -> None:
    # import everything once in this parent, which never computes; each job runs in a forked child
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported lazily by the first optimizer step: ~1 s per child otherwise)

    import bench_models
    if any(job["impl"] not in ("archdsl", "reference") for job in jobs):
        bench_models.preload()
    for job in jobs:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                out = measure(job)
            except Exception as e:  # report, never hang the parent
                out = {**job, "error": f"{type(e).__name__}: {e}"}
            os.write(w, json.dumps(out).encode())
            os.close(w)
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        print(data.decode() if data else json.dumps({**job, "error": "worker died"}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
