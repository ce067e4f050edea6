"""Streaming readers against the safetensors and torch libraries; layout detection; streaming."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from convert_helpers import CFG, official_config
from safetensors.torch import save_file

from convert import components, inspect, layouts, streaming
from convert.errors import ConversionError
from convert.readers import SafetensorsFile, TensorSource, TorchFile
from wanjax.io import checkpoint

TENSORS = {
    "a.f32": torch.randn(3, 5),
    "b.f16": torch.randn(7).half(),
    "c.bf16": torch.randn(2, 3, 4).bfloat16(),
    "d.i64": torch.arange(6).reshape(2, 3),
    "e.empty": torch.zeros(0, 4),
}


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def test_safetensors_reader_matches_library(tmp_path):
    save_file(TENSORS, tmp_path / "x.safetensors", metadata={"format": "pt"})
    f = SafetensorsFile(tmp_path / "x.safetensors")
    assert f.metadata == {"format": "pt"}
    assert sorted(f.tensors) == sorted(TENSORS)
    for key, t in TENSORS.items():
        value = f.read(key)
        assert value.shape == tuple(t.shape) and value.tobytes() == _bits(t), key
    assert f.tensors["c.bf16"].dtype.name == "bfloat16"
    assert len(f.header_sha256()) == 64
    f.close()


def test_torch_pickle_reader(tmp_path, monkeypatch):
    torch.save({k: v for k, v in TENSORS.items() if k != "e.empty"}, tmp_path / "x.pth")
    f = TorchFile(tmp_path / "x.pth")
    for key in ("a.f32", "b.f16", "c.bf16", "d.i64"):
        assert f.read(key).tobytes() == _bits(TENSORS[key]), key
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ConversionError, match="needs PyTorch"):
        TorchFile(tmp_path / "x.pth")


def test_source_strips_prefix_and_orders_by_position(tmp_path):
    save_file({"model.diffusion_model.b": torch.ones(2), "model.diffusion_model.a": torch.ones(3)},
              tmp_path / "one.safetensors")
    with layouts.open_file(tmp_path / "one.safetensors") as source:
        assert sorted(source.keys()) == ["a", "b"]
        np.testing.assert_array_equal(source.read("a"), np.ones(3, np.float32))
        assert source.position("a") < source.position("b")  # data order in the file


def test_duplicate_tensor_across_files_is_refused(tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "a.safetensors")
    save_file({"w": torch.ones(2)}, tmp_path / "b.safetensors")
    with pytest.raises(ConversionError, match="appears twice"):
        TensorSource([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])


def test_layout_detection_and_override(snapshots, tmp_path):
    both = tmp_path / "both"
    shutil.copytree(snapshots["diffusers"], both)
    (both / "high_noise_model").mkdir()
    with pytest.raises(ConversionError, match="looks like both layouts"):
        layouts.detect(both)
    assert layouts.detect(both, "diffusers").layout == "diffusers"
    single = tmp_path / "folder"
    single.mkdir()
    first_shard = next((snapshots["diffusers"] / "transformer").glob("*00001*"))
    shutil.copy(first_shard, single / "w.safetensors")
    snap = layouts.detect(single)
    assert snap.single_file and snap.layout == "diffusers" and snap.root == single / "w.safetensors"


def test_official_config_infers_text_dim_from_shapes(snapshots):
    folder = snapshots["official"] / "high_noise_model"
    config = json.loads((folder / "config.json").read_text())
    assert "text_dim" not in config and config == official_config(CFG)
    with layouts.open_folder(folder) as source:
        assert layouts.dit_config_official(config, source) == CFG
        assert layouts.dit_config_from_shapes(source, "official") == CFG


def test_unsupported_diffusers_variant():
    with pytest.raises(ConversionError, match="image_dim=1280"):
        layouts.dit_config_diffusers({"num_attention_heads": 2, "attention_head_dim": 128,
                                      "image_dim": 1280, "ffn_dim": 8, "num_layers": 1})
    with pytest.raises(ConversionError, match="lacks ffn_dim, num_layers"):
        layouts.dit_config_diffusers({"num_attention_heads": 2, "attention_head_dim": 128})


def test_official_boundary_follows_model_type(tmp_path):
    (tmp_path / "high_noise_model").mkdir()
    (tmp_path / "high_noise_model" / "config.json").write_text(json.dumps({"model_type": "i2v"}))
    assert layouts.boundary(layouts.Snapshot(tmp_path, "official")) == 0.9


def test_registry_finds_text_encoder_and_vae(snapshots, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(snapshots["diffusers"], src)
    (src / "text_encoder").mkdir()
    (src / "vae").mkdir()
    found = {c.name: c.family for c, _ in components.found(layouts.detect(src))}
    assert found == {
        "dit_high": components.DIT, "dit_low": components.DIT, "text_encoder": components.UMT5,
        "vae": components.VAE,
    }


def test_streams_each_tensor_once_and_one_group_per_write(snapshots, tmp_path, monkeypatch):
    reads, writes = [], []
    original_read = TensorSource.read
    monkeypatch.setattr(
        TensorSource, "read", lambda self, k: reads.append(k) or original_read(self, k)
    )

    class RecordingWriter:
        def write_group(self, name, flat):
            assert {checkpoint.group_of(k) for k in flat} == {name}
            writes.append((name, sum(v.nbytes for v in flat.values())))

    snapshot = layouts.detect(snapshots["diffusers"])
    (component, location), *_ = components.found(snapshot)
    with components.open_source(location) as source:
        plan = streaming.plan(component, location, source, snapshot)
        summary = streaming.convert_component(plan, RecordingWriter(), streaming.DTYPES["fp32"])
    assert sorted(reads) == sorted(source.keys()) and len(set(reads)) == len(reads)
    assert len(writes) == len({n for n, _ in writes}) == 7  # 2 blocks + 5 top-level modules
    assert summary["bytes"] == sum(b for _, b in writes)
    block = dict(writes)["blocks.0"]
    assert max(b for _, b in writes) == block < summary["bytes"] / 2  # one group held at a time


def test_inspect_source_and_checkpoint(snapshots, converted, capsys):
    assert inspect.main([str(snapshots["official"])]) == 0
    out = capsys.readouterr().out
    assert "official snapshot" in out and "boundary 0.875" in out
    assert "high_noise_model" in out and "1,898,816" in out and "float32 x69" in out
    assert inspect.main([str(converted["diffusers"][1])]) == 0
    out = capsys.readouterr().out
    assert "wanjax checkpoint" in out and "(diffusers layout)" in out and "t >= 875" in out
    assert "dit_low" in out and "dim 256, 2 layers, 2 heads" in out


@pytest.mark.parametrize("shape, dtype", [((3000, 517), "bfloat16"), ((517, 3001), "float32")])
def test_fast_transpose_equals_numpy(shape, dtype):
    a = np.random.default_rng(0).standard_normal(shape).astype(np.dtype(dtype))
    out = streaming.transpose_2d(a)
    assert out.dtype == a.dtype and out.flags.c_contiguous
    assert out.tobytes() == np.ascontiguousarray(a.T).tobytes()
