"""The umT5 encoder table (spec section 4): official Wan `.pth` <-> HF `UMT5EncoderModel` <-> ours.

The HF layout plays the `diffusers` column of `Rule` (the diffusers repo ships the encoder as a
transformers `UMT5EncoderModel`). Our names follow the official ones. Two HF quirks are handled
before the table applies (`hf_encoder_state_dict`):
- the token embedding is tied: `shared.weight` and `encoder.embed_tokens.weight` are one tensor,
  saved under either name or both;
- a full encoder-decoder checkpoint (`google/umt5-xxl`) also holds `decoder.*` and `lm_head.*`,
  which the encoder does not use (transformers drops them the same way).

The official `.pth` has no config, so `umt5_config_from_shapes` infers one from tensor shapes.

For the streaming converter (`convert.components.Family`): `umt5_read_config`, `umt5_select`,
`umt5_param_shapes`, and `umt5_config_to_json` / `umt5_config_from_json` from `wanjax.models.umt5`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConversionError
from convert.keymaps import KeyMap, KeyMapError, Rule
from wanjax.models.umt5 import UMT5Config, UMT5Encoder

HF_EMBEDDING = "shared.weight"
HF_EMBEDDING_TIED = "encoder.embed_tokens.weight"
_HF_UNUSED_PREFIXES = ("decoder.", "lm_head.")


def umt5_rules(cfg: UMT5Config) -> list[Rule]:
    """One `Rule` per module: ours / official Wan / HF (`diffusers` column)."""
    rules = [
        Rule("token_embedding", "token_embedding", "shared", "embedding"),
        Rule("norm", "norm", "encoder.final_layer_norm", "rmsnorm"),
    ]
    for i in range(cfg.num_layers):
        o, h = f"blocks.{i}", f"encoder.block.{i}.layer"
        rules += [
            Rule(f"{o}.norm1", f"{o}.norm1", f"{h}.0.layer_norm", "rmsnorm"),
            Rule(
                f"{o}.pos_embedding", f"{o}.pos_embedding.embedding",
                f"{h}.0.SelfAttention.relative_attention_bias", "embedding",
            ),
            Rule(f"{o}.norm2", f"{o}.norm2", f"{h}.1.layer_norm", "rmsnorm"),
            # gate.0 (GELU branch) is wi_0; fc1 (linear branch) is wi_1.
            Rule(f"{o}.ffn.gate", f"{o}.ffn.gate.0", f"{h}.1.DenseReluDense.wi_0", "linear_nobias"),
            Rule(f"{o}.ffn.fc1", f"{o}.ffn.fc1", f"{h}.1.DenseReluDense.wi_1", "linear_nobias"),
            Rule(f"{o}.ffn.fc2", f"{o}.ffn.fc2", f"{h}.1.DenseReluDense.wo", "linear_nobias"),
        ]
        for p in "qkvo":
            rules.append(
                Rule(f"{o}.attn.{p}", f"{o}.attn.{p}", f"{h}.0.SelfAttention.{p}", "linear_nobias")
            )
    return rules


def umt5_keymap(cfg: UMT5Config, layout: str) -> KeyMap:
    """The umT5 `KeyMap`; `layout` is 'official' or 'diffusers' (= HF `UMT5EncoderModel`)."""
    return KeyMap(umt5_rules(cfg), layout)


def detect_layout(keys) -> str:
    """'official' or 'diffusers' (HF) from the key names; KeyMapError if neither."""
    keys = set(keys)
    if "token_embedding.weight" in keys or any(k.startswith("blocks.") for k in keys):
        return "official"
    if keys & {HF_EMBEDDING, HF_EMBEDDING_TIED} or any(k.startswith("encoder.block.") for k in keys):
        return "diffusers"
    raise KeyMapError(
        "not a umT5 encoder checkpoint: expected official Wan keys (token_embedding.weight, "
        f"blocks.N...) or HF keys (shared.weight, encoder.block.N...); got {_few(keys)}"
    )


def hf_encoder_state_dict(
    state_dict: Mapping[str, Any], equal: Callable[[Any, Any], bool] | None = None
) -> dict[str, Any]:
    """The encoder's tensors from an HF state dict, with the tied embedding under `shared.weight`.

    Accepts `shared.weight`, `encoder.embed_tokens.weight` or both; if both are present they must
    be equal (`equal(a, b)`, default: exact numpy equality). Drops `decoder.*` and `lm_head.*`.
    Values are passed through untouched, so lazy tensors stay lazy unless both names are present.
    """
    out = {k: v for k, v in state_dict.items() if not k.startswith(_HF_UNUSED_PREFIXES)}
    if HF_EMBEDDING_TIED in out:
        tied = out.pop(HF_EMBEDDING_TIED)
        if HF_EMBEDDING in out:
            equal = equal or (lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)))
            if not equal(out[HF_EMBEDDING], tied):
                raise KeyMapError(
                    f"{HF_EMBEDDING} and {HF_EMBEDDING_TIED} are both present but differ; the umT5 "
                    "encoder ties them, so this checkpoint is inconsistent"
                )
        else:
            out[HF_EMBEDDING] = tied
    return out


def umt5_select(keys: list[str], layout: str) -> dict[str, str]:
    """`Family.select`: name the table expects -> name in the files.

    HF: the embedding is read from `shared.weight`, or from `encoder.embed_tokens.weight` when
    only that name was saved; `decoder.*` / `lm_head.*` are left out. Official: as is.
    """
    if layout != "diffusers":
        return {k: k for k in keys}
    names = {
        k: k for k in keys if not k.startswith(_HF_UNUSED_PREFIXES) and k != HF_EMBEDDING_TIED
    }
    if HF_EMBEDDING not in names and HF_EMBEDDING_TIED in keys:
        names[HF_EMBEDDING] = HF_EMBEDDING_TIED
    return names


def umt5_read_config(location: Path, source, snapshot) -> UMT5Config:
    """`Family.read_config`: the HF `config.json` next to the weights if any, else tensor shapes.

    `source` is a `convert.readers.TensorSource` (`.tensors[key].shape`, `.read(key)`). When an HF
    checkpoint holds the tied embedding under both names, the two are read and must be equal.
    """
    layout = snapshot.layout
    try:
        if layout == "diffusers" and {HF_EMBEDDING, HF_EMBEDDING_TIED} <= set(source.tensors):
            hf_encoder_state_dict(
                {k: k for k in (HF_EMBEDDING, HF_EMBEDDING_TIED)},
                equal=lambda a, b: source.tensors[a].shape == source.tensors[b].shape
                and np.array_equal(source.read(a), source.read(b)),
            )
        config = Path(location) / "config.json"
        if layout == "diffusers" and config.is_file():
            return umt5_config_from_hf(config)
        return umt5_config_from_shapes(
            {k: info.shape for k, info in source.tensors.items()}, layout
        )
    except ValueError as e:
        raise ConversionError(f"text encoder ({location}): {e}") from None


def umt5_param_shapes(cfg: UMT5Config) -> dict[str, tuple[int, ...]]:
    """`Family.shapes`: our parameter shapes, from `nnx.eval_shape` (no allocation)."""
    from flax import nnx

    abstract = nnx.eval_shape(lambda: UMT5Encoder(cfg, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return {".".join(map(str, p)): tuple(v.shape) for p, v in flat}


def umt5_to_ours(
    state_dict: Mapping[str, Any], cfg: UMT5Config | None = None, layout: str | None = None
) -> tuple[UMT5Config, dict[str, np.ndarray]]:
    """A whole (small) state dict in either layout -> (config, our flat params).

    `layout` and `cfg` are detected / inferred from the keys and shapes when not given (the max
    distance and eps cannot be inferred and take the umT5 defaults). Big checkpoints stream through
    `umt5_keymap(...).leaves` instead, after `hf_encoder_state_dict` for the HF layout.
    """
    layout = layout or detect_layout(state_dict)
    if layout == "diffusers":
        state_dict = hf_encoder_state_dict(state_dict)
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    cfg = cfg or umt5_config_from_shapes(shapes, layout)
    keymap = umt5_keymap(cfg, layout)
    keymap.check_keys(state_dict)
    check_shapes(cfg, shapes, layout)
    return cfg, keymap.to_ours(state_dict)


def expected_shapes(cfg: UMT5Config, layout: str) -> dict[str, tuple[int, ...]]:
    """PyTorch shapes of every tensor in `layout` for `cfg`."""
    d, inner, ff = cfg.d_model, cfg.inner_dim, cfg.d_ff
    by_ours = {"token_embedding": (cfg.vocab_size, d), "norm": (d,)}
    for i in range(cfg.num_layers):
        o = f"blocks.{i}"
        by_ours |= {
            f"{o}.norm1": (d,), f"{o}.norm2": (d,),
            f"{o}.pos_embedding": (cfg.num_buckets, cfg.num_heads),
            f"{o}.attn.q": (inner, d), f"{o}.attn.k": (inner, d), f"{o}.attn.v": (inner, d),
            f"{o}.attn.o": (d, inner),
            f"{o}.ffn.gate": (ff, d), f"{o}.ffn.fc1": (ff, d), f"{o}.ffn.fc2": (d, ff),
        }
    out = {}
    for rule in umt5_rules(cfg):
        (leaf,) = rule.leaves(layout)
        out[leaf.torch_key] = by_ours[rule.ours]
    return out


def check_shapes(cfg: UMT5Config, shapes: Mapping[str, tuple[int, ...]], layout: str) -> None:
    """KeyMapError listing every tensor whose shape disagrees with `cfg`."""
    want = expected_shapes(cfg, layout)
    bad = [
        f"{k}: {tuple(shapes[k])} != {want[k]}"
        for k in want if k in shapes and tuple(shapes[k]) != want[k]
    ]
    if bad:
        raise KeyMapError(f"{layout} umT5 tensors have wrong shapes for {cfg}: {_few(bad)}")


def umt5_config_from_shapes(shapes: Mapping[str, tuple[int, ...]], layout: str) -> UMT5Config:
    """Infers the architecture from tensor shapes (the official `.pth` ships no config).

    `max_distance` and `eps` leave no trace in the shapes and take the umT5 defaults (128, 1e-6).
    """
    if layout == "official":
        embed, layer_re = "token_embedding.weight", re.compile(r"blocks\.(\d+)\.")
        first = "blocks.0."
        q, bias, ff = "attn.q.weight", "pos_embedding.embedding.weight", "ffn.fc1.weight"
    elif layout == "diffusers":
        shapes = {k: v for k, v in shapes.items() if not k.startswith(_HF_UNUSED_PREFIXES)}
        if HF_EMBEDDING not in shapes and HF_EMBEDDING_TIED in shapes:
            shapes = {**shapes, HF_EMBEDDING: shapes[HF_EMBEDDING_TIED]}
        embed, layer_re = HF_EMBEDDING, re.compile(r"encoder\.block\.(\d+)\.")
        first = "encoder.block.0.layer."
        q = "0.SelfAttention.q.weight"
        bias = "0.SelfAttention.relative_attention_bias.weight"
        ff = "1.DenseReluDense.wi_1.weight"
    else:
        raise ValueError(f"unknown layout {layout!r}; choose 'official' or 'diffusers'")
    needed = [embed, first + q, first + bias, first + ff]
    missing = [k for k in needed if k not in shapes]
    if missing:
        raise KeyMapError(
            f"cannot infer the umT5 config from this {layout} checkpoint: missing {missing}"
        )
    layers = {int(m.group(1)) for k in shapes if (m := layer_re.match(k))}
    if layers != set(range(len(layers))):
        raise KeyMapError(f"{layout} umT5 layers are not numbered 0..N-1: {sorted(layers)}")
    try:
        vocab, d_model = _dims(shapes[embed], 2, embed)
        inner, _ = _dims(shapes[first + q], 2, first + q)
        num_buckets, num_heads = _dims(shapes[first + bias], 2, first + bias)
        d_ff, _ = _dims(shapes[first + ff], 2, first + ff)
        if inner % num_heads:
            raise KeyMapError(f"q width {inner} is not a multiple of the {num_heads} heads")
        return UMT5Config(
            vocab_size=vocab, d_model=d_model, num_heads=num_heads, d_kv=inner // num_heads,
            d_ff=d_ff, num_layers=len(layers), num_buckets=num_buckets,
        )
    except ValueError as e:
        if isinstance(e, KeyMapError):
            raise
        raise KeyMapError(f"{layout} umT5 shapes give an invalid config: {e}") from e


def umt5_config_from_hf(config_json: Mapping[str, Any] | str | Path) -> UMT5Config:
    """`UMT5Config` from a transformers `config.json` (a path or its parsed dict)."""
    if isinstance(config_json, str | Path):
        path = Path(config_json)
        if not path.is_file():
            raise FileNotFoundError(f"no transformers config at {path}")
        config_json = json.loads(path.read_text())
    c = dict(config_json)
    if c.get("model_type", "umt5") != "umt5":
        raise ValueError(f"expected an umt5 config, got model_type {c.get('model_type')!r}")
    proj = c.get("feed_forward_proj", "gated-gelu")
    if proj != "gated-gelu":
        raise ValueError(
            f"feed_forward_proj {proj!r} is not supported: the Wan encoder uses 'gated-gelu'"
        )
    if c.get("dense_act_fn", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"dense_act_fn {c['dense_act_fn']!r} is not the tanh GELU the encoder uses")
    try:
        return UMT5Config(
            vocab_size=c["vocab_size"], d_model=c["d_model"], num_heads=c["num_heads"],
            d_kv=c["d_kv"], d_ff=c["d_ff"], num_layers=c["num_layers"],
            num_buckets=c.get("relative_attention_num_buckets", 32),
            max_distance=c.get("relative_attention_max_distance", 128),
            eps=c.get("layer_norm_epsilon", 1e-6),
        )
    except KeyError as e:
        raise ValueError(f"umt5 config lacks {e.args[0]!r}") from e


def _dims(shape, ndim: int, key: str) -> tuple[int, ...]:
    if len(shape) != ndim:
        raise KeyMapError(f"{key} has shape {tuple(shape)}; expected {ndim} dims")
    return tuple(int(s) for s in shape)


def _few(items, limit: int = 6) -> str:
    items = sorted(items)
    return ", ".join(items[:limit]) + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
