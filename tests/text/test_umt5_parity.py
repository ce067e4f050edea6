"""UMT5Encoder against transformers `UMT5EncoderModel` (the reference), fp32, random tiny configs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from text_helpers import TINY, padded_batch, rel_err

from convert.keymaps_umt5 import hf_encoder_state_dict, umt5_keymap
from torch_refs import hf_umt5_encoder, hf_umt5_forward, state_dict_numpy
from wanjax.config import Precision
from wanjax.io.params import load_flat_params
from wanjax.models import umt5
from wanjax.models.umt5 import UMT5Config, UMT5Encoder, relative_position_buckets, umt5_xxl
from wanjax.text.encode import TextEncoder

# The brief's config (q/k/v width == d_model) and one with 3 layers, 8 buckets, max distance 20.
CONFIGS = {
    "d32h4": UMT5Config(vocab_size=100, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_layers=2),
    "d24h3": UMT5Config(
        vocab_size=64, d_model=24, num_heads=3, d_kv=10, d_ff=40, num_layers=3, num_buckets=8,
        max_distance=20,
    ),
}
# Lengths > max_distance reach the clamped buckets; 1 is the EOS-only (empty) prompt.
LENGTHS, SEQ = [160, 37, 1, 129], 160
FP32 = Precision()


def _load(cfg: UMT5Config, ref, prec: Precision = FP32) -> UMT5Encoder:
    ours = UMT5Encoder(cfg, prec, rngs=nnx.Rngs(0))
    sd = hf_encoder_state_dict(state_dict_numpy(ref))
    load_flat_params(ours, umt5_keymap(cfg, "diffusers").to_ours(sd))
    return ours


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
    cfg = CONFIGS[request.param]
    ref = hf_umt5_encoder(cfg, seed=1)
    ids, mask = padded_batch(cfg.vocab_size, LENGTHS, SEQ)
    return cfg, ref, _load(cfg, ref), (ids, mask), hf_umt5_forward(ref, ids, mask)


@nnx.jit
def _forward(model, ids, mask):
    return model(ids, mask)


def _ours(model, ids, mask):
    """Jitted: one compile per config and shape, reused by the weight mutations below."""
    return np.asarray(_forward(model, jnp.asarray(ids), jnp.asarray(mask)))


def _valid_rel_err(got, expected) -> float:
    return max(rel_err(got[i, :n], expected[i, :n]) for i, n in enumerate(LENGTHS))


def test_matches_transformers_on_valid_positions(case):
    _, _, ours, (ids, mask), expected = case
    got = _ours(ours, ids, mask)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert _valid_rel_err(got, expected) <= 1e-4


def test_padding_does_not_leak_into_valid_positions(case):
    """The same prompt alone and unpadded gives the same valid rows as inside the padded batch."""
    _, _, ours, (ids, _), expected = case
    n = LENGTHS[1]
    got = _ours(ours, ids[1:2, :n], np.ones((1, n), np.int32))
    assert rel_err(got[0], expected[1, :n]) <= 1e-4


# Each mutation breaks one T5 detail; the reference must then disagree, which shows the parity test
# above is sensitive to it.


def _assert_disagrees(model, case):
    _, _, _, (ids, mask), expected = case
    assert _valid_rel_err(_ours(model, ids, mask), expected) > 1e-2


def test_attention_scaling_detected(case):
    cfg, _, ours, _, _ = case
    model = nnx.clone(ours)
    for block in model.blocks:  # q / sqrt(d_kv): the usual scaled attention
        block.attn.q.kernel.set_value(block.attn.q.kernel[...] / math.sqrt(cfg.d_kv))
    _assert_disagrees(model, case)


def test_shared_position_table_detected(case):
    _, _, ours, _, _ = case
    model = nnx.clone(ours)
    for block in model.blocks:  # T5 shares layer 0's table; umT5 does not
        block.pos_embedding.embedding.set_value(model.blocks[0].pos_embedding.embedding[...])
    _assert_disagrees(model, case)


def test_gate_branch_swap_detected(case):
    _, _, ours, _, _ = case
    model = nnx.clone(ours)
    for block in model.blocks:  # GELU on wi_1 instead of wi_0
        gate, fc1 = block.ffn.gate.kernel[...], block.ffn.fc1.kernel[...]
        block.ffn.gate.kernel.set_value(fc1)
        block.ffn.fc1.kernel.set_value(gate)
    _assert_disagrees(model, case)


def test_bucket_direction_detected(case, monkeypatch):
    _, _, ours, _, _ = case
    original = umt5.relative_position_buckets
    monkeypatch.setattr(
        umt5, "relative_position_buckets", lambda q, k, n, m: original(q, k, n, m).T
    )  # rel = q - k instead of k - q
    _, _, _, (ids, mask), expected = case
    got = np.asarray(TextEncoder(ours)(ids, mask))  # a fresh trace sees the patched buckets
    assert _valid_rel_err(got, expected) > 1e-2


def _spec_bucket(rel: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """Spec section 4, written out for one relative position `rel = k_pos - q_pos`."""
    half = num_buckets // 2
    exact = half // 2
    bucket = half if rel > 0 else 0
    r = abs(rel)
    if r < exact:
        return bucket + r
    return bucket + min(half - 1, exact + int(math.log(r / exact) / math.log(max_distance / exact) * (half - exact)))


@pytest.mark.parametrize("q_len,k_len", [(600, 600), (7, 300), (300, 5)])
def test_buckets_match_spec_formula(q_len, k_len):
    got = relative_position_buckets(q_len, k_len, 32, 128)
    expected = np.array([[_spec_bucket(k - q) for k in range(k_len)] for q in range(q_len)])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (64, 256)])
def test_buckets_match_transformers(num_buckets, max_distance):
    import torch
    from transformers import UMT5Config as HFConfig
    from transformers.models.umt5.modeling_umt5 import UMT5Attention

    hf_cfg = HFConfig(
        d_model=8, d_kv=2, num_heads=4, relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=max_distance, is_decoder=False,
    )
    attn = UMT5Attention(hf_cfg, has_relative_attention_bias=True)
    q_len, k_len = 300, 700
    rel = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
    expected = attn._relative_position_bucket(rel).numpy()
    got = relative_position_buckets(q_len, k_len, num_buckets, max_distance)
    np.testing.assert_array_equal(got, expected)


def test_xxl_parameter_count_without_allocation():
    cfg = umt5_xxl()
    abstract = nnx.eval_shape(lambda: UMT5Encoder(cfg, Precision.named("bf16"), rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert sum(int(np.prod(v.shape)) for v in leaves) == 5_680_910_336  # spec section 4
    assert cfg.param_count == 5_680_910_336
    assert {v.dtype for v in leaves} == {jnp.dtype(jnp.bfloat16)}
    assert TINY.param_count == sum(
        int(np.prod(v.shape))
        for v in jax.tree.leaves(nnx.state(UMT5Encoder(TINY, rngs=nnx.Rngs(0)), nnx.Param))
    )


def test_bf16_close_to_fp32_reference(tiny_pair):
    """The official bf16 policy stays near the fp32 reference: a smoke check of dtypes."""
    ref, _ = tiny_pair
    ours16 = _load(TINY, ref, Precision.named("bf16"))
    assert {v.dtype for v in jax.tree.leaves(nnx.state(ours16, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
    ids, mask = padded_batch(TINY.vocab_size, [20, 7], 20)
    got, expected = _ours(ours16, ids, mask), hf_umt5_forward(ref, ids, mask)
    assert got.dtype == np.float32
    assert max(rel_err(got[i, :n], expected[i, :n]) for i, n in enumerate([20, 7])) < 5e-2


def test_text_encoder_compiles_once_per_shape(tiny_pair):
    _, ours = tiny_pair
    encoder = TextEncoder(ours)
    for seed in range(3):
        encoder(*padded_batch(TINY.vocab_size, [5, 2], 8, seed))
    assert encoder.trace_count == 1
    encoder(*padded_batch(TINY.vocab_size, [5, 2, 1], 8))
    assert encoder.trace_count == 2


@pytest.mark.parametrize(
    "ids,mask,message",
    [
        (np.zeros((2, 4), np.int32), np.ones((2, 5), np.int32), "mask shape"),
        (np.zeros((4,), np.int32), np.ones((4,), np.int32), r"\[B, L\]"),
        (np.full((1, 4), 100), np.ones((1, 4), np.int32), r"\[0, 100\)"),
        (np.full((1, 4), -1), np.ones((1, 4), np.int32), r"\[0, 100\)"),
        (np.zeros((1, 4), np.float32), np.ones((1, 4), np.int32), "integers"),
        (np.zeros((2, 4), np.int32), np.array([[1, 0, 0, 0], [0] * 4]), r"rows \[1\]"),
    ],
)
def test_text_encoder_rejects_bad_inputs(tiny_pair, ids, mask, message):
    with pytest.raises(ValueError, match=message):
        TextEncoder(tiny_pair[1])(ids, mask)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_buckets"):
        UMT5Config(num_buckets=31)
    with pytest.raises(ValueError, match="d_kv"):
        UMT5Config(d_kv=0)
