"""Streaming tensor readers: one tensor at a time, never a whole shard in memory.

`SafetensorsFile` parses the safetensors header itself (8-byte little-endian length, then JSON
with each tensor's dtype, shape and byte range) and reads a tensor by seeking to its range and
`readinto` a fresh numpy buffer: no mmap (mapped pages would count as resident memory) and no
`safetensors` call that loads a file. `TorchFile` opens a `.pth` pickle with
`torch.load(mmap=True)` when torch is installed (a legacy non-zip pickle is read whole).
`TensorSource` puts the files of one component (the shards named by an index json, or a single
file) behind one `key -> tensor` view.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from convert.errors import ConversionError

SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
SAFETENSORS_CODES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
_MAX_HEADER = 100 << 20  # the safetensors library refuses larger headers too
_READ_CHUNK = 64 << 20


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, known from the file header alone."""

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute byte offset in `file` (0 for formats without one)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class SafetensorsFile:
    """A `.safetensors` file whose header is checked against the file size on open."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        try:
            self.header_bytes, header = self._read_header()
            self.metadata = header.pop("__metadata__", None) or {}
            self.tensors = self._parse(header)
        except BaseException:
            self._file.close()
            raise

    def _read_header(self) -> tuple[bytes, dict]:
        if self.size < 8:
            raise ConversionError(f"{self.path} is truncated: {self.size} bytes, no header")
        (length,) = struct.unpack("<Q", self._file.read(8))
        if length > min(_MAX_HEADER, self.size - 8):
            raise ConversionError(
                f"{self.path} is truncated or not a safetensors file: header length {length} "
                f"does not fit in {self.size} bytes"
            )
        raw = self._file.read(length)
        try:
            header = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConversionError(
                f"{self.path} is not a safetensors file: bad header ({e})"
            ) from None
        if not isinstance(header, dict):
            raise ConversionError(f"{self.path} is not a safetensors file: header is not an object")
        self.data_start = 8 + length
        return raw, header

    def _parse(self, header: dict) -> dict[str, TensorInfo]:
        data_size = self.size - self.data_start
        tensors = {}
        for key, entry in header.items():
            try:
                code, shape = entry["dtype"], tuple(entry["shape"])
                begin, end = entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ConversionError(f"{self.path}: malformed header entry for {key!r}") from None
            if code not in SAFETENSORS_DTYPES:
                raise ConversionError(
                    f"{self.path}: tensor {key} has dtype {code}, which is not supported "
                    f"(supported: {', '.join(SAFETENSORS_DTYPES)})"
                )
            offset = self.data_start + begin
            info = TensorInfo(key, SAFETENSORS_DTYPES[code], shape, self.path, offset)
            if end - begin != info.nbytes or begin < 0:
                raise ConversionError(
                    f"{self.path}: tensor {key} spans {end - begin} bytes but dtype {code} and "
                    f"shape {list(shape)} need {info.nbytes}"
                )
            if end > data_size:
                raise ConversionError(
                    f"{self.path} is truncated: tensor {key} ends at data byte {end}, but the "
                    f"file holds only {data_size} bytes of data"
                )
            tensors[key] = info
        return tensors

    def header_sha256(self) -> str:
        """A cheap fingerprint: the hash of the header (names, dtypes, shapes and offsets)."""
        return hashlib.sha256(self.header_bytes).hexdigest()

    def read(self, key: str) -> np.ndarray:
        info = self.tensors[key]
        out = np.empty(info.shape, info.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        self._file.seek(info.offset)
        done = 0
        while done < info.nbytes:
            n = self._file.readinto(view[done : done + _READ_CHUNK])
            if not n:
                raise ConversionError(f"{self.path} is truncated: short read in tensor {key}")
            done += n
        return out

    def close(self) -> None:
        self._file.close()


class TorchFile:
    """A torch pickle (`.pth`) state dict, memory-mapped; needs torch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.size = self.path.stat().st_size
        try:
            import torch
        except ImportError:
            raise ConversionError(
                f"{self.path} is a torch pickle; reading it needs PyTorch (pip install torch)"
            ) from None
        mmap = _torch_format(self.path) == "zip"
        try:
            state = torch.load(self.path, map_location="cpu", mmap=mmap, weights_only=True)
        except Exception as e:  # torch raises many types for a broken pickle
            raise ConversionError(f"{self.path} is not a readable torch checkpoint: {e}") from None
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ConversionError(f"{self.path} does not hold a state dict")
        self._state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self.metadata = {}
        self.tensors = {
            k: TensorInfo(k, _torch_dtype(v.dtype, self.path, k), tuple(v.shape), self.path, 0)
            for k, v in self._state.items()
        }

    def header_sha256(self) -> str | None:
        return None

    def read(self, key: str) -> np.ndarray:
        import torch

        t = self._state[key].contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        return t.numpy().copy()

    def close(self) -> None:
        self._state = {}


