"""The calibrated student on disk: `calibration.json` plus one folder per expert.

    OUT/calibration.json   format, version, quantization format, storage, protected layers,
                           algorithm and options, per-layer errors, sensitivity, sample config
    OUT/dit_high/          HiF4: a packed checkpoint (`wanjax.quant.packed_model.save_packed`:
    OUT/dit_low/           canonical HiF4 bytes, smoothing vectors, protected layers in fp);
                           other formats: a fake-quant checkpoint (`params/` with the quantized
                           kernels as floats and the smoothing vectors, layers listed here)

`load_quantized_student(OUT)` gives back a `DualExpertDiT` and the student's `SampleConfig`;
`mode='fake'` runs the layers as `QuantLinear` (fake quantization, any backend),
`mode='kernel'` (HiF4 only) as `PackedLinear` on the packed HiF4 matmul kernels.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from wanjax.config import DiTConfig, DualExpertConfig, Precision
from wanjax.io import checkpoint
from wanjax.models.dit import WanDiT
from wanjax.models.dual_expert import DualExpertDiT
from wanjax.quant.linear import QuantConfig, QuantLinear, SmoothingScale
from wanjax.quant.rules import QuantRule, apply_quantization, path_str
from wanjax.sampling.loop import SampleConfig

FORMAT = "wanjax-calibrated-student"
VERSION = 1
MANIFEST = "calibration.json"
EXPERTS = ("high", "low")
STORAGES = ("packed", "fake-quant")


@dataclasses.dataclass
class CalibrationManifest:
    quant_format: str
    storage: str
    boundary: float
    sample_config: dict
    experts: dict[str, dict]  # expert -> {path, config, precision, protected, layers, ...}
    options: dict
    source: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **_plain(dataclasses.asdict(self))}

    @classmethod
    def from_json(cls, d: dict) -> CalibrationManifest:
        if (d.get("format"), d.get("version")) != (FORMAT, VERSION):
            raise ValueError(f"not a {FORMAT!r} v{VERSION} manifest: format {d.get('format')!r} "
                             f"v{d.get('version')}")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - {"source"} - set(d))
        if missing:
            raise ValueError(f"calibration manifest is missing {missing}")
        return cls(**{k: d[k] for k in fields if k in d})

    def sampling(self) -> SampleConfig:
        sc = dict(self.sample_config)
        if sc.get("timesteps") is not None:
            sc["timesteps"] = tuple(sc["timesteps"])
        return SampleConfig(**sc)

    def protected(self) -> dict[str, list[str]]:
        return {e: list(r.get("protected", [])) for e, r in self.experts.items()}


def _plain(x: Any) -> Any:
    """JSON-ready: tuples to lists, numpy scalars to floats, dict keys to str."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return x.item()
    return x


def write_manifest(path: str | Path, manifest: CalibrationManifest) -> None:
    Path(path, MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True))


def read_manifest(path: str | Path) -> CalibrationManifest:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a calibrated student (no {MANIFEST}); write one "
                                "with `python -m train.calibrate`")
    return CalibrationManifest.from_json(json.loads(file.read_text()))


# ----------------------------------------------------------------------------------------------
# Save


def _quant_layers(module: nnx.Module) -> dict[str, QuantLinear]:
    return {path_str(p): n for p, n in nnx.iter_graph(module)
            if isinstance(n, QuantLinear) and p and n.enabled}


def _precision(module: WanDiT) -> dict:
    return {"param_dtype": jnp.dtype(module.patch_embedding.kernel.dtype).name,
            "compute_dtype": jnp.dtype(module.patch_embedding.compute_dtype).name}


