"""Prompt cleaning and tokenization exactly as the official Wan pipeline does it (spec section 4).

The official `HuggingfaceTokenizer(clean='whitespace')` runs `ftfy.fix_text`, `html.unescape`
twice, strips, collapses whitespace runs to one space, then calls the `google/umt5-xxl` tokenizer
with `padding='max_length', max_length=512, truncation=True, add_special_tokens=True`, which
appends `</s>` (id 1) and pads with `<pad>` (id 0).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import ftfy
import numpy as np

TEXT_LEN = 512
_WHITESPACE = re.compile(r"\s+")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def clean_text(text: str) -> str:
    """ftfy, double html unescape, strip, collapse whitespace: the official `clean='whitespace'`.

    Note that ftfy also turns full-width punctuation half-width ('，' -> ','), Chinese prompts
    included; the official encoder sees the same. The official code uses the `regex` package's `\\s`; Python's `re` differs only on U+001C..1F,
    which ftfy and `html.unescape` never let through.
    """
    if not isinstance(text, str):
        raise TypeError(f"a prompt must be a str, got {type(text).__name__}: {text!r}")
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


class Tokens(NamedTuple):
    """A tokenized batch: `ids [B, L]` and `mask [B, L]` (1 = token, 0 = padding), int32."""

    ids: np.ndarray
    mask: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Valid tokens per prompt, `</s>` included."""
        return self.mask.sum(axis=1).astype(np.int32)


class Tokenizer:
    """The umT5 SentencePiece tokenizer from a local folder, with the official cleaning.

    `path` is the tokenizer folder: `<ckpt>/google/umt5-xxl` in the official Wan2.2 repo,
    `<ckpt>/tokenizer` in the diffusers one. Nothing is downloaded.
    """

    def __init__(self, path: str | Path, max_length: int = TEXT_LEN, clean: bool = True):
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"tokenizer folder {path} does not exist; point it at the umT5 tokenizer files "
                "(`google/umt5-xxl/` in the official Wan2.2 checkpoint, `tokenizer/` in the "
                "diffusers one)"
            )
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise FileNotFoundError(
                f"{path} holds no tokenizer: expected one of {list(_TOKENIZER_FILES)} "
                f"(found {sorted(p.name for p in path.iterdir())[:10]})"
            )
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        from transformers import AutoTokenizer

        self.path = path
        self.max_length = max_length
        self.clean = clean
        self.hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if self.hf.eos_token_id is None or self.hf.pad_token_id is None:
            raise ValueError(f"tokenizer at {path} has no eos or pad token; is it a T5 tokenizer?")

    @property
    def eos_id(self) -> int:
        return int(self.hf.eos_token_id)

    @property
    def pad_id(self) -> int:
        return int(self.hf.pad_token_id)

    def prepare(self, prompt: str) -> str:
        """The text actually tokenized (cleaned unless `clean=False`)."""
        return clean_text(prompt) if self.clean else prompt

    def __call__(self, prompts: str | Sequence[str]) -> Tokens:
        """Tokenizes, truncates to `max_length` (keeping `</s>` last) and pads to `max_length`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        out = self.hf(
            [self.prepare(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="np",
        )
        return Tokens(out["input_ids"].astype(np.int32), out["attention_mask"].astype(np.int32))
