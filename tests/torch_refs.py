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
