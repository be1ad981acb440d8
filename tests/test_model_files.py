"""Model files and every other file archdsl writes: atomic writes, safetensors save/load round trips
of every spec, checksums, tampered and truncated files, legacy .pt files, and specs that survive
to_yaml/load_spec unchanged (no '$' doubling)."""
from __future__ import annotations

import errno
import json
import os
import re
import struct

import pytest
import torch
import yaml

import archdsl
from archdsl.checkpoint import ModelFileError
from conftest import ROOT, SPECS, need
from test_spec_library import tiny_overrides

SMALL = """
name: small
description: a small decoder with a tied head
vars: {vocab: 53, d: 16}
model:
  width: $d
  layers:
    - embedding: {name: tok, vocab: $vocab}
    - residual: [rmsnorm, {attention: {heads: 2, causal: true}}]
    - residual: [rmsnorm, {mlp: {hidden: 32, activation: swiglu}}]
    - rmsnorm
    - lm_head: {vocab: $vocab, tie: tok}
"""


def small(seed: int = 0, dtype=None):
    return archdsl.compile(SMALL, seed=seed, dtype=dtype).eval()


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


def assert_same_model(a, b):
    assert_same_state(a, b)
    assert a.spec == b.spec


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_round_trips_through_a_model_file(path, dtype, tmp_path):
    model = archdsl.compile(path, overrides=tiny_overrides(path), seed=0, dtype=dtype)
    model.save(tmp_path / "m.safetensors")
    loaded = archdsl.load_model(tmp_path / "m.safetensors")
    assert_same_model(model, loaded)
    assert next(loaded.parameters()).dtype == dtype
    for name, p in model.named_parameters(remove_duplicate=False):  # ties are ties again, not copies
        for other, q in model.named_parameters(remove_duplicate=False):
            if p is q:
                assert loaded.get_parameter(name) is loaded.get_parameter(other)


