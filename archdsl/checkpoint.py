"""Model files: ``ArchModel.save`` writes safetensors; ``load_model`` reads them (and older ``.pt`` files).

A model file is untrusted input, so it is data only: safetensors holds tensors and a string
header, and nothing in it can run code (the legacy ``.pt`` path uses ``torch.load(weights_only=True)``).
The header's metadata carries everything needed to rebuild the model:

==================  ================================================================
``format``          ``archdsl.model`` (a safetensors file from elsewhere is refused)
``format_version``  ``1``
``archdsl_version`` the version that wrote it
``spec``            the spec as YAML text (always text: it is never read as a path)
``dtype``           the parameter dtype the model was built in (float32, bfloat16, ...)
``checksums``       JSON ``{tensor name: sha256}``; each digest covers the tensor's dtype,
                    shape and bytes, so a flipped byte or a changed dtype tag is caught
``sha256``          the digest of every other metadata entry, so the spec cannot change either
==================  ================================================================

Tied weights (an LM head sharing the embedding) are stored once, under the name the model's
``state_dict`` lists first; the spec re-ties them on load. Writes are atomic (archdsl.atomic).
Loading builds the model on ``meta``, allocates it, and copies each tensor into place as it is
read and verified, so the peak memory is the model plus its largest tensor.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

FORMAT = "archdsl.model"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_LEGACY_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class ModelFileError(ValueError):
    """A model file that is not one archdsl wrote, or that was damaged or changed since."""


# ---------------------------------------------------------------------------- shared helpers
def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict with tied entries once (first name wins); works on `meta` too, as
    ties are found by object identity, not by storage address."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict(keep_vars=True).items():
        if id(value) not in seen:
            seen.add(id(value))
            out[name] = value
    return out


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of ``"<dtype> <shape>\\n"`` followed by the tensor's bytes (row-major, native little-endian)."""
    h = hashlib.sha256(f"{str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}\n".encode())
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    if data.numel():
        h.update(data.view(torch.uint8).numpy())
    return h.hexdigest()


