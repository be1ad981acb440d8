"""Compile a spec from Python, inspect it, and train it for a few steps on a toy task.

    python examples/compile_and_train.py
"""
from pathlib import Path

import torch

import archdsl

SPECS = Path(__file__).resolve().parent.parent / "specs"

# 1. Load with overrides: the Llama-3 architecture at a size that trains in seconds on a CPU.
spec = archdsl.load_spec(SPECS / "llama-small.yaml",
                         overrides={"layers": 2, "d_model": 128, "heads": 4, "kv_heads": 2, "ffn": 256, "vocab": 64})
print(archdsl.summary(spec))

# 2. Compile: an ordinary nn.Module whose state_dict keys mirror the spec.
model = archdsl.compile(spec, seed=0)
print(list(model.state_dict())[:4])

# 3. Train next-token prediction on a repeating sequence.
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
data = torch.arange(64).repeat(8, 2)[:, :65] % 64  # (8, 65) counting sequences
for step in range(30):
    logits = model(data[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), data[:, 1:].reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 10 == 0 or step == 29:
        print(f"step {step:2d}  loss {loss.item():.3f}")

# 4. Save spec + weights in one file and load them back.
model.save("/tmp/llama-small.safetensors")  # safetensors: tensors and the spec as data, no pickle
restored = archdsl.load_model("/tmp/llama-small.safetensors")
print("restored:", restored.num_parameters(), "parameters")
