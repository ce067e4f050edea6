"""Converting tiny official and diffusers snapshots: identical pytrees, torch-exact forwards."""

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from convert_helpers import BOUNDARY, CFG, inputs, official_state_dict, rel
from safetensors.numpy import save_file

import wanjax
from convert import components, layouts, wan
from convert.snapshot import convert
from torch_refs import diffusers_dit_forward, state_dict_numpy
from wanjax.io import checkpoint


def _stored(path, component):
    """`leaf -> array` exactly as stored (host numpy, stored dtype)."""
    out = {}
    for _, group in checkpoint.iter_param_groups(path / component):
        out.update(group)
    return out


def test_official_helper_agrees_with_diffusers_converter(experts):
    """The test's own diffusers->official rename inverts diffusers' official->diffusers one."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    sd = state_dict_numpy(experts["high"])
    official = official_state_dict(sd)
    back = convert_wan_transformer_to_diffusers(
        {f"model.diffusion_model.{k}": torch.from_numpy(v) for k, v in official.items()}
    )
    assert sorted(back) == sorted(sd)
    assert all(np.array_equal(back[k].numpy(), v) for k, v in sd.items())


def test_layouts_are_detected(snapshots):
    assert layouts.detect(snapshots["official"]).layout == "official"
    assert layouts.detect(snapshots["diffusers"]).layout == "diffusers"
    assert len(list((snapshots["diffusers"] / "transformer").glob("*.safetensors"))) >= 3


@pytest.mark.parametrize("component", ["dit_high", "dit_low"])
def test_both_layouts_give_bit_identical_pytrees(converted, component):
    official = _stored(converted["official"][1], component)
    diffusers = _stored(converted["diffusers"][1], component)
    assert sorted(official) == sorted(diffusers)
    for key, value in official.items():
        assert value.dtype == np.float32
        assert value.tobytes() == diffusers[key].tobytes(), key


@pytest.mark.parametrize("layout, expert", [("official", "high"), ("diffusers", "low")])
def test_forward_matches_torch_reference(converted, experts, layout, expert):
    model = wanjax.load_dit(converted[layout][1], expert=expert, dtype="float32")
    x, t, ctx, padded = inputs(CFG)
    expected = diffusers_dit_forward(experts[expert], x, t, padded)
    assert rel(model(x, t, ctx), expected) <= 1e-4


def test_experts_are_not_swapped(converted, experts):
    """High noise is `high_noise_model` / `transformer`: it must not match the low expert."""
    model = wanjax.load_dit(converted["diffusers"][1], expert="high", dtype="float32")
    x, t, ctx, padded = inputs(CFG)
    assert rel(model(x, t, ctx), diffusers_dit_forward(experts["low"], x, t, padded)) > 1e-2


@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_manifest(converted, experts, layout):
    meta, path = converted[layout]
    assert meta == checkpoint.read_manifest(path)
    assert meta["dtype"] == "float32" and meta["boundary"] == BOUNDARY
    assert meta["provenance"]["layout"] == layout
    n_params = sum(p.numel() for p in experts["high"].parameters())
    for name in ("dit_high", "dit_low"):
        comp = meta["components"][name]
        assert checkpoint.dit_config_from_json(comp["config"]) == CFG
        assert comp["num_params"] == n_params and comp["bytes"] == 4 * n_params
        files = comp["source"]["files"]
        assert len(files) >= 3
        for f in files:
            assert f["bytes"] > 0 and len(f["header_sha256"]) == 64


def test_bf16_default_rounds_like_torch(snapshots, converted, tmp_path):
    """Default --dtype bf16 stores torch's round-to-nearest-even of each float32 weight."""
    manifest = convert(snapshots["diffusers"], tmp_path / "bf16", log=lambda s: None)
    assert manifest["dtype"] == "bfloat16"
    ours = _stored(tmp_path / "bf16", "dit_low")
    fp32 = _stored(converted["diffusers"][1], "dit_low")
    for key, value in ours.items():
        assert value.dtype == ml_dtypes.bfloat16
        expected = torch.from_numpy(fp32[key]).to(torch.bfloat16).view(torch.int16).numpy()
        assert np.array_equal(value.view(np.int16), expected), key


def test_single_file_with_comfyui_prefix(experts, converted, tmp_path):
    """One .safetensors with `model.diffusion_model.` keys: config inferred from shapes alone."""
    sd = official_state_dict(state_dict_numpy(experts["high"]))
    prefixed = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    save_file(prefixed, tmp_path / "wan.safetensors")
    meta = convert(tmp_path / "wan.safetensors", tmp_path / "out", dtype="fp32", log=lambda s: None)
    assert list(meta["components"]) == ["dit"] and "boundary" not in meta
    assert checkpoint.dit_config_from_json(meta["components"]["dit"]["config"]) == CFG
    ours = _stored(tmp_path / "out", "dit")
    reference = _stored(converted["official"][1], "dit_high")
    assert all(ours[k].tobytes() == v.tobytes() for k, v in reference.items())
    model = wanjax.load_dit(tmp_path / "out", expert="high", dtype="float32")  # `dit` serves both
    x, t, ctx, padded = inputs(CFG)
    assert rel(model(x, t, ctx), diffusers_dit_forward(experts["high"], x, t, padded)) <= 1e-4


def test_refuses_to_overwrite_unless_asked(snapshots, tmp_path, capsys):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep").write_text("x")
    assert wan.main([str(snapshots["official"]), str(dst)]) == 2
    assert "already exists" in capsys.readouterr().err and (dst / "keep").exists()
    assert wan.main([str(snapshots["official"]), str(dst), "--overwrite", "--dtype", "fp32"]) == 0
    assert not (dst / "keep").exists() and (dst / "wanjax.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp dirs left


def test_skips_components_without_converter(copy_of, tmp_path, capsys, monkeypatch):
    """A registry entry without a family (a future component) is noted, not read."""
    src = copy_of("official")
    (src / "clip.pth").write_bytes(b"not read")
    extra = components.Component("clip", None, components.at(official=("clip.pth",)))
    monkeypatch.setattr(components, "REGISTRY", (*components.REGISTRY, extra))
    assert wan.main([str(src), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "skipping clip (clip.pth)" in out
    meta = json.loads((tmp_path / "out" / "wanjax.json").read_text())
    assert sorted(meta["components"]) == ["dit_high", "dit_low"]


def test_cli_help_runs_as_module():
    result = subprocess.run(
        [sys.executable, "-m", "convert.wan", "--help"], capture_output=True, text=True, check=True
    )
    assert "--layout {auto,official,diffusers}" in result.stdout
    assert "(default: bf16)" in result.stdout


def test_load_dit_converts_a_raw_snapshot_in_memory(snapshots, experts):
    model = wanjax.load_dit(snapshots["official"], expert="low")  # float32 by default
    x, t, ctx, padded = inputs(CFG)
    assert rel(model(x, t, ctx), diffusers_dit_forward(experts["low"], x, t, padded)) <= 1e-4
