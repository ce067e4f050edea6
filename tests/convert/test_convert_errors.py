"""Bad input: one `error:` line, a non-zero exit, and no partial output left behind."""

import errno
import json

import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file, save_file

from convert import hub, wan

INDEX = "diffusion_pytorch_model.safetensors.index.json"


def _run(capsys, src, dst, *extra):
    code = wan.main([str(src), str(dst), *extra])
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_failed_cleanly(code, err, dst, expected_code, *fragments):
    assert code == expected_code, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert not dst.exists()
    assert not [p.name for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")]


def _edit_tensor(folder, key, edit):
    """Rewrites the shard holding `key`: `edit(state_dict)` changes it in place."""
    index = json.loads((folder / INDEX).read_text())
    shard = folder / index["weight_map"][key]
    sd = load_file(shard)
    edit(sd)
    save_file(sd, shard)
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard.name}
    index["weight_map"].update(dict.fromkeys(sd, shard.name))
    (folder / INDEX).write_text(json.dumps(index))


def test_missing_shard(copy_of, tmp_path, capsys):
    src = copy_of("official")
    shard = sorted((src / "low_noise_model").glob("*-00002-of-*.safetensors"))[0]
    shard.unlink()
    code, err = _run(capsys, src, tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, "missing shard", shard.name)


def test_truncated_safetensors(copy_of, tmp_path, capsys):
    src = copy_of("diffusers")
    shard = sorted((src / "transformer_2").glob("*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    code, err = _run(capsys, src, tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, "is truncated", shard.name)


def test_garbage_safetensors_header(copy_of, tmp_path, capsys):
    src = copy_of("diffusers")
    shard = sorted((src / "transformer").glob("*.safetensors"))[0]
    shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 64)
    code, err = _run(capsys, src, tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, "not a safetensors file")


@pytest.mark.parametrize(
    "key, shape, fragment",
    [
        # a different element count: caught from the header, before any data is read
        ("blocks.1.attn1.to_q.weight", (256, 128), "has shape [256, 128], which does not fit"),
        # same element count, transposed: caught once the tensor is laid out
        ("condition_embedder.text_embedder.linear_1.weight", (32, 256), "maps to [256, 32]"),
    ],
)
def test_wrong_shape(copy_of, tmp_path, capsys, key, shape, fragment):
    src = copy_of("diffusers")

    def edit(sd):
        sd[key] = np.ones(shape, np.float32)

    _edit_tensor(src / "transformer", key, edit)
    code, err = _run(capsys, src, tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, key, fragment)


def test_unknown_and_missing_keys_are_listed(copy_of, tmp_path, capsys):
    src = copy_of("official")
    gone = ["blocks.0.cross_attn.norm_k.weight", "blocks.1.ffn.2.bias"]

    folder = src / "high_noise_model"
    for key in gone:
        _edit_tensor(folder, key, lambda sd, key=key: sd.pop(key))
    extra = np.zeros(3, np.float32)
    _edit_tensor(folder, "head.head.bias", lambda sd: sd.update(extra_adapter=extra))
    code, err = _run(capsys, src, tmp_path / "out")
    _assert_failed_cleanly(
        code, err, tmp_path / "out", 1, "dit_high (high_noise_model)", "missing 2 keys",
        *gone, "unknown 1 keys: extra_adapter",
    )


@pytest.mark.parametrize(
    "value, dtype, fragment",
    [(np.nan, "fp32", "1 NaN/Inf"), (np.inf, "fp32", "1 NaN/Inf"), (3.4e38, "bf16", "1 NaN/Inf")],
)
def test_non_finite_tensor(copy_of, tmp_path, capsys, value, dtype, fragment):
    """NaN/Inf in the source, or a float32 value that overflows bfloat16, is refused."""
    src = copy_of("diffusers")
    key = "blocks.1.ffn.net.2.weight"  # late in the file order: earlier groups are already written

    def edit(sd):
        sd[key][3, 5] = value

    _edit_tensor(src / "transformer_2", key, edit)
    code, err = _run(capsys, src, tmp_path / "out", "--dtype", dtype)
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, key, fragment)


def test_neither_layout(tmp_path, capsys):
    src = tmp_path / "random"
    src.mkdir()
    (src / "README.md").write_text("hello")
    (src / "weights").mkdir()
    code, err = _run(capsys, src, tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, "is neither", "README.md, weights/")


def test_one_expert_missing(copy_of, tmp_path, capsys):
    import shutil

    src = copy_of("diffusers")
    shutil.rmtree(src / "transformer_2")
    code, err = _run(capsys, src, tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, "not transformer_2", "model_index.json")


def test_source_does_not_exist(tmp_path, capsys):
    code, err = _run(capsys, tmp_path / "nowhere", tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 2, "does not exist")


def _failing_save(error, after=1):
    original, calls = ocp.Checkpointer.save, []

    def save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > after:  # let some groups land on disk first
            raise error
        return original(self, *args, **kwargs)

    return save


@pytest.mark.parametrize(
    "error, fragment",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "cannot write"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        # tensorstore reports I/O failures as ValueError; the writer turns them into OSError
        (ValueError("Error writing local file: [OS error: No space left]"), "cannot write"),
    ],
)
def test_write_errors_leave_nothing(snapshots, tmp_path, capsys, monkeypatch, error, fragment):
    monkeypatch.setattr(ocp.Checkpointer, "save", _failing_save(error, after=3))
    code, err = _run(capsys, snapshots["official"], tmp_path / "out")
    _assert_failed_cleanly(code, err, tmp_path / "out", 1, fragment)


def test_repo_id_is_fetched_with_only_the_needed_files(snapshots, tmp_path, monkeypatch):
    calls = []

    def fake_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(snapshots["diffusers"])

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    assert hub.resolve(snapshots["official"]) == snapshots["official"]  # local paths win
    assert calls == []
    assert hub.resolve("Wan-AI/Wan2.2-T2V-A14B-Diffusers") == snapshots["diffusers"]
    (repo, patterns), = calls
    assert repo == "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
    experts = {"transformer/*", "transformer_2/*", "high_noise_model/*", "low_noise_model/*"}
    assert experts <= set(patterns)
    others = {
        "text_encoder/*", "models_t5_umt5-xxl-enc-bf16.pth", "vae/*", "Wan2.1_VAE.pth",
        "Wan2.2_VAE.pth", "tokenizer/*", "google/umt5-xxl/*",
    }
    assert others <= set(patterns)
    assert not any(p.startswith(("*", "scheduler", "assets", "examples")) for p in patterns)


def test_offline_repo_id_is_one_line(tmp_path, capsys, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id, allow_patterns):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache\nand ...")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    code, err = _run(capsys, "Wan-AI/Wan2.2-T2V-A14B", tmp_path / "out")
    _assert_failed_cleanly(
        code, err, tmp_path / "out", 1, "downloading it from the Hugging Face Hub failed"
    )
