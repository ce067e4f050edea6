"""Precomputed text embeddings on disk, so training does not run the 5.7B encoder every step.

Layout of a cache folder:

    index.json               format, version, d_model, dtype, max_length, encoder, shard list
    shard-00000.safetensors  one tensor `[length, d_model]` per prompt, named by the prompt key;
                             the header metadata lists (key, prompt, length) for the shard
    negative.safetensors     the negative prompt's embedding (optional), kept apart from prompts

A prompt's key is the SHA-256 of its cleaned text (`clean_text`), so prompts that clean to the
same text share one entry. Every file is written to a temporary name and renamed into place, and
a shard only counts once `index.json` lists it: an interrupted run leaves the cache as it was
after the last completed shard, and running the build again resumes from there. One writer at a
time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from wanjax.models.umt5 import UMT5Encoder
from wanjax.text.encode import TextEncoder, encode_prompts
from wanjax.text.prompts import SAMPLE_NEG_PROMPT
from wanjax.text.tokenizer import Tokenizer, clean_text

FORMAT = "wanjax-text-cache"
VERSION = 1
INDEX = "index.json"
NEGATIVE = "negative.safetensors"
_DTYPES = {"bfloat16": np.dtype(jnp.bfloat16), "float32": np.dtype(np.float32)}


def prompt_key(prompt: str) -> str:
    """The cache key of a prompt: SHA-256 of its cleaned text."""
    return hashlib.sha256(clean_text(prompt).encode("utf-8")).hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Runs `write(tmp)` then renames `tmp` to `path`; a failure leaves no file behind."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_index(path: Path) -> dict:
    index = path / INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{path} is not a text-embedding cache (no {INDEX})")
    meta = json.loads(index.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{index}: unsupported format {meta.get('format')!r} v{meta.get('version')}")
    return meta


class TextEmbeddingCache:
    """Reads a cache folder: `get(prompt) -> (embedding [length, d_model], length)`.

    Embeddings come back in the stored dtype (bfloat16 by default); they are the encoder output
    trimmed to the prompt's length (`</s>` included), ready for the DiT, which zero-pads them.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = _read_index(self.path)
        self.d_model = int(self.meta["d_model"])
        self.dtype = _DTYPES[self.meta["dtype"]]
        self.max_length = int(self.meta["max_length"])
        self._entries: dict[str, tuple[str, str, int]] = {}  # key -> (shard, prompt, length)
        for shard in self.meta["shards"]:
            with safe_open(self.path / shard, "np") as f:
                for key, prompt, length in json.loads(f.metadata()["entries"]):
                    self._entries[key] = (shard, prompt, int(length))

    def __len__(self) -> int:
        return len(self._entries)

    def check_settings(self, **settings) -> None:
        """Raises ValueError unless the cache was built with these settings (e.g. dtype=...)."""
        differ = {k: (self.meta[k], v) for k, v in settings.items() if self.meta[k] != v}
        if differ:
            raise ValueError(
                f"cache at {self.path} was built with other settings (stored, requested): {differ}"
            )

    def __contains__(self, prompt: str) -> bool:
        return prompt_key(prompt) in self._entries

    def prompts(self) -> list[str]:
        """The cached prompts as first given, in the order they were added."""
        return [prompt for _, prompt, _ in self._entries.values()]

    def get(self, prompt: str) -> tuple[np.ndarray, int]:
        """`(embedding [length, d_model], length)`; KeyError if the prompt was never cached."""
        key = prompt_key(prompt)
        if key not in self._entries:
            raise KeyError(f"prompt not in the text cache at {self.path}: {prompt[:80]!r}")
        shard, _, length = self._entries[key]
        with safe_open(self.path / shard, "np") as f:
            return f.get_tensor(key), length

    def get_batch(self, prompts: Sequence[str], text_len: int | None = None):
        """`(context [B, text_len, d_model] zero-padded, lengths [B])` for a batch of prompts."""
        text_len = text_len or self.max_length
        out = np.zeros((len(prompts), text_len, self.d_model), self.dtype)
        lengths = np.zeros((len(prompts),), np.int32)
        for i, prompt in enumerate(prompts):
            emb, lengths[i] = self.get(prompt)
            if lengths[i] > text_len:
                raise ValueError(f"prompt {i} has {lengths[i]} tokens > text_len {text_len}")
            out[i, : lengths[i]] = emb
        return out, lengths

    def has_negative(self) -> bool:
        return (self.path / NEGATIVE).is_file()

    def negative(self) -> tuple[np.ndarray, int]:
        """The negative prompt's `(embedding [length, d_model], length)`."""
        if not self.has_negative():
            raise FileNotFoundError(
                f"no negative-prompt embedding in {self.path}; build it with `write_negative`"
            )
        with safe_open(self.path / NEGATIVE, "np") as f:
            emb = f.get_tensor("embedding")
        return emb, int(emb.shape[0])

    def negative_prompt(self) -> str:
        with safe_open(self.path / NEGATIVE, "np") as f:
            return f.metadata()["prompt"]


