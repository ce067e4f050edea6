"""Independent PyTorch references (diffusers / transformers) shared by the parity tests."""

from __future__ import annotations

import numpy as np
import torch

from wanjax.config import DiTConfig


def diffusers_dit(cfg: DiTConfig, seed: int = 0):
    """A diffusers `WanTransformer3DModel` with the architecture of `cfg` and random weights.

    Every tensor (zero-initialised ones included) gets random values so that no path can hide.
    """
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
        rope_max_seq_len=cfg.rope_max_len,
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p.shape[-1] if p.ndim > 1 else 1
            std = 1.0 / np.sqrt(fan_in) if "weight" in name and p.ndim > 1 else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if "norm" in name else 0.0))
    return model


def dit_inputs(cfg: DiTConfig, shape, ctx_len: int, seed: int = 1):
    """Random DiT inputs: latents, integer timesteps, a context of `ctx_len` rows, and the same
    context zero-padded to `text_len` (what diffusers' transformer is fed by its pipeline)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, 1000, size=shape[0])
    ctx = rng.standard_normal((shape[0], ctx_len, cfg.text_dim)).astype(np.float32)
    padded = np.zeros((shape[0], cfg.text_len, cfg.text_dim), np.float32)
    padded[:, :ctx_len] = ctx
    return x, t, ctx, padded


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}


def diffusers_dit_forward(model, latents, timestep, context_padded) -> np.ndarray:
    """Runs the reference on numpy inputs; the caller zero-pads the context as the pipeline does."""
    with torch.no_grad():
        out = model(
            hidden_states=torch.from_numpy(np.asarray(latents, np.float32)),
            timestep=torch.from_numpy(np.asarray(timestep)),
            encoder_hidden_states=torch.from_numpy(np.asarray(context_padded, np.float32)),
            return_dict=False,
        )[0]
    return out.float().numpy()


def hf_umt5_encoder(cfg, seed: int = 0):
    """A transformers `UMT5EncoderModel` with the architecture of a `UMT5Config`, random weights.

    Every tensor gets random values (norm weights around 1, position tables with unit scale) so
    that no path can hide; eager attention, so the relative position bias is applied as written.
    """
    from transformers import UMT5Config as HFConfig
    from transformers import UMT5EncoderModel

    hf_cfg = HFConfig(
        vocab_size=cfg.vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance,
        layer_norm_epsilon=cfg.eps,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = UMT5EncoderModel(hf_cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "relative_attention_bias" in name or name == "shared.weight":
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[-1]))
    return model


def hf_umt5_forward(model, ids, mask) -> np.ndarray:
    """`last_hidden_state` (float32 numpy) for numpy `ids` / `mask`."""
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(np.asarray(ids, np.int64)),
            attention_mask=torch.from_numpy(np.asarray(mask, np.int64)),
        ).last_hidden_state
    return out.float().numpy()


def diffusers_vae(cfg, seed: int = 0):
    """A diffusers `AutoencoderKLWan` with the architecture of a `VAEConfig` and random weights.

    Every tensor gets random values (gammas around 1, biases small, kernels scaled by fan-in) so
    that no path can hide behind an all-ones or all-zeros initialisation.
    """
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan(
        base_dim=cfg.base_dim,
        decoder_base_dim=cfg.decoder_base_dim,
        z_dim=cfg.z_dim,
        dim_mult=list(cfg.dim_mult),
        num_res_blocks=cfg.num_res_blocks,
        attn_scales=[],
        temperal_downsample=list(cfg.temporal_downsample),
        latents_mean=list(cfg.latents_mean),
        latents_std=list(cfg.latents_std),
        is_residual=cfg.residual,
        in_channels=cfg.image_channels,
        out_channels=cfg.image_channels,
        patch_size=cfg.patch_size if cfg.patch_size > 1 else None,
        scale_factor_spatial=cfg.spatial_factor,
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))
    return model
