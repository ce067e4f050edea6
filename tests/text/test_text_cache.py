"""The on-disk text-embedding cache: round trip, resume, and interruption safety."""

import json

import ml_dtypes
import numpy as np
import pytest

from wanjax.text import cache as cache_mod
from wanjax.text.cache import TextCacheWriter, TextEmbeddingCache, build_text_cache
from wanjax.text.encode import TextEncoder, encode_prompts
from wanjax.text.prompts import SAMPLE_NEG_PROMPT
from wanjax.text.tokenizer import Tokenizer

PROMPTS = [
    "A cat sits on the mat.",
    "Ein Hund läuft im Park.",
    "一只猫坐在垫子上。",
    "The quick brown fox jumps over the lazy dog.",
    "A cinematic sunset over the ocean.",
]
MAX_LENGTH = 20


def _assert_close_bf16(stored, expected):
    """Stored bf16 vs float32 computed in another batch shape (last-bit XLA differences)."""
    assert stored.dtype == ml_dtypes.bfloat16 and stored.shape == expected.shape
    np.testing.assert_allclose(stored.astype(np.float32), expected, rtol=2**-7, atol=1e-6)


@pytest.fixture(scope="module")
def parts(tokenizer_dir, tiny_pair):
    tokenizer = Tokenizer(tokenizer_dir, max_length=MAX_LENGTH)
    encoder = TextEncoder(tiny_pair[1])
    context, lengths = encode_prompts(encoder, tokenizer, PROMPTS, text_len=MAX_LENGTH)
    expected = {p: np.asarray(context)[i, : lengths[i]] for i, p in enumerate(PROMPTS)}
    return tokenizer, encoder, expected


@pytest.fixture(scope="module")
def built(parts, tmp_path_factory):
    tokenizer, encoder, _ = parts
    path = tmp_path_factory.mktemp("cache")
    return path, build_text_cache(path, encoder, tokenizer, PROMPTS, batch_size=2, shard_size=2)


def test_round_trip_bf16(parts, built):
    _, _, expected = parts
    path, cache = built
    assert cache.prompts() == PROMPTS and len(cache) == len(PROMPTS)
    assert len(json.loads((path / "index.json").read_text())["shards"]) == 3  # 2 + 2 + 1
    for prompt in PROMPTS:
        emb, n = cache.get(prompt)
        assert emb.shape == (n, 32)
        _assert_close_bf16(emb, expected[prompt])


def test_lookup_goes_through_cleaning(built):
    _, cache = built
    emb, _ = cache.get("  A   cat sits\non the mat. ")
    np.testing.assert_array_equal(emb, cache.get("A cat sits on the mat.")[0])
    assert "  A cat sits on the mat." in cache and "a dog" not in cache
    with pytest.raises(KeyError, match="not in the text cache"):
        cache.get("a dog")


def test_negative_prompt_stored_apart(parts, built):
    tokenizer, encoder, _ = parts
    _, cache = built
    emb, n = cache.negative()
    context, lengths = encode_prompts(encoder, tokenizer, [SAMPLE_NEG_PROMPT], MAX_LENGTH)
    assert n == lengths[0] and cache.negative_prompt() == SAMPLE_NEG_PROMPT
    _assert_close_bf16(emb, np.asarray(context)[0, :n])
    assert SAMPLE_NEG_PROMPT not in cache.prompts()


def test_get_batch_zero_pads(built):
    _, cache = built
    context, lengths = cache.get_batch(PROMPTS[:2], text_len=MAX_LENGTH)
    assert context.shape == (2, MAX_LENGTH, 32)
    for i, p in enumerate(PROMPTS[:2]):
        np.testing.assert_array_equal(context[i, : lengths[i]], cache.get(p)[0])
        assert (context[i, lengths[i] :] == 0).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_storage_is_exact_in_its_dtype(tmp_path, dtype):
    rng = np.random.default_rng(0)
    arrays = {p: rng.standard_normal((i + 1, 8)).astype(np.float32) for i, p in enumerate(PROMPTS)}
    with TextCacheWriter(tmp_path, d_model=8, max_length=8, dtype=dtype, shard_size=3) as w:
        for p, a in arrays.items():
            w.add(p, a)
        w.add(PROMPTS[0], np.ones((2, 8)))  # already queued: ignored
    cache = TextEmbeddingCache(tmp_path)
    assert cache.prompts() == PROMPTS
    for p, a in arrays.items():
        emb, n = cache.get(p)
        assert n == len(a) and emb.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(emb, a.astype(emb.dtype))
    assert not cache.has_negative()


