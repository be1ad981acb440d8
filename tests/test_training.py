"""archdsl train: it learns real text, compares specs on identical batches in one plot, resumes bit for
bit, trains every family (decoder, encoder-decoder, LSTM, conv hybrid), and refuses bad input clearly."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archdsl
from conftest import need
from archdsl.data import ByteTokenizer, DataError, load_corpus, train_batch
from archdsl.training import TrainConfig, TrainError, checkpoint_activations, objective_for

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests" / "fixtures" / "text" / "archdsl-language.md"  # 44 KB of English and YAML, frozen (docs change)
LLAMA = ROOT / "specs" / "llama-small.yaml"
GPT2 = ROOT / "specs" / "gpt2.yaml"
TINY_LLAMA = {"layers": 1, "d_model": 32, "heads": 2, "kv_heads": 1, "ffn": 64, "vocab": 256}
TINY_GPT2 = {"layers": 1, "d_model": 32, "heads": 2, "vocab": 256, "context": 64}
FAST = {"batch": 8, "seq_len": 32, "eval_windows": 8, "progress": False}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and do not fight other processes for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_200_steps_on_real_text_go_well_below_the_unigram_entropy(tmp_path):
    result = archdsl.train(LLAMA, TEXT, overrides=TINY_LLAMA, steps=200, lr=1e-2, eval_every=100, out=tmp_path,
                           **FAST)
    run = result.runs[0]
    assert 3.3 < result.unigram_entropy < 3.5  # bytes of English + YAML
    assert run.val_loss < result.unigram_entropy - 0.4, (run.val_loss, result.unigram_entropy)
    assert run.val_ppl == pytest.approx(math.exp(run.val_loss), rel=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "llama-small" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 201))
    assert [r["step"] for r in rows if "val_loss" in r] == [100, 200]
    assert rows[0]["lr"] < rows[20]["lr"] and rows[-1]["lr"] < rows[20]["lr"]  # warm-up, then the cosine
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert archdsl.load_model(run.model_path).num_parameters() == run.params


def test_a_comparison_trains_specs_on_identical_batches_and_draws_one_plot(tmp_path):
    need("matplotlib")
    from PIL import Image

    # the same spec twice: identical batches in the same order give identical losses, step by step
    result = archdsl.train([GPT2, GPT2, LLAMA], TEXT, overrides={**TINY_GPT2, **TINY_LLAMA}, steps=4,
                           eval_every=2, out=tmp_path, **FAST)
    first, again, llama = result.runs
    assert (first.name, again.name, llama.name) == ("gpt2", "gpt2-2", "llama-small")
    assert [r["loss"] for r in first.metrics] == [r["loss"] for r in again.metrics]
    assert [r["loss"] for r in first.metrics] != [r["loss"] for r in llama.metrics]
    assert result.plot == tmp_path / "loss.png"
    labels = json.loads(Image.open(result.plot).text["Description"])
    assert labels[:3] == [f"gpt2 ({first.params / 1e3:.1f}k params)", f"gpt2-2 ({again.params / 1e3:.1f}k params)",
                          f"llama-small ({llama.params / 1e3:.1f}k params)"]
    assert labels[3].startswith("unigram entropy")


def test_without_matplotlib_the_plot_is_skipped_and_said(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = archdsl.train(GPT2, TEXT, overrides=TINY_GPT2, steps=1, out=tmp_path, **FAST)
    assert result.plot is None and not (tmp_path / "loss.png").exists()
    assert any("matplotlib is not installed" in n for n in result.notes)


def test_resume_continues_bit_for_bit(tmp_path):
    settings = dict(overrides={**TINY_GPT2, "dropout": 0.1}, steps=6, eval_every=2, **FAST)  # dropout: RNG state
    straight = archdsl.train(GPT2, TEXT, out=tmp_path / "a", **settings)
    stopped = archdsl.train(GPT2, TEXT, out=tmp_path / "b", stop_at=3, **settings)
    assert stopped.runs[0].steps == 3 and not (tmp_path / "b" / "gpt2" / "model.safetensors").exists()
    assert (tmp_path / "b" / "gpt2" / "checkpoint-0000003" / "state.safetensors").is_file()
    resumed = archdsl.train(GPT2, TEXT, out=tmp_path / "b", resume=True, **settings)
    a = archdsl.load_model(tmp_path / "a" / "gpt2" / "model.safetensors").state_dict()
    b = archdsl.load_model(tmp_path / "b" / "gpt2" / "model.safetensors").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loss = [(r["step"], r["loss"], r.get("val_loss")) for r in straight.runs[0].metrics]
    assert loss == [(r["step"], r["loss"], r.get("val_loss")) for r in resumed.runs[0].metrics]


def test_the_training_state_is_data_not_a_pickle(tmp_path):
    from archdsl.checkpoint import TensorFile

    archdsl.train(GPT2, TEXT, overrides=TINY_GPT2, steps=2, checkpoint_every=1, out=tmp_path, **FAST)
    with TensorFile(tmp_path / "gpt2" / "checkpoint-0000001" / "state.safetensors") as f:
        meta = f.metadata
        assert meta["format"] == "archdsl.train_state" and meta["step"] == "1"
        assert json.loads(meta["config"])["seq_len"] == 32
        assert "rng/torch" in f.keys() and "optimizer/wte.weight/exp_avg" in f.keys()
        assert json.loads(meta["scheduler"])["last_epoch"] == 1


def test_resume_refuses_another_spec_or_other_batches(tmp_path):
    archdsl.train(GPT2, TEXT, overrides=TINY_GPT2, steps=4, stop_at=2, out=tmp_path, **FAST)
    with pytest.raises(TrainError, match="different spec"):
        archdsl.train(GPT2, TEXT, overrides={**TINY_GPT2, "layers": 2}, steps=4, resume=True, out=tmp_path, **FAST)
    with pytest.raises(TrainError, match=r"batch 8 -> 4"):
        archdsl.train(GPT2, TEXT, overrides=TINY_GPT2, steps=4, resume=True, out=tmp_path, **{**FAST, "batch": 4})
    with pytest.raises(TrainError, match="no complete checkpoint"):
        archdsl.train(GPT2, TEXT, overrides=TINY_GPT2, steps=4, resume=True, out=tmp_path / "empty", **FAST)


@pytest.mark.parametrize("spec, overrides, objective", [
    ("t5-small.yaml", {"layers": 1, "d_model": 32, "heads": 2, "head_dim": 16, "ffn": 64, "vocab": 256}, "next-span"),
    ("lstm-lm.yaml", {"d_model": 32, "vocab": 256}, "next-token"),
    ("conv-attention-hybrid.yaml", {"d_model": 32, "heads": 2, "layers": 1, "conv_layers": 1, "vocab": 256},
     "next-token"),
], ids=["encoder-decoder", "lstm", "conv-hybrid"])
def test_every_family_trains(tmp_path, spec, overrides, objective):
    model = archdsl.compile(ROOT / "specs" / spec, overrides=overrides, seed=0)
    assert objective_for(model, 32).name == objective
    result = archdsl.train(ROOT / "specs" / spec, TEXT, overrides={**overrides, "dropout": 0.0}, steps=12,
                           eval_every=12, lr=1e-2, out=tmp_path, **FAST)
    losses = [r["loss"] for r in result.runs[0].metrics]
    assert losses[-1] < losses[0] - 0.3 and math.isfinite(result.runs[0].val_loss)


def test_activation_checkpointing_gives_the_same_gradients_and_bf16_trains(tmp_path):
    def grads(checkpointed: bool) -> list[torch.Tensor]:
        model = archdsl.compile(GPT2, overrides={**TINY_GPT2, "layers": 2, "dropout": 0.1}, seed=0)
        if checkpointed:
            assert checkpoint_activations(model) == 2  # h.0, h.1
        objective = objective_for(model, 16)
        torch.manual_seed(0)
        objective.loss(model, torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))).backward()
        return [p.grad for p in model.parameters()]
    plain, recomputed = grads(False), grads(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, recomputed))  # the recomputation replays the dropout RNG
    t5 = {"layers": 1, "d_model": 32, "heads": 2, "head_dim": 16, "ffn": 64, "vocab": 256}
    result = archdsl.train(ROOT / "specs" / "t5-small.yaml", TEXT, overrides=t5, steps=3, bf16=True,
                           activation_checkpointing=True, out=tmp_path, **FAST)  # relative bias masks per layer
    assert all(math.isfinite(r["loss"]) for r in result.runs[0].metrics)


def test_warmup_then_cosine_schedule():
    c = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr=0.1)
    factors = [c.lr_factor(s) for s in range(100)]
    assert factors[:10] == pytest.approx([(s + 1) / 11 for s in range(10)])
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert TrainConfig(steps=50).warmup_steps == 5 and TrainConfig(steps=5000).warmup_steps == 100


def test_batches_depend_on_seed_and_step_only():
    corpus = load_corpus([TEXT], ByteTokenizer(), window=33)
    same = train_batch(corpus, 0, 7, 4, 33), train_batch(corpus, 0, 7, 4, 33)
    assert (same[0] == same[1]).all() and same[0].shape == (4, 33)
    assert not (train_batch(corpus, 0, 8, 4, 33) == same[0]).all()
    assert not (train_batch(corpus, 1, 7, 4, 33) == same[0]).all()


def test_a_local_tokenizer_json(tmp_path):
    tokenizers = need("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train([str(TEXT)], tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    result = archdsl.train(GPT2, TEXT, overrides={**TINY_GPT2, "vocab": vocab}, steps=2, out=tmp_path / "run",
                           tokenizer=str(tmp_path / "tokenizer.json"), **FAST)
    assert result.tokens < 30_000  # words and pieces, not the 44,561 bytes
    with pytest.raises(TrainError, match=rf"vocabulary of 256, smaller than the {vocab:,} tokens of tokenizer.json"):
        archdsl.train(GPT2, TEXT, overrides=TINY_GPT2, steps=1, out=tmp_path / "run",
                      tokenizer=str(tmp_path / "tokenizer.json"), **FAST)


def test_a_decoder_that_sees_the_future_is_refused():
    spec = {"name": "peeking", "model": {"width": 32, "layers": [
        {"embedding": {"vocab": 256}}, {"attention": {"heads": 2}}, {"lm_head": {"vocab": 256}}]}}
    with pytest.raises(TrainError, match=r"layer attention is not causal .* read the tokens it predicts"):
        objective_for(archdsl.compile(spec, seed=0), 16)


def _cli(*args: str, cwd: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    """`archdsl train ARGS` in this process (main() is what the console script runs)."""
    from archdsl.cli import main

    monkeypatch.chdir(cwd)
    code = main(["train", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args, message", [
    (["gpt2.yaml", "--data", "nowhere.txt"], "--data nowhere.txt: no such file or folder"),
    (["gpt2.yaml", "--data", "empty.txt"], "--data empty.txt: no text in it"),
    (["gpt2.yaml", "--data", "blob.bin"], "--data blob.bin: not UTF-8 text"),
    (["bert-base.yaml", "--set", "layers=1", "--data", "text.md"],
     "'bert-base' is not a language model: it reads tokens and returns hidden states"),
    (["gpt2.yaml", "--set", "context=16", "--set", "vocab=256", "--seq-len", "32", "--data", "text.md"],
     "--seq-len 32 gives 32 tokens per window to 'gpt2', more than its 16 learned positions"),
    (["gpt2.yaml", "--set", "vocab=100", "--data", "text.md"],
     "'gpt2' has a vocabulary of 100, smaller than the byte tokenizer's 256 values (hint: --set vocab=256"),
    (["gpt2.yaml", "--set", "vocab=256", "--seq-len", "100000", "--data", "text.md"], "tokens are too few"),
    (["gpt2.yaml", "--set", "vocab=256", "--fsdp", "--data", "text.md"], "run under torchrun"),
    (["gpt2.yaml", "--set", "nope=1", "--data", "text.md"], "cannot override unknown var 'nope'"),
    (["gpt2.yaml", "--data", "text.md", "--lr", "-1"], "expected a non-negative number"),
], ids=["missing", "empty", "binary", "not-an-lm", "positions", "vocab", "too-short", "no-torchrun", "var", "lr"])
def test_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch, args, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "text.md").write_text(TEXT.read_text())
    for name in ("gpt2.yaml", "bert-base.yaml"):
        (tmp_path / name).write_text((ROOT / "specs" / name).read_text())
    try:
        code, _, err = _cli(*args, "--steps", "1", "--no-progress", "--set", "d_model=32", "--set", "heads=2",
                            cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    except SystemExit as exc:  # argparse's usage errors
        code, err = exc.code, capsys.readouterr().err
    assert code in (1, 2), err
    assert message in err, err


def test_the_cli_trains_and_reports(tmp_path, capsys, monkeypatch):
    code, out, err = _cli(str(GPT2), "--data", str(TEXT), "--set", "layers=1", "--set", "d_model=32", "--set",
                          "heads=2", "--set", "vocab=256", "--set", "context=64", "--steps", "3", "--batch", "4",
                          "--seq-len", "32", "--out", str(tmp_path), cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    assert "unigram entropy" in out and "gpt2" in out and "val loss" in out
    assert "3/3" in err  # the progress bar (tqdm) with loss and tokens/s
    assert "tok_s=" in err and "loss=" in err


def test_corpus_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no training data"):
        load_corpus([], ByteTokenizer(), window=10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the folder holds no files"):
        load_corpus([tmp_path / "empty"], ByteTokenizer(), window=10)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("abc " * 100)
    (tmp_path / "docs" / ".hidden").write_text("\xff")  # hidden files are skipped
    corpus = load_corpus([tmp_path / "docs"], ByteTokenizer(), window=10)
    assert corpus.files == [tmp_path / "docs" / "a.txt"] and corpus.tokens == 400


def test_train_is_imported_lazily():
    code = "import archdsl, sys; assert 'torch' not in sys.modules; archdsl.train; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT)}).returncode == 0