def _torch_format(path: Path) -> str:
    """'zip' (`torch.save` since 1.6: memory-mappable) or 'legacy' (a bare pickle, read whole).

    A zip whose directory at the end is gone is a truncated file; torch itself would only say
    "Invalid argument".
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            raise ConversionError(
                f"{path} is truncated or corrupt: a torch zip checkpoint without its zip directory "
                f"({path.stat().st_size} bytes)"
            )
        return "zip"
    if magic[:1] == b"\x80":  # pickle protocol >= 2
        return "legacy"
    raise ConversionError(f"{path} is not a torch checkpoint (starts with {magic!r})")


def _torch_dtype(dtype, path, key) -> np.dtype:
    import torch

    table = {
        torch.float64: np.dtype("<f8"), torch.float32: np.dtype("<f4"),
        torch.float16: np.dtype("<f2"), torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
        torch.int64: np.dtype("<i8"), torch.int32: np.dtype("<i4"),
        torch.uint8: np.dtype("u1"), torch.bool: np.dtype("?"),
    }
    if dtype not in table:
        raise ConversionError(f"{path}: tensor {key} has unsupported dtype {dtype}")
    return table[dtype]


def open_tensor_file(path: str | Path) -> SafetensorsFile | TorchFile:
    path = Path(path)
    if path.suffix == ".safetensors":
        return SafetensorsFile(path)
    if path.suffix in (".pth", ".pt", ".bin"):
        return TorchFile(path)
    raise ConversionError(f"{path}: unknown checkpoint file type (expected .safetensors or .pth)")


class TensorSource:
    """The tensors of one component under their checkpoint names, across one or more files.

    `weight_map` (from an index json) names the file of each key; without it every tensor of every
    file is used. `strip_prefix` removes a key prefix such as ComfyUI's `model.diffusion_model.`.
    """

    def __init__(
        self,
        paths: Iterable[str | Path],
        weight_map: Mapping[str, str] | None = None,
        strip_prefix: str = "",
    ):
        self.files = []
        try:
            for p in paths:
                self.files.append(open_tensor_file(p))
            self.tensors = self._collect(weight_map, strip_prefix)
        except BaseException:
            self.close()
            raise
        self._file_of = {f.path: f for f in self.files}
        self._order = {f.path: i for i, f in enumerate(self.files)}

    def _collect(self, weight_map, strip_prefix) -> dict[str, TensorInfo]:
        by_name = {f.path.name: f for f in self.files}
        out: dict[str, TensorInfo] = {}
        if weight_map is None:
            pairs = [(k, f) for f in self.files for k in f.tensors]
        else:
            pairs = []
            for key, name in weight_map.items():
                f = by_name[name]
                if key not in f.tensors:
                    raise ConversionError(
                        f"the index puts {key} in {f.path}, but that file does not hold it"
                    )
                pairs.append((key, f))
        for key, f in pairs:
            name = key.removeprefix(strip_prefix) if strip_prefix else key
            if name in out:
                raise ConversionError(
                    f"tensor {name} appears twice ({out[name].file} and {f.path})"
                )
            out[name] = f.tensors[key]
        self._raw_key = {name: info.key for name, info in out.items()}
        return out

    def keys(self) -> list[str]:
        return list(self.tensors)

    def read(self, key: str) -> np.ndarray:
        info = self.tensors[key]
        return self._file_of[info.file].read(self._raw_key[key])

    def position(self, key: str) -> tuple[int, int]:
        """(file number, byte offset): sorting by it reads the files front to back."""
        info = self.tensors[key]
        return self._order[info.file], info.offset

    def renamed(self, names: Mapping[str, str]) -> TensorSource:
        """A view exposing `names` (`new name -> existing name`) only; the files stay shared."""
        view = object.__new__(TensorSource)
        view.files, view._file_of, view._order = self.files, self._file_of, self._order
        view.tensors = {new: self.tensors[old] for new, old in names.items()}
        view._raw_key = {new: self._raw_key[old] for new, old in names.items()}
        return view

    def file_summaries(self, root: Path) -> list[dict]:
        """Provenance: each file's path under `root`, size and header hash (not a data hash:
        hashing 57 GB would take minutes)."""
        out = []
        for f in self.files:
            inside = f.path.is_relative_to(root)
            name = f.path.relative_to(root).as_posix() if inside else f.path.name
            entry = {"file": name, "bytes": f.size}
            digest = f.header_sha256()
            if digest:
                entry["header_sha256"] = digest
            out.append(entry)
        return out

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