def _metadata_digest(metadata: dict[str, str]) -> str:
    body = json.dumps({k: v for k, v in sorted(metadata.items()) if k != "sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------- save
def save_model(model: Any, path: str | Path) -> None:
    """Write ``model`` (an ArchModel) to ``path`` as safetensors with its spec; atomic."""
    from safetensors.torch import save_file

    from . import __version__
    from .atomic import replacing

    path = Path(path)
    if path.suffix != SUFFIX:
        hint = (f"; archdsl.load_model still reads the .pt files of earlier versions"
                if path.suffix in _LEGACY_SUFFIXES else "")
        raise ValueError(f"{path}: model.save writes safetensors, so name the file with the {SUFFIX} suffix "
                         f"(e.g. {path.with_suffix(SUFFIX)}){hint}")
    state = unique_state(model)
    on_meta = [name for name, t in state.items() if t.device.type == "meta"]
    if on_meta:
        raise ValueError(f"cannot save '{model.spec.name}' to {path}: its weights are on 'meta' (not allocated; "
                         f"{on_meta[0]} and {len(on_meta) - 1} more); call model.materialize() and load or "
                         "initialise weights first")
    tensors = {name: t.detach().contiguous() for name, t in state.items()}
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "archdsl_version": __version__,
                "spec": model.spec.to_yaml(), "dtype": _dtype_name(dtype),
                "checksums": json.dumps({name: tensor_digest(t) for name, t in tensors.items()})}
    metadata["sha256"] = _metadata_digest(metadata)
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


# ---------------------------------------------------------------------------- load
def load_model(path: str | Path, *, device: Any = None) -> Any:
    """An ArchModel from a file written by ``ArchModel.save``: safetensors (verified against its
    checksums) or a ``.pt`` file of an earlier archdsl. Never runs code from the file."""
    path = Path(path)
    with open(path, "rb") as f:  # FileNotFoundError / IsADirectoryError name the path themselves
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0:
        return _load_safetensors(path, device)
    return _load_legacy(path, device)


def _build(path: Path, spec_text: Any, dtype_name: Any, device: Any) -> Any:
    from .compiler import _DTYPES, compile_spec
    from .loader import load_spec

    if not isinstance(spec_text, str):
        raise ModelFileError(f"{path}: the embedded spec must be YAML text, got {type(spec_text).__name__}")
    if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
        raise ModelFileError(f"{path}: unknown model dtype {str(dtype_name)[:40]!r} (expected one of "
                             f"{', '.join(_DTYPES)})")
    spec = load_spec(spec_text, text_name=f"{path} (embedded spec)")
    model = compile_spec(spec, device="meta", dtype=_DTYPES[dtype_name])
    return model.materialize(device or "cpu")  # allocated, untouched: pages become resident as tensors land


def _place(path: Path, name: str, target: torch.Tensor, tensor: Any, dtype_name: str) -> None:
    """Copy one checked tensor into the model's storage."""
    if not isinstance(tensor, torch.Tensor):
        raise ModelFileError(f"{path}: '{name}' is a {type(tensor).__name__}, not a tensor")
    if tuple(tensor.shape) != tuple(target.shape):
        raise ModelFileError(f"{path}: tensor '{name}' has shape {tuple(tensor.shape)}, the model's spec gives "
                             f"{tuple(target.shape)}")
    if tensor.dtype != target.dtype:
        raise ModelFileError(f"{path}: tensor '{name}' is {_dtype_name(tensor.dtype)} but the file says the model "
                             f"is {dtype_name}, which stores it as {_dtype_name(target.dtype)}")
    with torch.no_grad():
        target.copy_(tensor)


def _names(names: set[str], limit: int = 5) -> str:
    shown = sorted(names)
    return ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


def _check_keys(path: Path, have: set[str], want: set[str]) -> None:
    missing, extra = want - have, have - want
    if missing or extra:
        parts = ([f"missing {_names(missing)}"] if missing else []) + ([f"unexpected {_names(extra)}"] if extra else [])
        raise ModelFileError(f"{path}: its tensors do not match its spec: " + "; ".join(parts))


def _load_safetensors(path: Path, device: Any) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc}); it may be truncated or damaged") from None
    with handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ModelFileError(f"{path}: a safetensors file, but not a model written by ArchModel.save (no "
                                 f"'format: {FORMAT}' in its metadata); for a Hugging Face checkpoint folder use "
                                 "archdsl.interop.hf.from_pretrained")
        version = metadata.get("format_version", "")
        if version != str(FORMAT_VERSION):
            raise ModelFileError(f"{path}: model file format version {version[:20]!r}; this archdsl reads version "
                                 f"{FORMAT_VERSION} (a newer archdsl may have written it: upgrade)")
        if metadata.get("sha256") != _metadata_digest(metadata):
            raise ModelFileError(f"{path}: its metadata (spec, dtype or checksums) does not match its sha256: the "
                                 "file was damaged or changed after it was saved")
        try:
            checksums = json.loads(metadata.get("checksums", ""))
        except ValueError:
            checksums = None
        if not isinstance(checksums, dict):
            raise ModelFileError(f"{path}: its checksums are not a JSON mapping of tensor names to digests")
        model = _build(path, metadata.get("spec"), metadata.get("dtype"), device)
        targets = unique_state(model)
        keys = set(handle.keys())
        _check_keys(path, keys, set(targets))
        _check_keys(path, set(checksums), keys)
        for name, target in targets.items():
            tensor = handle.get_tensor(name)
            if tensor_digest(tensor) != checksums[name]:
                raise ModelFileError(f"{path}: tensor '{name}' does not match its checksum: the file was damaged "
                                     "or changed after it was saved")
            _place(path, name, target, tensor, metadata["dtype"])
            del tensor
    return model.eval()


def _load_legacy(path: Path, device: Any) -> Any:
    """A ``.pt`` file of archdsl ≤ 0.1 (torch.save of {archdsl, spec, dtype, state_dict}); weights_only."""
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one that would need code to unpickle
        raise ModelFileError(f"{path} is not a model written by ArchModel.save: neither safetensors nor a torch "
                             f"file that torch.load (weights only, which never runs code from the file) accepts "
                             f"({type(exc).__name__})") from None
    if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
        raise ModelFileError(f"{path} is not a model written by ArchModel.save (no spec and state_dict in it)")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelFileError(f"{path}: its state_dict is not a mapping of names to tensors")
    dtype_name = payload.get("dtype", "float32")
    model = _build(path, payload["spec"], dtype_name, device)
    targets = model.state_dict(keep_vars=True)  # every name, tied ones too: .pt files hold both copies
    _check_keys(path, set(state), set(targets))
    first: dict[int, str] = {}
    for name, target in targets.items():
        if id(target) in first:  # a tied copy: it must equal the weight it is tied to
            original = first[id(target)]
            if not (isinstance(state[name], torch.Tensor) and state[name].shape == state[original].shape
                    and torch.equal(state[name], state[original])):
                raise ModelFileError(f"{path}: '{name}' is tied to '{original}' by the spec but differs from it")
            continue
        first[id(target)] = name
        _place(path, name, target, state[name], dtype_name)
    return model.eval()