def save_quantized_student(path: str | Path, experts: dict[str, WanDiT],
                           manifest: CalibrationManifest) -> Path:
    """Write `experts` (calibrated, weights frozen) and the manifest to the new folder `path`."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty")
    path.mkdir(parents=True, exist_ok=True)
    for e in EXPERTS:
        module = experts[e]
        layers = _quant_layers(module)
        unfrozen = [p for p, n in layers.items() if not n.config.weights_quantized]
        if unfrozen:
            raise ValueError(f"{e}: layers {unfrozen[:4]} are not frozen (quantize_weights_)")
        info = manifest.experts.setdefault(e, {})
        info.update(path=f"dit_{e}", config=checkpoint.dit_config_to_json(module.cfg),
                    precision=_precision(module),
                    quantized={p: {"weight_fmt": n.config.weight_fmt, "act_fmt": n.config.act_fmt,
                                   "smoothing": n.smoothing is not None}
                               for p, n in sorted(layers.items())})
        if manifest.storage == "packed" and layers:  # (an expert no step uses stays float)
            from wanjax.quant.packed_model import pack_model, save_packed

            if any(n.config.weight_fmt != "hif4" for n in layers.values()):
                raise ValueError("packed storage holds HiF4 weights only; use storage "
                                 "'fake-quant' for other formats")
            copy = nnx.clone(module)
            pack_model(copy, QuantRule(include=tuple(sorted(layers)) or ("-",)))
            save_packed(path / f"dit_{e}", copy, meta={"expert": e, "format": FORMAT})
        else:
            flat = {path_str(p): v.get_value() for p, v in nnx.to_flat_state(nnx.state(module))}
            checkpoint.save_params(path / f"dit_{e}" / "params", flat)
    write_manifest(path, manifest)
    return path


# ----------------------------------------------------------------------------------------------
# Load


def packed_to_fake(module: WanDiT) -> WanDiT:
    """Replace every `PackedLinear` by the equivalent frozen `QuantLinear` (in place)."""
    from wanjax.quant.packed_linear import PackedLinear
    from wanjax.quant.packing import unpack

    found = [(p, n) for p, n in nnx.iter_graph(module) if isinstance(n, PackedLinear)]
    for p, layer in found:
        kernel = unpack(layer.canonical_weight())
        dtype = jnp.float32 if layer.bias is None else layer.bias.dtype
        bias = None if layer.bias is None else nnx.Param(layer.bias[...])
        smoothing = None if layer.smoothing is None else layer.smoothing[...]
        new = QuantLinear(layer.in_features, layer.out_features, compute_dtype=layer.compute_dtype,
                          config=QuantConfig("hif4", layer.act_fmt), smoothing=smoothing,
                          params=(nnx.Param(kernel.astype(dtype)), bias))
        new.config = dataclasses.replace(new.config, weights_quantized=True)
        parent = module
        for key in p[:-1]:
            parent = parent[key] if isinstance(key, int) else getattr(parent, key)
        if isinstance(p[-1], int):
            parent[p[-1]] = new
        else:
            setattr(parent, p[-1], new)
    return module


def _load_fake(folder: Path, cfg: DiTConfig, info: dict) -> WanDiT:
    prec = Precision(jnp.dtype(info["precision"]["param_dtype"]),
                     jnp.dtype(info["precision"]["compute_dtype"]))

    def build() -> WanDiT:
        model = WanDiT(cfg, prec, rngs=nnx.Rngs(0))
        for p, spec in info["quantized"].items():
            apply_quantization(model, QuantRule(include=(p,), config=QuantConfig(
                spec["weight_fmt"], spec["act_fmt"])))
        for p, n in _quant_layers(model).items():
            if info["quantized"][p]["smoothing"]:
                n.smoothing = SmoothingScale(jnp.ones((n.in_features,), jnp.float32))
            n.config = dataclasses.replace(n.config, weights_quantized=True)
        return model

    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    variables = {path_str(p): v for p, v in nnx.to_flat_state(state)}
    wanted = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in variables.items()}
    flat = checkpoint.load_params(folder / "params", wanted)
    for k, v in variables.items():
        v.set_value(flat[k])
    return nnx.merge(graphdef, state)


def load_quantized_student(path: str | Path, mode: str = "fake"
                           ) -> tuple[DualExpertDiT, SampleConfig, CalibrationManifest]:
    """The calibrated student written by `save_quantized_student`, ready for sampling."""
    if mode not in ("fake", "kernel"):
        raise ValueError(f"mode must be 'fake' or 'kernel', got {mode!r}")
    path = Path(path)
    manifest = read_manifest(path)
    experts = {}
    for e in EXPERTS:
        info = manifest.experts[e]
        cfg = checkpoint.dit_config_from_json(info["config"])
        folder = path / info["path"]
        if manifest.storage == "packed" and info["quantized"]:
            from wanjax.quant.packed_model import load_packed

            module = load_packed(folder, cfg)
            if mode == "fake":
                packed_to_fake(module)
        else:
            if mode == "kernel" and info["quantized"]:
                raise ValueError(f"{path} stores {manifest.quant_format} fake-quant weights; the "
                                 "kernel path exists for packed HiF4 only")
            module = _load_fake(folder, cfg, info)
        experts[e] = module
    dual = DualExpertConfig(high=experts["high"].cfg, low=experts["low"].cfg,
                            boundary=manifest.boundary)
    model = nnx.eval_shape(lambda: DualExpertDiT(dual, rngs=nnx.Rngs(0)))
    model.high, model.low = experts["high"], experts["low"]
    return model, manifest.sampling(), manifest
