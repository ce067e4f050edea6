"""Small helpers shared by the text tests."""

import numpy as np

from wanjax.models.umt5 import UMT5Config

# vocab 100 (> the test tokenizer's pieces); q/k/v width 24 != d_model 32; 2 layers
TINY = UMT5Config(vocab_size=100, d_model=32, num_heads=4, d_kv=6, d_ff=48, num_layers=2)


def padded_batch(vocab: int, lengths, seq: int, seed: int = 0):
    """Random ids with a prefix mask; padded positions hold id 0 as the tokenizer writes them."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(3, vocab, size=(len(lengths), seq)).astype(np.int32) * mask
    return ids, mask


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (the project's parity metric)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())
