"""Local text for `archdsl train`: files or folders, a tokenizer, a held-out split and batches.

Nothing is downloaded. The default tokenizer is the 256 byte values of UTF-8 (any model whose
vocabulary has at least 256 entries can train on any text); a Hugging Face ``tokenizer.json``
is read with the ``tokenizers`` package when one is given.

Batches are a pure function of (seed, step): step k draws its windows from a generator seeded
with (seed, k). So every spec of one command sees identical batches in the same order, and a
resumed run needs no data state beyond the step it resumes at.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class DataError(ValueError):
    """Training data that cannot be used (missing, empty, too short, not text, a bad tokenizer)."""


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def describe(self) -> dict[str, Any]:
        return {"kind": "bytes"}


class HFTokenizer:
    """A local Hugging Face ``tokenizer.json`` (the ``tokenizers`` package: pip install 'archdsl[train]')."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DataError(f"--tokenizer {self.path}: reading a tokenizer.json needs the tokenizers package "
                            "(pip install 'archdsl[train]'), or leave --tokenizer out for the byte tokenizer") from None
        if not self.path.is_file():
            raise DataError(f"--tokenizer {self.path}: no such file (give the path of a tokenizer.json)")
        try:
            self._tok = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust parser's error: name the file and what it said
            raise DataError(f"--tokenizer {self.path}: not a Hugging Face tokenizer.json ({str(exc)[:200]})") from None
        self.name = self.path.name
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids])

    def describe(self) -> dict[str, Any]:
        return {"kind": "tokenizer.json", "path": str(self.path), "vocab_size": self.vocab_size}


def tokenizer(path: str | Path | None) -> ByteTokenizer | HFTokenizer:
    return ByteTokenizer() if path is None else HFTokenizer(path)


def text_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files named, and every non-hidden file under the folders named, in a stable order."""
    if not paths:
        raise DataError("no training data: give --data FILE_OR_FOLDER (one or more)")
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"--data {path}: the folder holds no files")
            files.extend(found)
        else:
            raise DataError(f"--data {path}: no such file or folder")
    return files


def read_text(files: Sequence[Path]) -> str:
    parts = []
    for path in files:
        try:
            parts.append(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"--data {path}: not UTF-8 text (byte {exc.start}); train reads text files only "
                            "(name the text files, or a folder of them)") from None
    return "\n".join(parts)


@dataclass
class Corpus:
    """Token ids of the training text and of the held-out tail used for validation."""

    train: np.ndarray  # int64 ids
    val: np.ndarray
    files: list[Path]
    tokenizer: Any

    @property
    def tokens(self) -> int:
        return len(self.train) + len(self.val)

    def unigram_entropy(self) -> float:
        """Entropy (nats per token) of the training tokens' unigram distribution: the validation loss of
        a model that learned token frequencies and nothing else."""
        counts = np.bincount(self.train)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())


def load_corpus(paths: Sequence[str | Path], tok: Any, *, window: int, val_fraction: float = 0.1) -> Corpus:
    """Read, tokenize and split: the last `val_fraction` of the tokens are held out. Each part must hold at
    least one window of `window` tokens (seq_len + 1: inputs and the next-token targets)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must lie strictly between 0 and 1, got {val_fraction}")
    files = text_files(paths)
    text = read_text(files)
    if not text.strip():
        raise DataError(f"--data {', '.join(str(f) for f in files[:3])}: no text in it (the files are empty)")
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    n_val = int(len(ids) * val_fraction)
    need = window / val_fraction
    if n_val < window or len(ids) - n_val < window:
        raise DataError(f"--data: {len(ids):,} tokens are too few to train on windows of {window:,} (--seq-len "
                        f"{window - 1} + 1) with {val_fraction:.0%} held out for validation; give at least "
                        f"{int(need) + 1:,} tokens of text, or a smaller --seq-len")
    return Corpus(ids[: len(ids) - n_val], ids[len(ids) - n_val:], files, tok)


def batch_offsets(seed: int, step: int, count: int, high: int) -> np.ndarray:
    """`count` window starts in [0, high) for training step `step`: the same for every run with this seed."""
    return np.random.default_rng([seed & (2**63 - 1), step]).integers(0, high, size=count)


def windows(ids: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(len(starts), length) int64 windows of ids."""
    return np.stack([ids[s: s + length] for s in starts])


def train_batch(corpus: Corpus, seed: int, step: int, batch: int, window: int) -> np.ndarray:
    return windows(corpus.train, batch_offsets(seed, step, batch, len(corpus.train) - window + 1), window)


def val_windows(corpus: Corpus, window: int, limit: int) -> np.ndarray:
    """Non-overlapping windows over the held-out tokens, at most `limit` of them, evenly spread."""
    count = len(corpus.val) // window
    starts = np.arange(count) * window
    if count > limit:
        starts = starts[np.linspace(0, count - 1, limit).round().astype(np.int64)]
    return windows(corpus.val, starts, window)


__all__ = ["DataError", "ByteTokenizer", "HFTokenizer", "Corpus", "tokenizer", "load_corpus", "train_batch",
           "val_windows", "batch_offsets", "text_files"]
