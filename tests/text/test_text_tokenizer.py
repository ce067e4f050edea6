"""Prompt cleaning against the official recipe, and the tokenizer wrapper on a tokenizer built here."""

import hashlib
import html

import ftfy
import numpy as np
import pytest
import regex

from wanjax.text.prompts import SAMPLE_NEG_PROMPT
from wanjax.text.tokenizer import Tokenizer, clean_text


def _official_clean(text: str) -> str:
    """Wan `tokenizers.py`: basic_clean (ftfy, html.unescape twice, strip) then whitespace_clean."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip()


TRICKY = {
    "double-escaped entities": ("Tom &amp;amp; Jerry &amp;lt;3 caf&amp;eacute;", "Tom & Jerry <3 café"),
    "mojibake": ("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.", "The Mona Lisa doesn't have eyebrows."),
    "whitespace runs": ("  a  cat\n\n\tsits \u3000on\u00a0the\r\nmat  ", "a cat sits on the mat"),
    "escaped newline entity": ("line one&#10;&#10;line two", "line one line two"),
    "control separators": ("a\x1cb\x1f c", "ab c"),
    "empty": ("   \n ", ""),
    # ftfy turns full-width punctuation half-width, so the official run sees ASCII commas
    "chinese": (SAMPLE_NEG_PROMPT, SAMPLE_NEG_PROMPT.replace("，", ",")),
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_clean_text(name):
    raw, expected = TRICKY[name]
    assert clean_text(raw) == expected
    assert clean_text(raw) == _official_clean(raw)


def test_clean_text_rejects_non_strings():
    with pytest.raises(TypeError, match="must be a str"):
        clean_text(b"bytes")


def test_negative_prompt_constant():
    """Guards the official string against edits: 137 characters, 28 comma-separated phrases."""
    assert len(SAMPLE_NEG_PROMPT) == 137 and SAMPLE_NEG_PROMPT.count("，") == 27
    digest = hashlib.sha256(SAMPLE_NEG_PROMPT.encode()).hexdigest()
    assert digest == "ce96e0324e4b54ce4b6e867f669ca520952e1a34cc116543516b1897f0d3c47e"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return Tokenizer(tokenizer_dir, max_length=16)


def test_eos_appended_and_zero_padding(tokenizer):
    assert (tokenizer.pad_id, tokenizer.eos_id) == (0, 1)
    tokens = tokenizer(["A cat sits on the mat.", ""])
    assert tokens.ids.shape == tokens.mask.shape == (2, 16)
    assert tokens.ids.dtype == tokens.mask.dtype == np.int32
    for row, n in zip(tokens.ids, tokens.lengths, strict=True):
        assert row[n - 1] == 1  # </s> closes the valid part ...
        assert (row[: n - 1] > 2).all()  # ... after real pieces only
        assert (row[n:] == 0).all()  # then <pad>
    assert tokens.lengths[1] == 1  # an empty prompt is just </s>
    np.testing.assert_array_equal(tokens.mask, np.arange(16)[None] < tokens.lengths[:, None])


def test_truncation_keeps_eos_last(tokenizer):
    tokens = tokenizer("The quick brown fox jumps over the lazy dog. " * 5)
    assert tokens.lengths[0] == 16 and tokens.ids[0, -1] == 1
    untruncated = tokenizer.hf(clean_text("The quick brown fox jumps over the lazy dog. " * 5))
    np.testing.assert_array_equal(tokens.ids[0, :15], untruncated["input_ids"][:15])


def test_prompts_are_cleaned_first(tokenizer):
    a = tokenizer("  A   cat\n sits &amp;amp; naps ")
    b = tokenizer("A cat sits & naps")
    np.testing.assert_array_equal(a.ids, b.ids)


def test_matches_plain_transformers_call(tokenizer, tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompts = ["Ein Hund läuft im Park.", "一只猫坐在垫子上。"]
    ref = hf(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="np")
    tokens = tokenizer(prompts)
    np.testing.assert_array_equal(tokens.ids, ref["input_ids"])
    np.testing.assert_array_equal(tokens.mask, ref["attention_mask"])


def test_missing_tokenizer_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer(tmp_path / "google" / "umt5-xxl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        Tokenizer(tmp_path / "empty")


def test_bad_arguments(tokenizer_dir, tokenizer):
    with pytest.raises(ValueError, match="max_length"):
        Tokenizer(tokenizer_dir, max_length=0)
    with pytest.raises(ValueError, match="no prompts"):
        tokenizer([])
    with pytest.raises(TypeError, match="must be a str"):
        tokenizer(["ok", None])
