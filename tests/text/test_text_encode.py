"""The trim-then-zero-pad context contract (spec section 2 item 3, gotcha 4) end to end."""

import jax.numpy as jnp
import numpy as np
import pytest
from text_helpers import rel_err

from torch_refs import hf_umt5_forward
from wanjax.text.encode import TextEncoder, encode_prompts, zero_pad_context
from wanjax.text.tokenizer import Tokenizer

PROMPTS = [
    "A cat sits on the mat in the warm afternoon sun.",
    "",
    "一只猫坐在垫子上。",
    "The quick brown fox jumps over the lazy dog. " * 4,  # truncated to max_length
]
MAX_LENGTH, TEXT_LEN = 24, 32


@pytest.fixture(scope="module")
def encoded(tokenizer_dir, tiny_pair):
    tokenizer = Tokenizer(tokenizer_dir, max_length=MAX_LENGTH)
    encoder = TextEncoder(tiny_pair[1])
    return tokenizer, encoder, encode_prompts(encoder, tokenizer, PROMPTS, text_len=TEXT_LEN)


def test_rows_past_each_length_are_exactly_zero(encoded):
    tokenizer, _, (context, lengths) = encoded
    context = np.asarray(context)
    assert context.shape == (4, TEXT_LEN, 32) and context.dtype == np.float32
    np.testing.assert_array_equal(lengths, tokenizer(PROMPTS).lengths)
    assert lengths[1] == 1 and lengths[3] == MAX_LENGTH  # EOS only; truncated
    for row, n in zip(context, lengths, strict=True):
        assert (row[n:] == 0).all()
        assert (np.abs(row[:n]).sum(axis=-1) > 0).all()  # EOS row included and non-zero


def test_valid_rows_match_transformers(encoded, tiny_pair):
    """Valid rows are the reference encoder's output on the official (max_length-padded) ids."""
    tokenizer, _, (context, lengths) = encoded
    tokens = tokenizer(PROMPTS)
    expected = hf_umt5_forward(tiny_pair[0], tokens.ids, tokens.mask)
    for i, n in enumerate(lengths):
        assert rel_err(np.asarray(context)[i, :n], expected[i, :n]) <= 1e-4


def test_one_compile_per_batch_shape(encoded):
    tokenizer, encoder, _ = encoded
    before = encoder.trace_count
    encode_prompts(encoder, tokenizer, ["a dog", "a park", "rain", "sun"], text_len=TEXT_LEN)
    assert encoder.trace_count == before  # same [4, MAX_LENGTH] shape: reused


def test_zero_pad_context_crops_and_pads():
    hidden = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3) + 1
    out = np.asarray(zero_pad_context(hidden, np.array([2, 5]), 7))
    assert out.shape == (2, 7, 3)
    np.testing.assert_array_equal(out[0, :2], np.asarray(hidden)[0, :2])
    np.testing.assert_array_equal(out[1, :5], np.asarray(hidden)[1])
    assert (out[0, 2:] == 0).all() and (out[1, 5:] == 0).all()
    assert np.asarray(zero_pad_context(hidden, np.array([2, 5]), 3)).shape == (2, 3, 3)


def test_text_len_shorter_than_tokenizer_is_rejected(encoded):
    tokenizer, encoder, _ = encoded
    with pytest.raises(ValueError, match="exceeds text_len 8"):
        encode_prompts(encoder, tokenizer, ["a cat"], text_len=8)
