"""Tiny text encoder, VAE and tokenizer, written into snapshots of both layouts.

The diffusers layout is written by the libraries themselves (`UMT5EncoderModel.save_pretrained`,
sharded with an index; `AutoencoderKLWan.save_pretrained`; the tokenizer's `save_pretrained`).
The official layout holds torch pickles under official names, derived without `convert`'s tables:
- umT5: the rename of spec section 4 (HF `UMT5EncoderModel` -> `models_t5_umt5-xxl-enc-bf16.pth`)
  written out below;
- VAE: diffusers' own `convert_wan_vae_to_diffusers` (official -> diffusers) inverted by matching
  its output against the diffusers model's keys.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from wanjax.models.umt5 import UMT5Config
from wanjax.models.vae import VAEConfig

# vocab 100 > the tokenizer's 90 pieces; q/k/v width 24 != d_model 32.
UMT5_CFG = UMT5Config(vocab_size=100, d_model=32, num_heads=4, d_kv=6, d_ff=48, num_layers=2)
# Wan2.1 level structure (the diffusers converter hard-codes its indices); z_dim 16, so the
# official file's latent statistics are the known Wan2.1 ones (the diffusers defaults).
VAE_CFG = VAEConfig(base_dim=4, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2)
T5_FILE, VAE_FILE = "models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_VAE.pth"
TOKENIZER_AT = {"official": "google/umt5-xxl", "diffusers": "tokenizer"}

# HF name -> official name (spec section 4); `encoder.embed_tokens.weight` is the tied copy.
_UMT5_TO_OFFICIAL = [
    (r"^shared\.weight$", "token_embedding.weight"),
    (r"^encoder\.final_layer_norm\.weight$", "norm.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
     r"blocks.\1.pos_embedding.embedding."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.", r"blocks.\1.attn.\2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
]
_SENTENCES = [
    "A red fox runs across a snowy field at dawn.",
    "Eine Katze schläft auf dem warmen Fensterbrett.",
    "一只小狗在公园里追逐蝴蝶。",
    "Waves crash against the rocky shore under a grey sky.",
    "Un vieux bateau flotte sur le lac tranquille.",
    "A timelapse of city lights, cars streaming through the night.",
]


def official_umt5_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in hf_state.items():
        if name == "encoder.embed_tokens.weight":
            continue
        new = name
        for pattern, repl in _UMT5_TO_OFFICIAL:
            new = re.sub(pattern, repl, new)
        assert new != name, f"no official name for {name}"
        out[new] = value
    return out


def official_vae_state_dict(model, candidates) -> dict[str, torch.Tensor]:
    """Official names for the diffusers VAE `model`: each of `candidates` (official names) is
    sent through diffusers' converter; every model key must be hit exactly once."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    official_of = convert_wan_vae_to_diffusers({name: name for name in candidates})
    state = model.state_dict()
    assert len(official_of) == len(candidates), "two official names map to one diffusers key"
    assert sorted(official_of) == sorted(state), "candidates do not cover the diffusers keys"
    return {official_of[k]: v.clone() for k, v in state.items()}


def round_to_bf16(model) -> None:
    """Rounds every parameter to a bfloat16 value (kept in float32): the official encoder file is
    bfloat16, so both layouts then hold the very same numbers."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())


def build_tokenizer(root: Path) -> Path:
    """A T5 SentencePiece tokenizer (pad 0, eos 1, unk 2) trained on a few sentences, HF-saved."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    raw = root / "raw"
    raw.mkdir(parents=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SENTENCES * 8), model_prefix=str(raw / "spiece"), vocab_size=90,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    T5Tokenizer.from_pretrained(str(raw), extra_ids=0).save_pretrained(str(root / "hf"))
    return root / "hf"


def add_official(root: Path, t5, vae, vae_candidates, tokenizer: Path | None) -> None:
    """`models_t5_umt5-xxl-enc-bf16.pth` (bfloat16), `Wan2.1_VAE.pth`, `google/umt5-xxl/`."""
    t5_state = {k: v.to(torch.bfloat16) for k, v in t5.state_dict().items()}
    torch.save(official_umt5_state_dict(t5_state), root / T5_FILE)
    torch.save(official_vae_state_dict(vae, vae_candidates), root / VAE_FILE)
    if tokenizer is not None:
        shutil.copytree(tokenizer, root / TOKENIZER_AT["official"])


def add_diffusers(root: Path, t5, vae, tokenizer: Path | None) -> None:
    """`text_encoder/` (sharded, with index), `vae/`, `tokenizer/`, listed in model_index.json."""
    t5.save_pretrained(root / "text_encoder", max_shard_size="30KB")
    vae.save_pretrained(root / "vae")
    if tokenizer is not None:
        shutil.copytree(tokenizer, root / TOKENIZER_AT["diffusers"])
    index = json.loads((root / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"]


def valid_rows_rel_err(got, expected, lengths) -> float:
    """max over prompts of max|a - b| / max|b| on each prompt's valid rows."""
    errs = []
    for i, n in enumerate(lengths):
        a, b = np.asarray(got[i, :n], np.float64), np.asarray(expected[i, :n], np.float64)
        errs.append(float(np.abs(a - b).max() / np.abs(b).max()))
    return max(errs)