class TextCacheWriter:
    """Appends embeddings to a cache folder, one atomically written shard at a time.

    Use as a context manager (flushes on a clean exit) or call `flush()`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        d_model: int,
        max_length: int,
        dtype: str = "bfloat16",
        encoder: str = "",
        shard_size: int = 256,
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown cache dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob("*.tmp"):  # left by a killed writer
            stale.unlink()
        self.shard_size = shard_size
        meta = {"d_model": d_model, "dtype": dtype, "max_length": max_length, "encoder": encoder}
        if (self.path / INDEX).is_file():
            existing = TextEmbeddingCache(self.path)
            existing.check_settings(**meta)
            self.meta = existing.meta
            self._keys = set(existing._entries)
        else:
            self.meta = {"format": FORMAT, "version": VERSION, **meta, "shards": []}
            self._keys = set()
            self._write_index(self.meta)
        self._dtype = _DTYPES[dtype]
        self._buffer: dict[str, tuple[str, np.ndarray]] = {}

    def __contains__(self, prompt: str) -> bool:
        key = prompt_key(prompt)
        return key in self._keys or key in self._buffer

    def add(self, prompt: str, embedding: np.ndarray) -> None:
        """Queues one prompt's trimmed embedding `[length, d_model]`; writes a shard when full."""
        embedding = self._check(embedding, prompt)
        key = prompt_key(prompt)
        if key in self._keys or key in self._buffer:
            return
        self._buffer[key] = (prompt, embedding)
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Writes the queued embeddings as one new shard, then the index that lists it."""
        if not self._buffer:
            return
        shard = self._next_shard_name()
        tensors = {key: emb for key, (_, emb) in self._buffer.items()}
        entries = [[key, prompt, int(emb.shape[0])] for key, (prompt, emb) in self._buffer.items()]
        _atomic_write(
            self.path / shard,
            lambda tmp: save_file(tensors, str(tmp), metadata={"entries": json.dumps(entries)}),
        )
        meta = {**self.meta, "shards": [*self.meta["shards"], shard]}
        self._write_index(meta)
        self.meta = meta
        self._keys |= set(self._buffer)
        self._buffer = {}

    def _write_index(self, meta: dict) -> None:
        _atomic_write(self.path / INDEX, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))

    def set_negative(self, prompt: str, embedding: np.ndarray) -> None:
        """Stores the negative prompt's trimmed embedding (replacing any previous one)."""
        embedding = self._check(embedding, prompt)
        _atomic_write(
            self.path / NEGATIVE,
            lambda tmp: save_file({"embedding": embedding}, str(tmp), metadata={"prompt": prompt}),
        )

    def _check(self, embedding, prompt: str) -> np.ndarray:
        embedding = np.asarray(embedding)
        d, n = self.meta["d_model"], self.meta["max_length"]
        if embedding.ndim != 2 or embedding.shape[1] != d or not 1 <= embedding.shape[0] <= n:
            raise ValueError(
                f"embedding for {prompt[:40]!r} has shape {embedding.shape}; expected "
                f"[length in 1..{n}, {d}]"
            )
        return np.ascontiguousarray(embedding.astype(self._dtype))

    def _next_shard_name(self) -> str:
        taken = set(self.meta["shards"])
        i = len(taken)
        while f"shard-{i:05d}.safetensors" in taken:
            i += 1
        return f"shard-{i:05d}.safetensors"  # an unlisted file of that name is an orphan: replaced

    def __enter__(self) -> TextCacheWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()


