#!/usr/bin/env python
"""Fuzz the spec loader for as long as asked: random mutations of every spec in specs/ and of --set.

    python benchmarks/fuzz_specs.py --minutes 5            # counts of each outcome, and the failures
    python benchmarks/fuzz_specs.py --cases 2000 --seed 7  # a fixed number of cases, reproducibly

Each case is one spec from specs/ with 1-3 random edits (tests/fuzzing.py: lines deleted, duplicated,
swapped or re-indented; control characters, YAML syntax, tags and expressions inserted; numbers and
names changed; nodes wrapped, multiplied or replaced in the parsed document) and, one case in three,
odd --set values. A case must end within tests/fuzzing.CASE_SECONDS in a located SpecError or in a
valid spec that round-trips through to_yaml; a crash or a hang is printed with the text that caused
it (saved under --save) and makes the exit status 1. tests/test_fuzz.py runs a few hundred of these
cases in CI.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import fuzzing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="run for this long (default: 1 minute)")
    parser.add_argument("--cases", type=int, default=None, help="run this many cases instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=Path("fuzz-failures"), help="folder for failing cases")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + 60 * (args.minutes if args.minutes is not None else 1.0)
    rng = random.Random(args.seed)
    texts = fuzzing.spec_texts()
    counts: collections.Counter[str] = collections.Counter()
    slowest = (0.0, "")
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = fuzzing.workdir(Path(tmp))
        while (args.cases is None and time.monotonic() < deadline) or (args.cases is not None and
                                                                       sum(counts.values()) < args.cases):
            name = rng.choice(sorted(texts))
            text = fuzzing.mutate(texts[name], rng, rounds=rng.choice([1, 1, 2, 3]))
            sets = fuzzing.mutate_sets(text, rng) if rng.random() < 1 / 3 else []
            outcome = fuzzing.check_case(text, sets, folder)
            counts[outcome.kind] += 1
            slowest = max(slowest, (outcome.seconds, f"{name} {outcome.kind}"))
            if outcome.kind in ("crash", "hang"):
                args.save.mkdir(parents=True, exist_ok=True)
                n = sum(counts[k] for k in ("crash", "hang"))
                saved = args.save / f"case{n:03d}-{name}"
                saved.write_text(text, encoding="utf-8", errors="surrogatepass")
                print(f"{outcome.kind}: {name} {sets}: {outcome.detail} (saved in {saved})", flush=True)
    total = sum(counts.values())
    elapsed = time.monotonic() - start
    print(f"{total} cases in {elapsed:.0f} s (seed {args.seed}): {counts['error']} clean errors, "
          f"{counts['valid']} valid (round-tripped), {counts['crash']} crashes, {counts['hang']} hangs; "
          f"slowest case {slowest[0]:.2f} s ({slowest[1]})")
    return 1 if counts["crash"] or counts["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
