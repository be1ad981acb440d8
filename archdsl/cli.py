"""The `archdsl` command.

validate and summary never import torch, so checking a spec is instant; build does.
Exit codes: 0 success, 1 spec error (printed as FILE:LINE:COL: path: message), 2 usage error.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import SpecError, printable


def _parse_sets(items: Sequence[str] | None, parser: argparse.ArgumentParser) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            parser.error(f"--set expects VAR=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()  # parsed as a YAML scalar by the loader
    return overrides


def _budget(text: str) -> int:
    """--max-params: a positive, finite number of parameters (2e12 is fine)."""
    from .ir import check_budget

    try:
        return check_budget(text, "--max-params")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _seed(text: str) -> int:
    """--seed: an integer torch's generator takes (64 bits), a usage error otherwise."""
    from .compiler import check_seed

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text[:40]}'") from None
    try:
        check_seed(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="VAR=VALUE", help="override a var (repeatable)")
    p.add_argument("--max-params", type=_budget, default=None, help="refuse specs with more parameters than this")


def _max_params(args: argparse.Namespace) -> int | None:
    return args.max_params


def _check_device(name: str, parser: argparse.ArgumentParser) -> None:
    """A usage error for a device torch cannot use here, before anything is built on it."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        parser.error(f"--device: '{name}' is not a torch device (cpu, cuda, cuda:1, mps or meta)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            parser.error(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        parser.error(f"--device {name}: MPS is not available here; use --device cpu")


def cmd_validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .loader import load_spec

    overrides, failed = _parse_sets(args.set, parser), 0
    for path in args.specs:
        try:
            spec = load_spec(Path(path), overrides=overrides, max_params=_max_params(args))
        except SpecError as exc:
            failed += 1
            for error in exc.errors:
                print(error, file=sys.stderr)
            continue
        print(_safe(f"{path}: ok ({spec.name})"))
    return 1 if failed else 0


def _safe(text: str) -> str:
    """Text for the terminal: a name from a spec may hold ANSI escapes or other control characters,
    which are printed as visible escapes (``\x1b[31m``) instead of acting on the terminal."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def cmd_summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import summary

    overrides, failed = _parse_sets(args.set, parser), 0
    for k, path in enumerate(args.specs):
        try:
            table = summary(Path(path), overrides=overrides, seq_len=args.seq_len, max_params=_max_params(args),
                            context=args.context)
        except SpecError as exc:
            failed += 1
            for error in exc.errors:
                print(error, file=sys.stderr)
            continue
        print(("\n" if k else "") + _safe(str(table)))
    return 1 if failed else 0


def cmd_build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from .compiler import compile_spec

    overrides = _parse_sets(args.set, parser)
    _check_device(args.device, parser)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    start = time.perf_counter()
    model = compile_spec(Path(args.spec), overrides=overrides, device=args.device, dtype=dtype, seed=args.seed,
                         max_params=_max_params(args))
    built = time.perf_counter() - start
    print(f"{model.spec.name}: {model.num_parameters():,} parameters, built in {built:.2f}s on {args.device}")
    if args.device == "meta":
        return 0
    if "image" in model.graph.graph["inputs"]:  # random pixel values (batch, channels, height, width)
        from .blocks.vision import random_images

        tokens = random_images(model, args.batch, device=args.device)
    else:
        first_embedding = next(iter(model.graph.graph["embeddings"].values()))
        vocab = model.get_submodule(first_embedding).weight.shape[0]
        tokens = torch.randint(0, vocab, (args.batch, args.seq_len), device=args.device)
    model.eval()
    with torch.inference_mode():
        model(tokens)  # warm-up
        start = time.perf_counter()
        out = model(tokens)
        elapsed = time.perf_counter() - start
    shape = tuple(out[0].shape) if isinstance(out, tuple) else tuple(out.shape)
    what = "pixels" if tokens.dim() == 4 else "tokens"
    print(f"forward on {what} {tuple(tokens.shape)} -> {shape} in {elapsed * 1000:.1f} ms")
    return 0


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'")
    return value


def _number(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got '{text}'")
    return value


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .training import train

    overrides = _parse_sets(args.set, parser)
    if args.device != "cpu":
        _check_device(args.device, parser)
    settings = {k: getattr(args, k) for k in ("steps", "batch", "seq_len", "lr", "min_lr", "warmup", "weight_decay",
                                              "grad_clip", "eval_every", "eval_windows", "checkpoint_every", "seed",
                                              "val_fraction", "bf16", "activation_checkpointing", "device",
                                              "tokenizer") if getattr(args, k) is not None}
    result = train([Path(s) for s in args.specs], [Path(d) for d in args.data], overrides=overrides, out=args.out,
                   resume=args.resume, stop_at=args.stop_at, fsdp=args.fsdp, tp=args.tp, progress=not args.no_progress,
                   max_params=_max_params(args), **settings)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"data: {result.tokens:,} tokens; unigram entropy {result.unigram_entropy:.3f} nats/token")
    width = max(len(r.name) for r in result.runs)
    for r in result.runs:
        val = f"val loss {r.val_loss:.4f} (ppl {r.val_ppl:.2f})" if r.val_loss is not None else "no validation"
        speed = f", {r.tokens_per_s:,.0f} tokens/s" if r.tokens_per_s else ""
        print(_safe(f"{r.name:<{width}}  {r.params:>12,} params  {r.steps} steps  {val}{speed}  -> {r.directory}"))
    if result.plot is not None:
        print(f"loss curves: {result.plot}")
    for note in result.notes:
        print(_safe(f"note: {note}"), file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .parallel import convert_checkpoint

    model = convert_checkpoint(Path(args.checkpoint), Path(args.output))
    print(_safe(f"{args.output}: {model.spec.name}, {model.num_parameters():,} parameters (load it with "
                "archdsl.load_model)"))
    return 0


def cmd_schema(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .schema import json_schema_text

    text = json_schema_text(include_plugins=not args.builtin)
    if args.output:
        from .atomic import write_text

        write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_kinds(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .kinds import REGISTRY

    problems = REGISTRY.load_all()  # installed plugins too
    if args.reference:
        from .reference import section

        print(section(include_plugins=True))
    else:
        for kind in REGISTRY:
            print(f"{kind.name:<18} {kind.spec.family:<15} {kind.origin}")
    for problem in problems:
        print(f"archdsl kinds: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_import_hf(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        from .interop.hf import import_hf_main
    except ImportError as exc:  # pragma: no cover - depends on the environment
        print(f"archdsl import-hf needs transformers: pip install 'archdsl[hf]' ({exc})", file=sys.stderr)
        return 1
    try:
        return import_hf_main(args.config, args.output, verify=not args.no_verify)
    except ImportError as exc:
        print(f"archdsl import-hf needs transformers: pip install 'archdsl[hf]' ({exc})", file=sys.stderr)
        return 1


def make_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="archdsl", description="Write transformer architectures as YAML; "
                                     "validate, summarise, build and draw them.")
    parser.add_argument("--version", action="version", version=f"archdsl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check specs (no torch)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _add_spec_options(p)
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("summary", help="parameters, shapes and FLOPs per block (no torch)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--seq-len", type=_positive_int, default=None, help="context length for attention FLOPs")
    p.add_argument("--context", type=_positive_int, default=None, metavar="N",
                   help="also report decode-state memory at context N per layer kind (KV grows, SSM state does not)")
    _add_spec_options(p)
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("build", help="compile to PyTorch and run one forward pass on random tokens")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or meta (build without weights)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the weights and of the forward pass (default: float32)")
    p.add_argument("--batch", type=_positive_int, default=1, help="rows of random input in the timed forward pass "
                   "(default: 1)")
    p.add_argument("--seq-len", type=_positive_int, default=64, help="tokens per row of the random input (default: 64); "
                   "an image model reads one image per row instead")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the weight initialisation and of the random input "
                   "(default: 0)")
    _add_spec_options(p)
    p.set_defaults(run=cmd_build)

    from .diagram import add_render_arguments

    add_render_arguments(sub.add_parser("render", help="draw the architecture: svg, png, pdf, dot or mermaid (no torch)"))

    p = sub.add_parser("train", help="train specs on local text and compare them in one plot (torch; torchrun for "
                       "FSDP / tensor parallel)", description="Next-token training of each SPEC on the same "
                       "batches of local text; metrics.jsonl and checkpoints per spec, one loss.png for all. "
                       "--set applies to every SPEC that has the var.")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--data", nargs="+", action="extend", required=True, metavar="PATH",
                   help="text files or folders of them (UTF-8)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--steps", type=_positive_int, help="optimizer steps (default: 200)")
    p.add_argument("--batch", type=_positive_int, help="windows per step, all ranks together (default: 8)")
    p.add_argument("--seq-len", type=_positive_int, help="tokens per window (default: 128)")
    p.add_argument("--lr", type=_number, help="peak learning rate (default: 3e-3)")
    p.add_argument("--min-lr", type=_number, help="learning rate at the end of the cosine (default: lr / 10)")
    p.add_argument("--warmup", type=_nonneg_int, help="linear warm-up steps (default: steps / 10, at most 100)")
    p.add_argument("--weight-decay", type=_number, help="AdamW weight decay of matrices (default: 0.1)")
    p.add_argument("--grad-clip", type=_number, help="clip the gradient norm to this; 0: off (default: 1.0)")
    p.add_argument("--eval-every", type=_nonneg_int, help="validate every N steps, and at the end (default: 50)")
    p.add_argument("--eval-windows", type=_positive_int, help="held-out windows per validation (default: 32)")
    p.add_argument("--checkpoint-every", type=_nonneg_int, help="a resumable checkpoint every N steps (default: 0, "
                   "none but the final model)")
    p.add_argument("--resume", action="store_true", help="continue each spec from its latest checkpoint in --out")
    p.add_argument("--stop-at", type=_positive_int, metavar="STEP", help="end this run after STEP with a checkpoint "
                   "(the schedule stays that of --steps); --resume continues it")
    p.add_argument("--seed", type=_seed, help="seed of the weights, the batches and dropout (default: 0)")
    p.add_argument("--val-fraction", type=float, help="share of the tokens held out for validation (default: 0.1)")
    p.add_argument("--tokenizer", metavar="TOKENIZER_JSON", help="a local Hugging Face tokenizer.json (default: "
                   "UTF-8 bytes, vocab 256)")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast")
    p.add_argument("--activation-checkpointing", action="store_true", default=None,
                   help="recompute each repeated layer in the backward (less memory, more compute)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--fsdp", action="store_true", help="under torchrun: shard parameters, gradients and optimizer "
                   "state (FSDP2; each repeated layer, the embeddings and the head are units)")
    p.add_argument("--tp", type=_positive_int, default=1, help="under torchrun: tensor-parallel degree K (the "
                   "processes form a (N/K data) x (K tensor) mesh)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_spec_options(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("convert", help="a distributed (torch.distributed.checkpoint) checkpoint of archdsl train "
                       "-> one safetensors model file")
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="a checkpoint-NNNNNNN folder of a distributed run")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("import-hf", help="write a spec from a Hugging Face config.json (needs transformers)")
    p.add_argument("config", metavar="CONFIG_JSON")
    p.add_argument("-o", "--output", default=None, help="spec file to write (default: print it)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not compare the spec with the transformers model of the config (built on meta)")
    p.set_defaults(run=cmd_import_hf)

    p = sub.add_parser("kinds", help="list the node kinds, built in and from installed plugins (no torch)")
    p.add_argument("--reference", action="store_true",
                   help="print the language reference of every kind, plugins included (markdown)")
    p.set_defaults(run=cmd_kinds)

    p = sub.add_parser("schema", help="print the JSON Schema of the spec language (for editors)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--builtin", action="store_true", help="only the built-in kinds (default: installed plugins too)")
    p.set_defaults(run=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, parser)
    except SpecError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as exc:  # e.g. a sequence longer than the learned positions
        print(f"archdsl {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an output path that cannot be written, an input that cannot be read
        where = f": {exc.filename}" if exc.filename else ""
        print(f"archdsl {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
