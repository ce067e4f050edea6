"""Prompts -> the zero-padded text context the DiT takes (spec section 2 item 3, gotcha 4).

The official pipeline keeps T5's output only up to each prompt's length (`</s>` included) and the
DiT zero-pads it back to 512 rows before its text MLP. We return that padded context directly:
rows at or beyond a prompt's length are exactly zero, whatever the encoder computed there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from wanjax.models.umt5 import UMT5Config, UMT5Encoder
from wanjax.text.tokenizer import TEXT_LEN, Tokenizer


def check_encoder_inputs(cfg: UMT5Config, ids, mask) -> None:
    """Raises ValueError naming the bad shape or value for inputs the encoder cannot take."""
    ids, mask = np.asarray(ids), np.asarray(mask)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"ids must be [B, L] with L >= 1; got shape {ids.shape}")
    if mask.shape != ids.shape:
        raise ValueError(f"mask shape {mask.shape} != ids shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {cfg.vocab_size}); got range [{ids.min()}, {ids.max()}]"
        )
    empty = np.flatnonzero((mask != 0).sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"rows {empty.tolist()} of the mask have no valid token")


def zero_pad_context(
    hidden: Float[Array, "b l d"], lengths: Int[Array, " b"], text_len: int
) -> Float[Array, "b text_len d"]:
    """Keeps rows `< lengths[i]` of each sequence, zeroes the rest and pads/crops to `text_len`."""
    hidden = jnp.asarray(hidden)
    b, seq, _ = hidden.shape
    if seq < text_len:
        hidden = jnp.pad(hidden, ((0, 0), (0, text_len - seq), (0, 0)))
    hidden = hidden[:, :text_len]
    keep = jnp.arange(text_len)[None, :] < jnp.asarray(lengths).reshape(b, 1)
    return jnp.where(keep[..., None], hidden, jnp.zeros((), hidden.dtype))


class TextEncoder:
    """`encoder(ids [B, L], mask [B, L]) -> hidden [B, L, d_model]` (float32), inputs checked.

    One jitted function: it compiles once per input shape and is reused for new prompts.
    `trace_count` counts compilations.
    """

    def __init__(self, module: UMT5Encoder):
        self.cfg = module.cfg
        self.graphdef, self.state = nnx.split(module)
        self.trace_count = 0

        def forward(state, ids, mask):
            self.trace_count += 1
            return nnx.merge(self.graphdef, state)(ids, mask)

        self._forward = jax.jit(forward)

    def __call__(self, ids: Int[Array, "b l"], mask: Int[Array, "b l"]) -> Float[Array, "b l d"]:
        check_encoder_inputs(self.cfg, ids, mask)
        return self._forward(
            self.state, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
        )


class PromptEmbeddings(NamedTuple):
    """`context [B, text_len, d_model]` float32 with zero rows past `lengths [B]` (int32)."""

    context: jax.Array
    lengths: np.ndarray


def encode_prompts(
    encoder: TextEncoder | UMT5Encoder,
    tokenizer: Tokenizer,
    prompts: str | Sequence[str],
    text_len: int = TEXT_LEN,
) -> PromptEmbeddings:
    """Cleans, tokenizes and encodes `prompts`, then trims each to its length and zero-pads.

    Pass a `TextEncoder` to reuse its compilation across calls; a bare `UMT5Encoder` is wrapped
    (and compiled) on each call.
    """
    if isinstance(encoder, UMT5Encoder):
        encoder = TextEncoder(encoder)
    if tokenizer.max_length > text_len:
        raise ValueError(
            f"tokenizer max_length {tokenizer.max_length} exceeds text_len {text_len}: prompts "
            "could keep more rows than the context holds"
        )
    tokens = tokenizer(prompts)
    hidden = encoder(tokens.ids, tokens.mask)
    lengths = tokens.lengths
    return PromptEmbeddings(zero_pad_context(hidden, lengths, text_len), lengths)