def _embed_in_batches(
    encoder: TextEncoder, tokenizer: Tokenizer, prompts: list[str], batch_size: int
) -> Iterable[tuple[str, np.ndarray]]:
    """Yields `(prompt, trimmed embedding)`; the last batch is padded to keep one compiled shape."""
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
        context, lengths = encode_prompts(encoder, tokenizer, padded, tokenizer.max_length)
        context = np.asarray(context)
        for i, prompt in enumerate(chunk):
            yield prompt, context[i, : lengths[i]]


def build_text_cache(
    path: str | Path,
    encoder: TextEncoder | UMT5Encoder,
    tokenizer: Tokenizer,
    prompts: Iterable[str],
    *,
    negative_prompt: str | None = SAMPLE_NEG_PROMPT,
    batch_size: int = 8,
    shard_size: int = 256,
    dtype: str = "bfloat16",
    encoder_name: str = "",
    progress: bool = False,
) -> TextEmbeddingCache:
    """Encodes every prompt not yet cached at `path` (resuming an interrupted build) and stores it.

    `negative_prompt` (default: the official Wan2.2 one) is stored too unless None.
    `encoder_name` (e.g. the checkpoint path) is recorded and must match when appending later.
    `progress` shows a progress bar over the prompts to encode.
    """
    if not tokenizer.clean:
        raise ValueError("the cache keys prompts by their cleaned text; use a cleaning tokenizer")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(encoder, UMT5Encoder):
        encoder = TextEncoder(encoder)
    writer = TextCacheWriter(
        path, d_model=encoder.cfg.d_model, max_length=tokenizer.max_length, dtype=dtype,
        encoder=encoder_name, shard_size=shard_size,
    )
    todo, seen = [], set()
    for prompt in prompts:
        key = prompt_key(prompt)
        if key not in seen and prompt not in writer:
            seen.add(key)
            todo.append(prompt)
    with writer, tqdm(total=len(todo), desc="encoding prompts", unit="prompt",
                      disable=not progress) as bar:
        for prompt, embedding in _embed_in_batches(encoder, tokenizer, todo, batch_size):
            writer.add(prompt, embedding)
            bar.update(1)
    if negative_prompt is not None:
        write_negative(path, encoder, tokenizer, negative_prompt, batch_size=batch_size)
    return TextEmbeddingCache(path)


def write_negative(
    path: str | Path,
    encoder: TextEncoder | UMT5Encoder,
    tokenizer: Tokenizer,
    prompt: str = SAMPLE_NEG_PROMPT,
    batch_size: int = 1,
) -> None:
    """Encodes and stores the negative prompt in an existing cache folder (once per cache).

    `batch_size` only picks the compiled batch shape (reuse the build's to avoid a recompile).
    """
    cache = TextEmbeddingCache(path)
    if cache.has_negative() and cache.negative_prompt() == prompt:
        return
    ((_, embedding),) = _embed_in_batches(
        encoder if isinstance(encoder, TextEncoder) else TextEncoder(encoder), tokenizer, [prompt],
        batch_size,
    )
    writer = TextCacheWriter(
        path, d_model=cache.d_model, max_length=cache.max_length, dtype=cache.meta["dtype"],
        encoder=cache.meta["encoder"],
    )
    writer.set_negative(prompt, embedding)