def test_tied_weights_are_stored_once_and_retied(tmp_path):
    from safetensors import safe_open

    model = small()
    model.save(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "tok.weight" in keys and "lm_head.weight" not in keys
    loaded = archdsl.load_model(tmp_path / "m.safetensors")
    assert loaded.lm_head.weight is loaded.tok.weight
    tokens = torch.randint(0, 53, (2, 6))
    assert torch.equal(model(tokens), loaded(tokens))


def test_metadata_holds_the_spec_text_version_and_dtype(tmp_path):
    from safetensors import safe_open

    small(dtype=torch.bfloat16).save(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "archdsl.model" and meta["format_version"] == "1"
    assert meta["archdsl_version"] == archdsl.__version__ and meta["dtype"] == "bfloat16"
    assert archdsl.load_spec(meta["spec"]) == small().spec
    assert set(json.loads(meta["checksums"])) == {"tok.weight", *(k for k in small().state_dict() if k != "lm_head.weight")}


def test_save_refuses_other_suffixes_and_unallocated_models(tmp_path):
    with pytest.raises(ValueError, match=r"writes safetensors.*m\.safetensors.*still reads the \.pt files"):
        small().save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="suffix"):
        small().save(tmp_path / "m")
    with pytest.raises(ValueError, match="on 'meta'"):
        archdsl.compile(SMALL, device="meta").save(tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ damaged and tampered files
def read_parts(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_parts(path, header, body):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.safetensors"
    small().save(path)
    return path


def test_a_flipped_byte_in_a_tensor_is_an_error_naming_file_and_tensor(saved):
    header, body = read_parts(saved)
    name, info = next((k, v) for k, v in header.items() if k != "__metadata__")
    start = info["data_offsets"][0]
    body = body[:start] + bytes([body[start] ^ 0x01]) + body[start + 1:]
    write_parts(saved, header, body)
    with pytest.raises(ModelFileError, match=re.escape(f"{saved}: tensor '{name}' does not match its checksum")):
        archdsl.load_model(saved)


def test_a_changed_spec_or_dtype_in_the_metadata_is_an_error(saved):
    header, body = read_parts(saved)
    for key, value in (("spec", header["__metadata__"]["spec"].replace("hidden: 32", "hidden: 33")),
                       ("dtype", "bfloat16")):
        changed = {**header, "__metadata__": {**header["__metadata__"], key: value}}
        write_parts(saved, changed, body)
        with pytest.raises(ModelFileError, match="metadata .* does not match its sha256"):
            archdsl.load_model(saved)


def test_a_bfloat16_tag_over_float32_data_is_an_error(saved):
    """The tag changed consistently (shape doubled so the byte count fits, digests recomputed as a forger
    would): the bytes are float32, the model's dtype says bfloat16; refused rather than reinterpreted."""
    from archdsl.checkpoint import _metadata_digest

    header, body = read_parts(saved)
    retagged = {k: (v if k == "__metadata__" else {**v, "dtype": "BF16"}) for k, v in header.items()}
    write_parts(saved, retagged, body)  # the tag alone: half the bytes a tensor of that shape needs
    with pytest.raises(ModelFileError, match="not a readable safetensors file.*invalid shape, data type, or offset for tensor"):
        archdsl.load_model(saved)
    meta = header.pop("__metadata__")
    checksums = json.loads(meta["checksums"])
    for name, info in header.items():
        info["dtype"], info["shape"] = "BF16", info["shape"][:-1] + [info["shape"][-1] * 2]
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[start:end]), dtype=torch.bfloat16).reshape(info["shape"])
        checksums[name] = archdsl.checkpoint.tensor_digest(t)
    meta = {**meta, "checksums": json.dumps(checksums)}
    meta["sha256"] = _metadata_digest(meta)
    write_parts(saved, {"__metadata__": meta, **header}, body)
    with pytest.raises(ModelFileError, match="has shape .* the model's spec gives"):
        archdsl.load_model(saved)  # float32 model, bf16-tagged tensors of twice the width
    meta = {**meta, "dtype": "bfloat16"}
    meta["sha256"] = _metadata_digest(meta)
    write_parts(saved, {"__metadata__": meta, **header}, body)
    with pytest.raises(ModelFileError, match="has shape"):
        archdsl.load_model(saved)


def test_a_tensor_of_the_wrong_dtype_is_named(tmp_path):
    """Consistent tags and digests, but tensors in float32 while the file says the model is bfloat16."""
    from archdsl.checkpoint import _metadata_digest

    path = tmp_path / "m.safetensors"
    small().save(path)
    header, body = read_parts(path)
    header["__metadata__"]["dtype"] = "bfloat16"
    header["__metadata__"]["sha256"] = _metadata_digest(header["__metadata__"])
    write_parts(path, header, body)
    with pytest.raises(ModelFileError, match=r"tensor '.*' is float32 but the file says the model is bfloat16"):
        archdsl.load_model(path)


@pytest.mark.parametrize("keep", [0, 5, 8, 20, -1, -100])
def test_a_truncated_file_is_an_error_naming_it(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(ModelFileError, match=re.escape(str(saved))):
        archdsl.load_model(saved)


def test_a_safetensors_file_from_elsewhere_is_refused_with_a_hint(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(archdsl.ModelFileError, match="not a model written by ArchModel.save.*from_pretrained"):
        archdsl.load_model(tmp_path / "model.safetensors")


def test_missing_and_extra_tensors_are_named(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    small().save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["extra"] = tensors.pop("rmsnorm.weight")
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="missing rmsnorm.weight; unexpected extra"):
        archdsl.load_model(path)


# ------------------------------------------------------------------------------ legacy .pt files
def legacy_save(model, path, **changes):
    """What ArchModel.save wrote before safetensors (archdsl 0.1)."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    payload = {"archdsl": 1, "spec": model.spec.to_yaml(), "dtype": dtype, "state_dict": model.state_dict()}
    torch.save({**payload, **changes}, str(path))


def test_legacy_pt_files_still_load(tmp_path):
    for dtype in (torch.float32, torch.bfloat16):
        model = small(dtype=dtype)
        legacy_save(model, tmp_path / "old.pt")
        loaded = archdsl.load_model(tmp_path / "old.pt")
        assert_same_model(model, loaded)
        assert loaded.lm_head.weight is loaded.tok.weight


def test_tampered_legacy_files_name_the_input(tmp_path, monkeypatch):
    model = small()
    state = model.state_dict()
    path = tmp_path / "old.pt"
    (tmp_path / "evil.yaml").write_text(SMALL)  # a spec given as a path must never be read from disk
    monkeypatch.chdir(tmp_path)
    cases = [
        ({"spec": "evil.yaml"}, archdsl.SpecError, "a spec is a mapping"),
        ({"spec": 5}, ModelFileError, "must be YAML text"),
        ({"dtype": "int8"}, ModelFileError, "unknown model dtype"),
        ({"dtype": "bfloat16"}, ModelFileError, "is float32 but the file says the model is bfloat16"),
        ({"state_dict": {k: v for k, v in state.items() if k != "rmsnorm.weight"}}, ModelFileError, "missing rmsnorm"),
        ({"state_dict": {**state, "rmsnorm.weight": torch.zeros(3)}}, ModelFileError, "has shape"),
        ({"state_dict": {**state, "rmsnorm.weight": [1.0] * 16}}, ModelFileError, "is a list, not a tensor"),
        ({"state_dict": {**state, "lm_head.weight": state["lm_head.weight"] + 1}}, ModelFileError, "tied to"),
        ({"state_dict": [1, 2]}, ModelFileError, "not a mapping"),
    ]
    for change, error, message in cases:
        legacy_save(model, path, **change)
        with pytest.raises(error) as info:
            archdsl.load_model(path)
        assert message in str(info.value), (change.keys(), str(info.value))
        assert str(path) in str(info.value), str(info.value)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"spec": SMALL, "state_dict": {}, "x": Evil()}, str(tmp_path / "evil.pt"))
    with pytest.raises(ModelFileError, match="weights only"):
        archdsl.load_model(tmp_path / "evil.pt")
    assert not marker.exists()


# ------------------------------------------------------------------------------ atomic writes
def test_a_failed_save_leaves_the_previous_file_byte_identical(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "m.safetensors"
    small(seed=0).save(path)
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        small(seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # the temporary file is gone
    monkeypatch.undo()
    assert_same_model(archdsl.load_model(path), small(seed=0))


def cli_outputs(tmp_path):
    """(argv, output path) for every command that writes a file."""
    need("transformers")
    import transformers

    transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2).save_pretrained(tmp_path)
    gpt2 = str(ROOT / "specs" / "gpt2.yaml")
    return [(["render", gpt2, "-o", str(tmp_path / "out.dot")], tmp_path / "out.dot"),
            (["render", gpt2, "-o", str(tmp_path / "out.mmd")], tmp_path / "out.mmd"),
            (["render", gpt2, "-o", str(tmp_path / "out.svg")], tmp_path / "out.svg"),
            (["schema", "-o", str(tmp_path / "schema.json")], tmp_path / "schema.json"),
            (["import-hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "spec.yaml")], tmp_path / "spec.yaml")]


def test_every_command_that_writes_a_file_keeps_the_old_one_when_the_write_fails(tmp_path, monkeypatch, capsys):
    """A disk that fills up at fsync: each output keeps its previous content and no temporary file is left."""
    from archdsl.cli import main

    for argv, out in cli_outputs(tmp_path):
        out.write_text("the previous, good file\n")
        real_fsync = os.fsync

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        assert main(argv) == 1, argv
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert "No space left on device" in capsys.readouterr().err
        assert out.read_text() == "the previous, good file\n", argv
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], argv
        assert main(argv) == 0, argv  # and with a working disk the file is replaced
        assert out.read_text() != "the previous, good file\n"
        capsys.readouterr()


def test_writes_keep_permissions_and_symlinks(tmp_path):
    from archdsl.atomic import write_text

    target = tmp_path / "real.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "fresh.txt"
    write_text(fresh, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def _save_repeatedly(models, path, times):
    for i in range(times):
        models[i % 2].save(path)


def test_a_concurrent_reader_never_sees_a_half_written_file(tmp_path):
    """Another process saves two different models over the same path again and again; every load in
    the meantime succeeds and returns one of the two whole models."""
    import multiprocessing

    path = tmp_path / "m.safetensors"
    models = [archdsl.compile(SMALL, overrides={"d": 128, "vocab": 4000}, seed=s).eval() for s in (0, 1)]
    models[0].save(path)
    expected = [m.tok.weight.detach().clone() for m in models]
    writer = multiprocessing.get_context("fork").Process(target=_save_repeatedly, args=(models, path, 60))
    writer.start()
    loads = 0
    try:
        while writer.is_alive() or loads < 5:
            loaded = archdsl.load_model(path)
            assert any(torch.equal(loaded.tok.weight, w) for w in expected)
            loads += 1
    finally:
        writer.join()
    assert writer.exitcode == 0 and loads >= 5


def test_every_writer_in_the_package_goes_through_archdsl_atomic():
    """The class, not the instances: no direct file writes anywhere in archdsl/ outside atomic.py."""
    direct = re.compile(r"\.write_(text|bytes)\(|open\([^)]*[\"'][wa]b?\+?[\"']|torch\.save\(|save_file\(|savefig\(")
    offenders = []
    for path in sorted((ROOT / "archdsl").rglob("*.py")):
        if path.name == "atomic.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if direct.search(line) and "replacing(" not in line and "tmp" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------------------------ specs survive to_yaml
TRICKY = ["costs $5", "$", "$$", "$$$", "a $$ b", "${", "$x", "${d}", "100%", "tab\there", "ünï", "'q'", '"', "#", ": x"]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_survives_to_yaml_with_tricky_vars(path):
    spec = archdsl.load_spec(path)
    assert archdsl.load_spec(spec.to_yaml()) == spec
    doc = yaml.safe_load(path.read_text())
    if "extends" in doc:
        return  # its vars live in the file it extends; the plain round trip above covers it
    doc.setdefault("vars", {}).update({"note_list": TRICKY, "note_map": {f"k{i}": s for i, s in enumerate(TRICKY)},
                                       "note_nested": [{"a": TRICKY}, [TRICKY[:3]]]})
    spec = archdsl.load_spec(doc)
    assert spec.vars["note_list"] == TRICKY
    again = spec
    for _ in range(3):  # no growth at each save/load
        again = archdsl.load_spec(again.to_yaml())
        assert again == spec


def test_strings_with_dollars_survive_save_and_load(tmp_path):
    text = SMALL.replace("name: small", "name: 'cost $$5'").replace(
        "description: a small decoder with a tied head", "description: 'costs $$5 per $$$$'").replace(
        "vars: {vocab: 53, d: 16}", "vars: {vocab: 53, d: 16, price: 'costs $$5', notes: ['costs $5', {k: '$$'}]}")
    model = archdsl.compile(text, seed=0)
    assert model.spec.name == "cost $5" and model.spec.vars["notes"] == ["costs $5", {"k": "$$"}]
    assert model.spec.vars["price"] == "costs $5"
    path = tmp_path / "m.safetensors"
    for _ in range(3):
        model.save(path)
        model = archdsl.load_model(path)
    assert model.spec == archdsl.load_spec(text)


# ------------------------------------------------------------------------------ ids and seeds
def test_token_ids_of_other_integer_dtypes():
    """As nn.Embedding (and so transformers): long and int32 ids work, other integer dtypes are refused by name."""
    model = small()
    tokens = torch.randint(0, 53, (2, 5))
    assert torch.equal(model(tokens.int()), model(tokens))
    assert torch.equal(model.generate(tokens.int(), 3), model.generate(tokens, 3))
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.uint16, torch.bool):
        with pytest.raises(ValueError, match=rf"tokens must be integer ids of dtype torch.long or torch.int32, got {dtype}"):
            model(tokens.to(dtype))
        with pytest.raises(ValueError, match="tokens.long()"):
            model.generate(tokens.to(dtype), 2)
    with pytest.raises(ValueError, match="position_ids must be integer ids"):
        model(tokens, position_ids=torch.arange(5).to(torch.uint8).expand(2, 5))


def test_seeds_beyond_64_bits_are_clear_errors(capsys):
    from archdsl.cli import main

    assert archdsl.compile(SMALL, seed=2 ** 64 - 1, device="cpu") is not None
    for seed in (2 ** 64, -(2 ** 63) - 1, 10 ** 5000):
        with pytest.raises(ValueError, match="does not fit torch's 64-bit generator"):
            archdsl.compile(SMALL, seed=seed)
    with pytest.raises(SystemExit) as exc:
        main(["build", str(ROOT / "specs" / "gpt2.yaml"), "--seed", "99999999999999999999999"])
    assert exc.value.code == 2
    assert "seed 99999999999999999999999 does not fit" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Hugging Face shard index
@pytest.mark.parametrize("index,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "needs a non-empty 'weight_map'"),
    ('{"metadata": {}}', "needs a non-empty 'weight_map'"),
    ('{"weight_map": {}}', "needs a non-empty 'weight_map'"),
    ('{"weight_map": {"a": ["x"]}}', "not .safetensors files in the same folder"),
    ('{"weight_map": {"a": "../elsewhere.safetensors"}}', "not .safetensors files in the same folder"),
])
def test_a_malformed_shard_index_is_an_error_naming_it(tmp_path, index, message):
    from archdsl.interop.hf import load_safetensors

    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "model.safetensors.index.json")) + ".*" + re.escape(message)):
        load_safetensors(tmp_path)


# ------------------------------------------------------------------------------ reading safetensors in place
def test_tensor_file_reads_what_the_safetensors_library_reads(tmp_path):
    from safetensors.torch import load_file, save_file

    from archdsl.checkpoint import TensorFile

    g = torch.Generator().manual_seed(0)
    tensors = {"f32": torch.randn(3, 5, generator=g), "bf16": torch.randn(7, generator=g).bfloat16(),
               "f16": torch.randn(2, 2, generator=g).half(), "f64": torch.randn(4, generator=g).double(),
               "i64": torch.arange(6).reshape(2, 3), "i32": torch.arange(3, dtype=torch.int32),
               "u8": torch.arange(5, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"k": "v"})
    expected = load_file(str(tmp_path / "t.safetensors"))
    with TensorFile(tmp_path / "t.safetensors") as f:
        assert f.metadata == {"k": "v"} and set(f.keys()) == set(tensors)
        for name, t in expected.items():
            got = f.read(name)
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t), name
            into = torch.empty_like(t)
            assert f.read(name, out=into) is into and torch.equal(into, t)
        with pytest.raises(ValueError, match="cannot read 'i64'"):
            f.read("i64", out=torch.empty(2, 3, dtype=torch.float32))
        with pytest.raises(ValueError, match="cannot read 'f32'"):
            f.read("f32", out=torch.empty(5, 3))


@pytest.mark.parametrize("chunk", [4, 12, 1 << 20], ids=["one-element", "three-elements", "whole"])
def test_tensor_file_converts_floating_point_while_reading(tmp_path, monkeypatch, chunk):
    """Reading into another floating-point dtype goes through a chunk buffer (of `chunk` bytes); every
    chunking must give exactly what converting the whole tensor gives, and integers are never converted."""
    from safetensors.torch import save_file

    from archdsl import checkpoint
    from archdsl.checkpoint import TensorFile

    monkeypatch.setattr(checkpoint, "_CONVERT_CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    tensors = {"f32": torch.randn(7, 5, generator=g) * 1e3, "bf16": torch.randn(11, generator=g).bfloat16(),
               "empty": torch.zeros(0, 4), "i64": torch.arange(6)}
    save_file(tensors, str(tmp_path / "t.safetensors"))
    with TensorFile(tmp_path / "t.safetensors") as f:
        for name in ("f32", "bf16", "empty"):
            for dtype in (torch.bfloat16, torch.float16, torch.float64):
                got = f.read(name, dtype=dtype)
                assert got.dtype == dtype and torch.equal(got, tensors[name].to(dtype)), (name, dtype)
                into = torch.full_like(tensors[name], float("nan"), dtype=dtype)
                assert f.read(name, out=into) is into and torch.equal(into, tensors[name].to(dtype))
        assert f.read("i64", dtype=torch.int64).dtype == torch.int64


def test_tensor_file_checks_the_header_as_the_format_defines_it(tmp_path):
    from safetensors.torch import save_file

    from archdsl.checkpoint import TensorFile

    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.ones(2)}, str(path))
    header, body = read_parts(path)
    a, b = header["a"], header["b"]
    cases = {
        "overlaps or leaves gaps": {"a": {**a, "data_offsets": [0, 16]}, "b": {**b, "data_offsets": [8, 16]}},
        "invalid shape, data type, or offset": {"a": {**a, "shape": [5]}, "b": b},
        "no valid dtype": {"a": {**a, "dtype": "F33"}, "b": b},
        "describes": {"a": a},
    }
    for message, changed in cases.items():
        write_parts(path, changed, body)
        with pytest.raises(ModelFileError, match=message):
            TensorFile(path)
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ModelFileError, match="a header of"):
        TensorFile(path)
    path.write_bytes(struct.pack("<Q", 3) + b"{x}")
    with pytest.raises(ModelFileError, match="not JSON"):
        TensorFile(path)


def test_a_file_replaced_while_it_is_read_is_read_whole_from_the_one_opened(tmp_path):
    from archdsl.checkpoint import TensorFile

    path = tmp_path / "m.safetensors"
    small(seed=0).save(path)
    with TensorFile(path) as f:
        small(seed=1).save(path)  # atomic: a new file under the same name
        assert torch.equal(f.read("tok.weight"), small(seed=0).tok.weight)


def _family_checkpoints():
    need("transformers")
    from test_hf_parity import hf_model

    return hf_model


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "mixtral", "qwen2_moe", "deepseek_v3", "granitemoe"])
def test_in_place_loading_gives_the_state_dict_of_the_copying_converter(tmp_path, family, dtype):
    """from_pretrained reads each tensor into place (fused projections straight into their slices); it must give
    exactly what from_hf gives by copying from the live transformers model, ties kept, no storage shared."""
    from archdsl.interop import hf

    hf_model = _family_checkpoints()
    reference = hf_model(family)
    reference.save_pretrained(tmp_path, max_shard_size="50KB")
    loaded = hf.from_pretrained(tmp_path, dtype=dtype)
    expected = hf.from_hf(reference, dtype=dtype)
    assert_same_state(expected, loaded)  # (the specs differ in name only: from_hf names it from the model)
    params = dict(loaded.named_parameters())  # tied names once
    storages = [p.untyped_storage().data_ptr() for p in params.values() if p.numel()]
    assert len(storages) == len(set(storages)), "two parameters share one storage"
    for name, p in expected.named_parameters(remove_duplicate=False):
        for other, q in expected.named_parameters(remove_duplicate=False):
            if p is q:
                assert loaded.get_parameter(name) is loaded.get_parameter(other)


def test_in_place_loading_of_an_encoder_decoder(tmp_path):
    need("transformers")
    from test_encoder_decoder import _hf_model

    from archdsl.interop import hf

    for name in ("t5", "bart"):
        reference = _hf_model(name)
        reference.save_pretrained(tmp_path / name)
        assert_same_state(hf.from_hf(reference), hf.from_pretrained(tmp_path / name))


def test_from_pretrained_closes_its_files(tmp_path):
    from archdsl.interop import hf

    hf_model = _family_checkpoints()
    hf_model("llama").save_pretrained(tmp_path, max_shard_size="50KB")
    before = len(os.listdir("/proc/self/fd"))
    hf.from_pretrained(tmp_path)
    assert len(os.listdir("/proc/self/fd")) == before
