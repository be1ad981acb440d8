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
import sys
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


# ---------------------------------------------------------------------------- reading safetensors
_TAGS = {tag: getattr(torch, name) for tag, name in (
    ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"), ("I64", "int64"),
    ("I32", "int32"), ("I16", "int16"), ("I8", "int8"), ("U8", "uint8"), ("BOOL", "bool"), ("U16", "uint16"),
    ("U32", "uint32"), ("U64", "uint64"), ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"))
    if hasattr(torch, name)}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_CONVERT_CHUNK = 4 << 20  # bytes of the stored dtype converted at a time when reading into another dtype


class TensorFile:
    """A safetensors file read one tensor at a time with plain reads from one open descriptor, into
    fresh memory or straight into a given tensor (a model's own storage). Unlike a memory map,
    nothing of the file stays resident after a read, so loading a model peaks at the model plus at
    most one tensor; and every read comes from the file that was opened, even if the path is
    replaced meanwhile (an atomic save). The header is checked as the safetensors format defines
    it (size, JSON, dtypes, shapes, offsets that tile the data exactly) before anything is read.
    Use as a context manager, or call close()."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = open(self.path, "rb", buffering=0)
        self._chunk: torch.Tensor | None = None  # bytes for converting reads, kept: a fresh buffer per tensor
        # would leave freed holes between the tensors read that the allocator keeps resident
        try:
            self._read_header()
        except BaseException:
            self.file.close()
            raise

    def _bad(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: not a readable safetensors file ({what}); it may be truncated or damaged")

    def _read_header(self) -> None:
        import os

        total = os.fstat(self.file.fileno()).st_size
        head = self.file.read(8)
        if len(head) < 8:
            raise self._bad("shorter than the 8-byte header length")
        size = int.from_bytes(head, "little")
        if size > min(_MAX_HEADER, total - 8):
            raise self._bad(f"a header of {size:,} bytes in a file of {total:,}")
        try:
            header = json.loads(self.file.read(size))
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._bad(f"the header is not JSON: {exc}") from None
        if not isinstance(header, dict):
            raise self._bad("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._bad("__metadata__ is not a mapping of strings")
        self.metadata: dict[str, str] = metadata
        self.base, data_size = 8 + size, total - 8 - size
        spans = []
        for name, info in header.items():
            ok = (isinstance(info, dict) and info.get("dtype") in _TAGS and isinstance(info.get("shape"), list)
                  and all(isinstance(d, int) and d >= 0 for d in info["shape"])
                  and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
                  and all(isinstance(o, int) for o in info["data_offsets"]))
            if not ok:
                raise self._bad(f"tensor '{str(name)[:80]}' has no valid dtype, shape and data_offsets")
            start, end = info["data_offsets"]
            numel = 1
            for d in info["shape"]:
                numel *= d
            if not 0 <= start <= end or end - start != numel * _TAGS[info["dtype"]].itemsize:
                raise self._bad(f"invalid shape, data type, or offset for tensor '{str(name)[:80]}'")
            spans.append((start, end))
        position = 0
        for start, end in sorted(spans):  # the tensors tile the data: no gap, no overlap, nothing beyond the end
            if start != position:
                raise self._bad("tensor data overlaps or leaves gaps")
            position = end
        if position != data_size:
            raise self._bad(f"the header describes {position:,} bytes of tensor data, the file holds {data_size:,}")
        self.entries = header

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self._chunk = None

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        return _TAGS[self.entries[name]["dtype"]]

    def read(self, name: str, out: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor `name`, read into `out` (contiguous, on the CPU, of its shape) if given, else into a
        fresh tensor of `dtype` (default: the file's). A floating-point tensor read into another
        floating-point dtype is converted chunk by chunk through one small buffer, so converting a
        float32 checkpoint to bfloat16 never holds a float32 copy of a whole tensor (whose freed
        memory the allocator would keep resident)."""
        stored, shape = self.dtype(name), self.shape(name)
        if out is None:
            out = torch.empty(shape, dtype=dtype or stored)
        if tuple(out.shape) != shape or out.device.type != "cpu" or not out.is_contiguous() or (
                out.dtype != stored and not (out.dtype.is_floating_point and stored.is_floating_point)):
            raise ValueError(f"{self.path}: cannot read '{name}' ({stored}, {shape}) into a {out.dtype} tensor "
                             f"of shape {tuple(out.shape)} on {out.device}")
        start, end = self.entries[name]["data_offsets"]
        if out.dtype == stored:
            self._read_bytes(name, out.detach().reshape(-1), self.base + start, end - start)
            return out
        flat, step = out.detach().reshape(-1), max(1, _CONVERT_CHUNK // stored.itemsize)
        if self._chunk is None or self._chunk.numel() < step * stored.itemsize:
            self._chunk = torch.empty(step * stored.itemsize, dtype=torch.uint8)
        buffer = self._chunk[:step * stored.itemsize].view(stored)  # one buffer for every read of this file
        for first in range(0, flat.numel(), step):
            part = buffer[:min(step, flat.numel() - first)]
            self._read_bytes(name, part, self.base + start + first * stored.itemsize, part.numel() * stored.itemsize)
            flat[first:first + part.numel()].copy_(part)  # converts on the way
        return out

    def _read_bytes(self, name: str, flat: torch.Tensor, offset: int, size: int) -> None:
        """Fill the 1-d tensor `flat` (of the file's dtype) with `size` bytes of the file at `offset`."""
        import os

        if size:
            view = memoryview(flat.view(torch.uint8).numpy()).cast("B")
            done = 0
            while done < size:  # one read returns at most ~2 GiB
                n = os.preadv(self.file.fileno(), [view[done:]], offset + done)
                if not n:
                    raise self._bad(f"the file ends inside tensor '{name}'")
                done += n
        if sys.byteorder != "little" and flat.dtype.itemsize > 1:  # the format is little-endian
            raw = flat.view(torch.uint8).reshape(-1, flat.dtype.itemsize)
            raw.copy_(raw.flip(-1))


# ---------------------------------------------------------------------------- save
def save_model(model: Any, path: str | Path) -> None:
    """Write ``model`` (an ArchModel) to ``path`` as safetensors with its spec; atomic."""
    from safetensors.torch import save_file

    from . import __version__
    from .atomic import replacing

    path = Path(path)
    if path.suffix != SUFFIX:
        hint = ("; archdsl.load_model still reads the .pt files of earlier versions"
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


def _check_tensor(path: Path, name: str, target: torch.Tensor, shape: tuple, dtype: torch.dtype,
                  dtype_name: str) -> None:
    """A file tensor must have exactly the shape and dtype the model built from the file's spec gives it."""
    if tuple(shape) != tuple(target.shape):
        raise ModelFileError(f"{path}: tensor '{name}' has shape {tuple(shape)}, the model's spec gives "
                             f"{tuple(target.shape)}")
    if dtype != target.dtype:
        raise ModelFileError(f"{path}: tensor '{name}' is {_dtype_name(dtype)} but the file says the model "
                             f"is {dtype_name}, which stores it as {_dtype_name(target.dtype)}")


def _place(path: Path, name: str, target: torch.Tensor, tensor: Any, dtype_name: str) -> None:
    """Copy one checked tensor into the model's storage."""
    if not isinstance(tensor, torch.Tensor):
        raise ModelFileError(f"{path}: '{name}' is a {type(tensor).__name__}, not a tensor")
    _check_tensor(path, name, target, tuple(tensor.shape), tensor.dtype, dtype_name)
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
    with TensorFile(path) as file:
        return _load_from(path, file, device)


def _load_from(path: Path, file: TensorFile, device: Any) -> Any:
    metadata = file.metadata
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
    keys = set(file.keys())
    _check_keys(path, keys, set(targets))
    _check_keys(path, set(checksums), keys)
    for name, target in targets.items():
        _check_tensor(path, name, target, file.shape(name), file.dtype(name), metadata["dtype"])
        direct = target.device.type == "cpu" and target.is_contiguous()
        tensor = file.read(name, out=target.detach() if direct else None)  # straight into the model's storage
        if tensor_digest(tensor) != checksums[name]:
            raise ModelFileError(f"{path}: tensor '{name}' does not match its checksum: the file was damaged "
                                 "or changed after it was saved")
        if not direct:
            _place(path, name, target, tensor, metadata["dtype"])
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
