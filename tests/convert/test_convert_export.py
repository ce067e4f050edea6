"""Round trip: wanjax -> diffusers layout; diffusers loads it and computes the same output."""

import json

import numpy as np
import pytest
import torch
from convert_helpers import CFG, inputs
from safetensors import safe_open

from convert import export, wan
from convert.snapshot import convert
from convert.writers import SafetensorsWriter
from torch_refs import diffusers_dit_forward, state_dict_numpy
from wanjax.io import checkpoint


def _stored(path):
    return {k: v for _, group in checkpoint.iter_param_groups(path) for k, v in group.items()}


@pytest.fixture(scope="module")
def exported(converted, tmp_path_factory):
    dst = tmp_path_factory.mktemp("export") / "diffusers"
    code = export.main([str(converted["diffusers"][1]), str(dst), "--max-shard-size", "2MB"])
    assert code == 0
    return dst


def test_layout_and_index(exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["model_index.json", "transformer", "transformer_2"]
    assert json.loads((exported / "model_index.json").read_text())["boundary_ratio"] == 0.875
    shards = sorted((exported / "transformer").glob("*.safetensors"))
    assert len(shards) >= 3
    index_file = exported / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    assert sorted(set(index["weight_map"].values())) == [p.name for p in shards]


@pytest.mark.parametrize("folder, expert", [("transformer", "high"), ("transformer_2", "low")])
def test_diffusers_loads_export_and_matches(exported, experts, folder, expert, monkeypatch):
    from diffusers import WanTransformer3DModel

    # Without `accelerate` installed, diffusers refuses models with fp32-pinned modules; they only
    # matter for fp16 loads, and this one is float32.
    monkeypatch.setattr(WanTransformer3DModel, "_keep_in_fp32_modules", None)
    loaded = WanTransformer3DModel.from_pretrained(exported / folder).eval()
    original = experts[expert]
    got, want = state_dict_numpy(loaded), state_dict_numpy(original)
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    x, t, _, padded = inputs(CFG)
    np.testing.assert_array_equal(
        diffusers_dit_forward(loaded, x, t, padded), diffusers_dit_forward(original, x, t, padded)
    )


def test_export_converts_back_bit_identically(exported, converted, tmp_path):
    convert(exported, tmp_path / "again", dtype="fp32", log=lambda s: None)
    for name in ("dit_high", "dit_low"):
        back = _stored(tmp_path / "again" / name)
        first = _stored(converted["diffusers"][1] / name)
        assert sorted(back) == sorted(first)
        assert all(back[k].tobytes() == v.tobytes() for k, v in first.items())


def test_bf16_export_keeps_stored_bits(snapshots, tmp_path):
    convert(snapshots["official"], tmp_path / "bf16", log=lambda s: None)
    assert export.main([str(tmp_path / "bf16"), str(tmp_path / "out"), "--expert", "low"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["transformer_2"]
    stored = _stored(tmp_path / "bf16" / "dit_low")
    single = tmp_path / "out" / "transformer_2" / "diffusion_pytorch_model.safetensors"
    with safe_open(single, "pt") as f:
        q = f.get_tensor("blocks.1.attn2.to_q.weight")
    assert q.dtype == torch.bfloat16
    ours = stored["blocks.1.cross_attn.q.kernel"]
    assert np.array_equal(q.view(torch.int16).numpy(), np.ascontiguousarray(ours.T).view(np.int16))


def test_export_errors_are_one_line(tmp_path, capsys, converted):
    assert export.main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "out").exists()
    assert wan.main([str(converted["official"][1]), str(tmp_path / "x")]) == 1  # not a snapshot
    assert "already a converted wanjax checkpoint" in capsys.readouterr().err


def test_safetensors_writer_pads_header(tmp_path):
    """The streaming writer's files read back with the safetensors library itself."""
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b.c": np.ones(5, np.float16)}
    with SafetensorsWriter(tmp_path / "x.safetensors", ["b.c", "a"], {"format": "pt"}) as w:
        for k, v in arrays.items():
            w.write(k, v)
    with safe_open(tmp_path / "x.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt"}
        for k, v in arrays.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)