def test_resume_encodes_only_new_prompts(parts, tmp_path, monkeypatch):
    tokenizer, encoder, expected = parts
    build_text_cache(tmp_path, encoder, tokenizer, PROMPTS[:2], batch_size=2, negative_prompt=None)
    encoded = []
    original = cache_mod.encode_prompts

    def counting(enc, tok, prompts, text_len):
        encoded.extend(prompts)
        return original(enc, tok, prompts, text_len)

    monkeypatch.setattr(cache_mod, "encode_prompts", counting)
    cache = build_text_cache(tmp_path, encoder, tokenizer, PROMPTS, batch_size=2, negative_prompt=None)
    assert set(encoded) == set(PROMPTS[2:])
    assert cache.prompts() == PROMPTS


def test_interrupted_shard_write_leaves_no_trace(parts, tmp_path, monkeypatch):
    """A crash while writing a shard: no partial file, index untouched, the next run completes."""
    tokenizer, encoder, expected = parts
    build_text_cache(tmp_path, encoder, tokenizer, PROMPTS[:2], batch_size=2, negative_prompt=None)
    before = sorted(p.name for p in tmp_path.iterdir())
    index_before = (tmp_path / "index.json").read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial bytes")  # half-written file under the temporary name
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        build_text_cache(tmp_path, encoder, tokenizer, PROMPTS, batch_size=2, negative_prompt=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "index.json").read_bytes() == index_before
    assert TextEmbeddingCache(tmp_path).prompts() == PROMPTS[:2]

    monkeypatch.undo()
    cache = build_text_cache(tmp_path, encoder, tokenizer, PROMPTS, batch_size=2, negative_prompt=None)
    for p in PROMPTS:
        _assert_close_bf16(cache.get(p)[0], expected[p])


def test_killed_writer_leftovers_are_ignored(parts, tmp_path):
    """A SIGKILL leaves a temp file and maybe an unlisted shard: readers ignore both."""
    tokenizer, encoder, expected = parts
    build_text_cache(tmp_path, encoder, tokenizer, PROMPTS[:1], batch_size=2, negative_prompt=None)
    (tmp_path / "shard-00001.safetensors.123.tmp").write_bytes(b"garbage")
    (tmp_path / "shard-00001.safetensors").write_bytes(b"orphan never listed in the index")
    assert TextEmbeddingCache(tmp_path).prompts() == PROMPTS[:1]
    cache = build_text_cache(tmp_path, encoder, tokenizer, PROMPTS[:3], batch_size=2, negative_prompt=None)
    assert cache.prompts() == PROMPTS[:3]
    assert not list(tmp_path.glob("*.tmp"))


def test_incompatible_settings_and_bad_inputs(parts, built, tmp_path):
    tokenizer, encoder, _ = parts
    path, _ = built
    with pytest.raises(ValueError, match="other settings"):
        TextCacheWriter(path, d_model=32, max_length=MAX_LENGTH, dtype="float32")
    with pytest.raises(ValueError, match="unknown cache dtype"):
        TextCacheWriter(tmp_path / "x", d_model=32, max_length=8, dtype="float16")
    writer = TextCacheWriter(tmp_path / "y", d_model=32, max_length=8)
    with pytest.raises(ValueError, match=r"expected \[length in 1..8, 32\]"):
        writer.add("a cat", np.zeros((9, 32)))
    with pytest.raises(FileNotFoundError, match="not a text-embedding cache"):
        TextEmbeddingCache(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no negative-prompt"):
        TextEmbeddingCache(tmp_path / "y").negative()
