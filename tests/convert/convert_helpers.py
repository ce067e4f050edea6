"""Tiny Wan2.2 snapshots in both real layouts, built from the same random diffusers models.

The diffusers layout is written by diffusers itself (`save_pretrained` with a small
`max_shard_size`, so there are several shards and an index). The official layout is written here
from the same tensors under official names, with the rename written out independently of
`convert.keymaps` (and checked against diffusers' own official->diffusers converter).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from torch_refs import dit_inputs
from wanjax.config import DiTConfig

# head_dim 128 like every real Wan DiT, so a single file's config can be inferred from shapes.
CFG = DiTConfig(
    dim=256, ffn_dim=256, num_heads=2, num_layers=2, in_dim=16, out_dim=16, text_dim=32,
    freq_dim=32, text_len=512,
)
SHARD_BYTES = 2_000_000  # about 4 shards per expert
BOUNDARY = 0.875

# diffusers name -> official name (spec section 3.3), applied in order.
_TO_OFFICIAL = [
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),
    (r"^blocks\.(\d+)\.attn1\.", r"blocks.\1.self_attn."),
    (r"^blocks\.(\d+)\.attn2\.", r"blocks.\1.cross_attn."),
    (r"\.to_out\.0\.", ".o."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
]


def official_name(diffusers_name: str) -> str:
    name = diffusers_name
    for pattern, repl in _TO_OFFICIAL:
        name = re.sub(pattern, repl, name)
    return name


def official_state_dict(diffusers_sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {official_name(k): v for k, v in diffusers_sd.items()}


def official_config(cfg: DiTConfig) -> dict:
    """What an official `config.json` holds: no text_dim, no patch_size (constructor defaults)."""
    return {
        "_class_name": "WanModel", "_diffusers_version": "0.33.0", "dim": cfg.dim, "eps": cfg.eps,
        "ffn_dim": cfg.ffn_dim, "freq_dim": cfg.freq_dim, "in_dim": cfg.in_dim,
        "model_type": "t2v", "num_heads": cfg.num_heads, "num_layers": cfg.num_layers,
        "out_dim": cfg.out_dim, "text_len": cfg.text_len,
    }


def write_sharded(folder: Path, sd: dict[str, np.ndarray], shard_bytes: int) -> list[Path]:
    """Safetensors shards of at most `shard_bytes` (greedy, in key order) plus the index json."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for k in sorted(sd):
        if shards[-1] and size + sd[k].nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = sd[k]
        size += sd[k].nbytes
    n = len(shards)
    weight_map, paths = {}, []
    for i, shard in enumerate(shards, 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{n:05d}.safetensors"
        save_file(shard, folder / name)
        paths.append(folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.nbytes for v in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return paths


def write_official(root: Path, experts: dict[str, dict[str, np.ndarray]], cfg: DiTConfig) -> Path:
    """`high_noise_model/` + `low_noise_model/` from diffusers-named state dicts."""
    for folder, sd in experts.items():
        write_sharded(root / folder, official_state_dict(sd), SHARD_BYTES)
        (root / folder / "config.json").write_text(json.dumps(official_config(cfg)))
    (root / "configuration.json").write_text('{"framework": "Pytorch", "task": "text-to-video"}')
    return root


def write_diffusers(root: Path, high, low) -> Path:
    """`transformer/` (high noise) + `transformer_2/` (low noise) + `model_index.json`."""
    high.save_pretrained(root / "transformer", max_shard_size=SHARD_BYTES)
    low.save_pretrained(root / "transformer_2", max_shard_size=SHARD_BYTES)
    index = {
        "_class_name": "WanPipeline", "_diffusers_version": "0.35.0", "boundary_ratio": BOUNDARY,
        "expand_timesteps": False, "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def inputs(cfg: DiTConfig, shape=(1, 16, 3, 4, 6), ctx_len=7, seed=1):
    return dit_inputs(cfg, shape, ctx_len, seed)


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())
