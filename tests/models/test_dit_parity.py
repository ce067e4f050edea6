"""WanDiT against diffusers `WanTransformer3DModel` (the reference), fp32, on random tiny configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convert.keymaps import dit_keymap
from torch_refs import diffusers_dit, diffusers_dit_forward, dit_inputs, state_dict_numpy
from wanjax.config import DiTConfig
from wanjax.io.params import load_flat_params
from wanjax.models.dit import WanDiT

CONFIGS = {
    # heads, head dim 12, 2 layers, odd latent frame count, non-square latents
    "h4d12": (DiTConfig(dim=48, ffn_dim=96, num_heads=4, num_layers=2, in_dim=4, out_dim=6,
                        text_dim=24, freq_dim=32, text_len=12), (2, 4, 3, 6, 10), 7),
    # 2 heads of 32, 3 layers, 5 frames
    "h2d32": (DiTConfig(dim=64, ffn_dim=160, num_heads=2, num_layers=3, in_dim=16, out_dim=16,
                        text_dim=40, freq_dim=64, text_len=20), (1, 16, 5, 8, 4), 13),
    # 8 heads of 8, 1 layer, one frame, tall latents
    "h8d8": (DiTConfig(dim=64, ffn_dim=64, num_heads=8, num_layers=1, in_dim=8, out_dim=8,
                       text_dim=16, freq_dim=16, text_len=9), (3, 8, 1, 12, 6), 1),
}


def _pair(cfg: DiTConfig, seed: int = 0):
    ref = diffusers_dit(cfg, seed)
    ours = WanDiT(cfg, rngs=nnx.Rngs(0))
    load_flat_params(ours, dit_keymap(cfg, "diffusers").to_ours(state_dict_numpy(ref)))
    return ref, ours


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
    cfg, shape, ctx_len = CONFIGS[request.param]
    ref, ours = _pair(cfg)
    x, t, ctx, padded = dit_inputs(cfg, shape, ctx_len)
    expected = diffusers_dit_forward(ref, x, t, padded)
    return cfg, ours, (x, t, ctx), expected


def _ours(model, x, t, ctx):
    return np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)))


def test_matches_diffusers(case):
    _, ours, (x, t, ctx), expected = case
    assert _rel(_ours(ours, x, t, ctx), expected) <= 1e-4


# Each mutation breaks one official detail; the reference must then disagree, which shows the
# parity test above is sensitive to it.


def _assert_disagrees(model, case):
    _, _, (x, t, ctx), expected = case
    assert _rel(_ours(model, x, t, ctx), expected) > 1e-2


def test_norm_swap_detected(case):
    _, ours, _, _ = case
    model = nnx.clone(ours)
    for block in model.blocks:  # affine norm before the FFN instead of before cross-attention
        block.cross_norm, block.ffn_norm = block.ffn_norm, block.cross_norm
    _assert_disagrees(model, case)


def test_head_conditioning_on_e_detected(case, monkeypatch):
    _, ours, _, _ = case
    original = WanDiT.embed_time

    def head_gets_silu_e(self, timestep):
        e, e0 = original(self, timestep)
        return jax.nn.silu(e), e0  # the head now sees SiLU(e) instead of e

    monkeypatch.setattr(WanDiT, "embed_time", head_gets_silu_e)
    _assert_disagrees(ours, case)


def test_unmasked_padded_context_detected(case, monkeypatch):
    cfg, ours, (x, _, ctx), _ = case
    if ctx.shape[1] == cfg.text_len:
        pytest.skip("context fills text_len: nothing is padded")
    import wanjax.models.blocks as blocks

    original = blocks.attention

    def masked(q, k, v, *, key_lengths=None, **kwargs):
        if k.shape[1] == cfg.text_len:  # cross-attention: mask the zero-padded rows
            key_lengths = jnp.full((q.shape[0],), ctx.shape[1], jnp.int32)
        return original(q, k, v, key_lengths=key_lengths, **kwargs)

    monkeypatch.setattr(blocks, "attention", masked)
    _assert_disagrees(ours, case)


def test_rope_split_detected(case, monkeypatch):
    cfg, ours, _, _ = case
    d = cfg.head_dim
    even_thirds = (d - 2 * (2 * (d // 6)) - 2, 2 * (d // 6) + 2, 2 * (d // 6))  # 44/42/42 -> 42/44/42
    monkeypatch.setattr(DiTConfig, "rope_dims", property(lambda self: even_thirds))
    _assert_disagrees(ours, case)


def test_bf16_close_to_fp32_reference():
    """The bf16 policy (official islands) stays near the fp32 reference: a smoke check of dtypes."""
    from wanjax.config import Precision

    cfg, shape, ctx_len = CONFIGS["h2d32"]
    ref, ours32 = _pair(cfg)
    ours16 = WanDiT(cfg, Precision.named("bf16"), rngs=nnx.Rngs(0))
    load_flat_params(ours16, dit_keymap(cfg, "diffusers").to_ours(state_dict_numpy(ref)))
    x, t, ctx, padded = dit_inputs(cfg, shape, ctx_len)
    out = _ours(ours16, x, t, ctx)
    assert out.dtype == np.float32
    assert _rel(out, diffusers_dit_forward(ref, x, t, padded)) < 5e-2
