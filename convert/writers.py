"""Streaming safetensors writing: tensor by tensor, never a whole shard in memory.

The safetensors header (JSON with every tensor's dtype, shape and byte range) comes first in the
file, before the data, and the format allows it to be padded with spaces. So `SafetensorsWriter`
reserves room for the header, appends each tensor's bytes as it arrives, and fills the header in
on `close`. Shards are planned up front from tensor sizes, as diffusers' `max_shard_size` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from convert.readers import SAFETENSORS_CODES

_ENTRY_ROOM = 200  # bytes of header per tensor beyond its name: dtype, a 5-d shape, 2 offsets


class SafetensorsWriter:
    """Writes the tensors `keys` (in any order, each once) to `path`."""

    def __init__(
        self, path: str | Path, keys: Iterable[str], metadata: Mapping[str, str] | None = None
    ):
        self.path = Path(path)
        self.keys = list(keys)
        self.metadata = dict(metadata or {})
        room = sum(len(json.dumps(k)) + _ENTRY_ROOM for k in self.keys)
        room += len(json.dumps({"__metadata__": self.metadata})) + 64
        self.header_room = (room + 7) // 8 * 8  # data starts 8-byte aligned
        self.entries: dict[str, dict] = {}
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._file.write(b"\0" * (8 + self.header_room))
        self._end = 0

    def write(self, key: str, array: np.ndarray) -> None:
        if key not in self.keys or key in self.entries:
            raise ValueError(f"{self.path.name}: unexpected or repeated tensor {key}")
        array = np.ascontiguousarray(array)
        code = SAFETENSORS_CODES.get(array.dtype)
        if code is None:
            raise ValueError(f"{key}: dtype {array.dtype} cannot be stored in safetensors")
        self._file.write(memoryview(array.reshape(-1).view(np.uint8)))
        begin, self._end = self._end, self._end + array.nbytes
        self.entries[key] = {
            "dtype": code, "shape": list(array.shape), "data_offsets": [begin, self._end]
        }

    def close(self) -> None:
        missing = [k for k in self.keys if k not in self.entries]
        if missing:
            self._file.close()
            raise ValueError(f"{self.path.name}: tensors never written: {missing[:8]}")
        header = dict(self.entries)
        if self.metadata:
            header["__metadata__"] = self.metadata
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > self.header_room:
            raise AssertionError(f"header needs {len(raw)} bytes, {self.header_room} reserved")
        self._file.seek(0)
        self._file.write(np.uint64(self.header_room).tobytes())
        self._file.write(raw.ljust(self.header_room, b" "))
        self._file.close()

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()


def plan_shards(sizes: Mapping[str, int], max_bytes: int) -> list[list[str]]:
    """Consecutive runs of keys (in `sizes` order) of at most `max_bytes` each (a bigger tensor
    gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    filled = 0
    for key, nbytes in sizes.items():
        if shards[-1] and filled + nbytes > max_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(key)
        filled += nbytes
    return shards


def shard_file_names(count: int, stem: str = "diffusion_pytorch_model") -> list[str]:
    """diffusers' names: `stem.safetensors`, or `stem-00001-of-00004.safetensors` for shards."""
    if count == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_index(
    folder: Path, weight_map: Mapping[str, str], total_size: int,
    stem: str = "diffusion_pytorch_model",
) -> None:
    weight_map = dict(sorted(weight_map.items()))
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
