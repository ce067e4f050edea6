"""One table per model that maps PyTorch checkpoint keys (official Wan and diffusers) to ours.

A `Rule` names one module in each of the three namings plus a `kind` that fixes which leaves it
has and how each tensor is laid out (PyTorch Linear `[out, in]` becomes our kernel `[in, out]`, and
so on). `KeyMap` expands the rules into per-tensor `LeafMap`s, which conversion streams through one
tensor at a time, export runs backwards, and the parity tests use to load reference weights. The
text-encoder and VAE tables are built from the same pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import numpy as np

LAYOUTS = ("official", "diffusers")


class KeyMapError(ValueError):
    """Raised when a checkpoint's keys or shapes do not match the expected model."""


@dataclasses.dataclass(frozen=True)
class LeafMap:
    """How one PyTorch tensor becomes one of our parameters, and back."""

    torch_key: str
    ours_key: str
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _linear_to_ours(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


def _patch_to_ours(w: np.ndarray) -> np.ndarray:
    """Conv3d `[O, I, kt, kh, kw]` -> dense kernel `[(kt kh kw I), O]` (patch order kt, kh, kw, c)."""
    return np.ascontiguousarray(w.transpose(2, 3, 4, 1, 0).reshape(-1, w.shape[0]))


def _conv_to_ours(w: np.ndarray) -> np.ndarray:
    """ConvNd `[O, I, *k]` -> Flax `[*k, I, O]`."""
    nd = w.ndim - 2
    return np.ascontiguousarray(w.transpose(*range(2, 2 + nd), 1, 0))


def _conv_to_torch(w: np.ndarray) -> np.ndarray:
    nd = w.ndim - 2
    return np.ascontiguousarray(w.transpose(nd + 1, nd, *range(nd)))


# kind -> [(our leaf suffix, torch leaf suffix, to_ours, to_torch factory(shape_meta))]
def _leaves(kind: str, meta: tuple[int, ...] | None):
    if kind == "linear":
        return [("kernel", "weight", _linear_to_ours, _linear_to_ours), ("bias", "bias", None, None)]
    if kind == "linear_nobias":
        return [("kernel", "weight", _linear_to_ours, _linear_to_ours)]
    if kind == "patch":
        if meta is None:
            raise ValueError("a 'patch' rule needs meta=(kt, kh, kw, in_channels)")

        def patch_to_torch(k: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(k.reshape(*meta, k.shape[-1]).transpose(4, 3, 0, 1, 2))

        return [("kernel", "weight", _patch_to_ours, patch_to_torch), ("bias", "bias", None, None)]
    if kind == "conv":
        return [("kernel", "weight", _conv_to_ours, _conv_to_torch), ("bias", "bias", None, None)]
    if kind == "conv_nobias":
        return [("kernel", "weight", _conv_to_ours, _conv_to_torch)]
    if kind == "layernorm":
        return [("scale", "weight", None, None), ("bias", "bias", None, None)]
    if kind == "rmsnorm":
        return [("scale", "weight", None, None)]
    if kind == "embedding":
        return [("embedding", "weight", None, None)]
    if kind == "param":
        return [("", "", None, None)]
    if kind == "gamma":  # VAE RMS_norm: torch `gamma` (C, *ones) <-> our `scale` (C,)
        if meta is None:
            raise ValueError("a 'gamma' rule needs meta=the trailing ones of the torch shape")

        def gamma_to_ours(g: np.ndarray) -> np.ndarray:
            if tuple(g.shape[1:]) != tuple(meta):
                raise ValueError(f"gamma of shape {tuple(g.shape)} is not (C, {', '.join(map(str, meta))})")
            return np.ascontiguousarray(g.reshape(g.shape[0]))

        def gamma_to_torch(s: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(s.reshape(s.shape[0], *meta))

        return [("scale", "gamma", gamma_to_ours, gamma_to_torch)]
    raise ValueError(f"unknown rule kind {kind!r}")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One module: its path in our model, in the official checkpoint and in diffusers."""

    ours: str
    official: str
    diffusers: str
    kind: str
    meta: tuple[int, ...] | None = None

    def leaves(self, layout: str) -> list[LeafMap]:
        prefix = self.official if layout == "official" else self.diffusers
        out = []
        for ours_leaf, torch_leaf, to_ours, to_torch in _leaves(self.kind, self.meta):
            out.append(
                LeafMap(
                    torch_key=f"{prefix}.{torch_leaf}" if torch_leaf else prefix,
                    ours_key=f"{self.ours}.{ours_leaf}" if ours_leaf else self.ours,
                    to_ours=to_ours or _identity,
                    to_torch=to_torch or _identity,
                )
            )
        return out


class KeyMap:
    """The expanded table for one model and one layout."""

    def __init__(self, rules: Iterable[Rule], layout: str):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        self.layout = layout
        self.leaves = [leaf for rule in rules for leaf in rule.leaves(layout)]
        self.by_torch = {leaf.torch_key: leaf for leaf in self.leaves}
        self.by_ours = {leaf.ours_key: leaf for leaf in self.leaves}

    def check_keys(self, torch_keys: Iterable[str]) -> None:
        """Raises `KeyMapError` listing missing and unknown keys."""
        have = set(torch_keys)
        missing = sorted(set(self.by_torch) - have)
        unknown = sorted(have - set(self.by_torch))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} keys: {_listing(missing)}")
            if unknown:
                parts.append(f"unknown {len(unknown)} keys: {_listing(unknown)}")
            raise KeyMapError(f"{self.layout} checkpoint does not match the model: " + "; ".join(parts))

    def to_ours(self, state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Maps a whole (small) state dict; conversion of big ones streams `leaves` instead."""
        self.check_keys(state_dict)
        return {self.by_torch[k].ours_key: self.by_torch[k].to_ours(np.asarray(v)) for k, v in state_dict.items()}

    def to_torch(self, flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Our flat params (`path -> array`) back to this layout's state dict."""
        missing = sorted(set(self.by_ours) - set(flat))
        if missing:
            raise KeyMapError(f"our params lack {len(missing)} keys: {_listing(missing)}")
        return {self.by_ours[k].torch_key: self.by_ours[k].to_torch(np.asarray(flat[k])) for k in self.by_ours}


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def dit_rules(num_layers: int, patch_size: tuple[int, int, int], in_dim: int) -> list[Rule]:
    """The DiT table (spec section 3.3): official `WanModel` <-> diffusers <-> `WanDiT`."""
    rules = [
        Rule("patch_embedding", "patch_embedding", "patch_embedding", "patch", (*patch_size, in_dim)),
        Rule("text_embedding.linear_1", "text_embedding.0", "condition_embedder.text_embedder.linear_1", "linear"),
        Rule("text_embedding.linear_2", "text_embedding.2", "condition_embedder.text_embedder.linear_2", "linear"),
        Rule("time_embedding.linear_1", "time_embedding.0", "condition_embedder.time_embedder.linear_1", "linear"),
        Rule("time_embedding.linear_2", "time_embedding.2", "condition_embedder.time_embedder.linear_2", "linear"),
        Rule("time_projection", "time_projection.1", "condition_embedder.time_proj", "linear"),
        Rule("head.modulation", "head.modulation", "scale_shift_table", "param"),
        Rule("head.proj", "head.head", "proj_out", "linear"),
    ]
    for i in range(num_layers):
        o, d, b = f"blocks.{i}", f"blocks.{i}", f"blocks.{i}"
        rules += [
            Rule(f"{o}.modulation", f"{b}.modulation", f"{d}.scale_shift_table", "param"),
            # Official norm3 (affine, before cross-attention) is diffusers norm2.
            Rule(f"{o}.cross_norm", f"{b}.norm3", f"{d}.norm2", "layernorm"),
            Rule(f"{o}.ffn.fc1", f"{b}.ffn.0", f"{d}.ffn.net.0.proj", "linear"),
            Rule(f"{o}.ffn.fc2", f"{b}.ffn.2", f"{d}.ffn.net.2", "linear"),
        ]
        for ours_attn, off_attn, dif_attn in (("self_attn", "self_attn", "attn1"), ("cross_attn", "cross_attn", "attn2")):
            for p in "qkv":
                rules.append(Rule(f"{o}.{ours_attn}.{p}", f"{b}.{off_attn}.{p}", f"{d}.{dif_attn}.to_{p}", "linear"))
            rules.append(Rule(f"{o}.{ours_attn}.o", f"{b}.{off_attn}.o", f"{d}.{dif_attn}.to_out.0", "linear"))
            for p in "qk":
                rules.append(Rule(f"{o}.{ours_attn}.norm_{p}", f"{b}.{off_attn}.norm_{p}", f"{d}.{dif_attn}.norm_{p}", "rmsnorm"))
    return rules


def dit_keymap(cfg, layout: str) -> KeyMap:
    """The DiT `KeyMap` for a `DiTConfig`."""
    return KeyMap(dit_rules(cfg.num_layers, cfg.patch_size, cfg.in_dim), layout)
