"""Text encoder, VAE and tokenizer through `python -m convert.wan`, in both layouts.

Each snapshot holds the two tiny DiT experts plus a tiny umT5 encoder (transformers), a tiny Wan2.1
VAE (diffusers) and a tiny SentencePiece tokenizer; the converted models are checked against those
reference implementations, and broken inputs against the CLI's guarantees (one `error:` line,
nothing left at DST).
"""

import json
import shutil

import numpy as np
import pytest
import torch
from components_helpers import (
    T5_FILE,
    TOKENIZER_AT,
    UMT5_CFG,
    VAE_CFG,
    VAE_FILE,
    add_diffusers,
    add_official,
    build_tokenizer,
    round_to_bf16,
    valid_rows_rel_err,
)
from safetensors.numpy import load_file, save_file

import wanjax
from convert import inspect, wan
from convert.keymaps_vae import vae_keymap
from torch_refs import diffusers_vae, hf_umt5_encoder, hf_umt5_forward
from wanjax.io import checkpoint
from wanjax.io.params import flat_params
from wanjax.text.encode import TextEncoder
from wanjax.text.tokenizer import Tokenizer

LAYOUTS = ("official", "diffusers")
LENGTHS, SEQ = [9, 14, 1], 14  # a padded batch; 1 is the `</s>`-only prompt
PROMPTS = ["A red fox runs across a snowy field.", "一只小狗在公园里。 Waves &amp; rocks"]


@pytest.fixture(scope="module")
def refs():
    """(transformers `UMT5EncoderModel` with bfloat16-valued weights, diffusers VAE)."""
    t5 = hf_umt5_encoder(UMT5_CFG, seed=3)
    round_to_bf16(t5)
    return t5, diffusers_vae(VAE_CFG, seed=4)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def full(tmp_path_factory, snapshots, refs, tokenizer_dir):
    """Both layouts: the session's DiT snapshots plus text encoder, VAE and tokenizer."""
    root = tmp_path_factory.mktemp("full")
    t5, vae = refs
    out = {}
    for layout in LAYOUTS:
        out[layout] = root / layout
        shutil.copytree(snapshots[layout], out[layout])
    candidates = vae_keymap(VAE_CFG, "official").by_torch
    add_official(out["official"], t5, vae, candidates, tokenizer_dir)
    add_diffusers(out["diffusers"], t5, vae, tokenizer_dir)
    return out


@pytest.fixture(scope="module")
def converted(full, tmp_path_factory):
    """Both layouts converted to float32 through the CLI."""
    root = tmp_path_factory.mktemp("converted_full")
    for layout, src in full.items():
        assert wan.main([str(src), str(root / layout), "--dtype", "fp32"]) == 0
    return {layout: root / layout for layout in LAYOUTS}


def _stored(path, name) -> dict[str, np.ndarray]:
    return {k: v for _, g in checkpoint.iter_param_groups(path / name) for k, v in g.items()}


def _subset(full, tmp_path, layout, *names):
    """A snapshot holding only `names` of the full one (convert with --layout)."""
    src = tmp_path / f"src_{layout}"
    src.mkdir()
    for name in names:
        path = full[layout] / name
        copy = shutil.copytree if path.is_dir() else shutil.copyfile
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        copy(path, src / name)
    return src


def _params(module) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flat_params(module).items()}


# --- what the converted checkpoint holds ----------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_manifest_lists_every_component(converted, layout):
    meta = checkpoint.read_manifest(converted[layout])
    comps = meta["components"]
    assert sorted(comps) == ["dit_high", "dit_low", "text_encoder", "vae"]
    assert {n: c["family"] for n, c in comps.items()} == {
        "dit_high": "dit", "dit_low": "dit", "text_encoder": "umt5", "vae": "vae"
    }
    assert comps["text_encoder"]["source"]["path"] == (
        T5_FILE if layout == "official" else "text_encoder"
    )
    assert comps["vae"]["source"]["path"] == (VAE_FILE if layout == "official" else "vae")
    assert all(c["dtype"] == "float32" for c in comps.values())
    assert meta["boundary"] == 0.875
    tok = meta["tokenizer"]
    assert tok["path"] == "tokenizer" and tok["source"] == TOKENIZER_AT[layout]
    names = sorted(f["file"] for f in tok["files"])
    assert names == sorted(p.name for p in (converted[layout] / "tokenizer").iterdir())
    assert "tokenizer_config.json" in names


def test_both_layouts_store_the_same_numbers(converted):
    """The official `.pth` files (T5 in bfloat16) and the diffusers safetensors hold the same
    values, so the two conversions must be bit-identical."""
    for name in ("text_encoder", "vae"):
        official = _stored(converted["official"], name)
        diffusers = _stored(converted["diffusers"], name)
        assert sorted(official) == sorted(diffusers)
        assert all(official[k].tobytes() == diffusers[k].tobytes() for k in official), name


# --- against the reference implementations --------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_encoder_matches_transformers(converted, refs, layout):
    module = wanjax.load_text_encoder(converted[layout])
    assert module.cfg == UMT5_CFG
    rng = np.random.default_rng(0)
    mask = (np.arange(SEQ)[None] < np.asarray(LENGTHS)[:, None]).astype(np.int32)
    ids = rng.integers(3, UMT5_CFG.vocab_size, size=mask.shape).astype(np.int32) * mask
    ours = np.asarray(TextEncoder(module)(ids, mask))
    expected = hf_umt5_forward(refs[0], ids, mask)
    err = valid_rows_rel_err(ours, expected, LENGTHS)
    assert err <= 1e-4, f"max rel error {err:.2e}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vae_decode_matches_diffusers(converted, refs, layout):
    vae = wanjax.load_vae(converted[layout])
    assert vae.cfg == VAE_CFG  # official: the Wan2.1 statistics, inferred from z_dim 16
    latents = np.random.default_rng(1).standard_normal((1, 16, 2, 2, 3)).astype(np.float32)
    with torch.no_grad():
        expected = refs[1].decode(torch.from_numpy(latents)).sample.numpy()
    assert expected.shape == (1, 3, 5, 16, 24)
    err = float(np.abs(np.asarray(vae.decode_raw(latents)) - expected).max())
    assert err <= 1e-4, f"max abs error {err:.2e}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tokenizer_is_copied_and_loads(converted, full, tokenizer_dir, layout):
    path = wanjax.tokenizer_path(converted[layout])
    assert path == converted[layout] / "tokenizer"
    assert wanjax.tokenizer_path(full[layout]) == full[layout] / TOKENIZER_AT[layout]
    ours, reference = Tokenizer(path, max_length=16), Tokenizer(tokenizer_dir, max_length=16)
    got, want = ours(PROMPTS), reference(PROMPTS)
    assert np.array_equal(got.ids, want.ids) and np.array_equal(got.mask, want.mask)
    assert got.lengths.min() > 2  # real pieces, not only `</s>`


def test_loads_from_an_unconverted_snapshot(full, converted):
    """`load_text_encoder` / `load_vae` on a raw snapshot convert in memory (float32)."""
    for load in (wanjax.load_text_encoder, wanjax.load_vae):
        raw, done = _params(load(full["official"])), _params(load(converted["diffusers"]))
        assert sorted(raw) == sorted(done)
        assert all(np.array_equal(raw[k], done[k]) for k in raw)


def test_default_bf16_keeps_the_vae_in_float32(full, converted, tmp_path, capsys):
    """Only the encoder and VAE (no DiT): the encoder is stored in bf16 (exactly, its values are
    bf16), the VAE stays float32."""
    src = _subset(full, tmp_path, "official", T5_FILE, VAE_FILE, TOKENIZER_AT["official"])
    assert wan.main([str(src), str(tmp_path / "out"), "--layout", "official"]) == 0
    assert "(text_encoder, vae, tokenizer, bfloat16)" in capsys.readouterr().out
    meta = checkpoint.read_manifest(tmp_path / "out")
    assert {n: c["dtype"] for n, c in meta["components"].items()} == {
        "text_encoder": "bfloat16", "vae": "float32"
    }
    bf16 = _stored(tmp_path / "out", "text_encoder")
    fp32 = _stored(converted["official"], "text_encoder")
    assert all(np.array_equal(bf16[k].astype(np.float32), fp32[k]) for k in fp32)
    module = wanjax.load_text_encoder(tmp_path / "out")  # as stored: bfloat16 params
    assert module.token_embedding.embedding.dtype == np.dtype("bfloat16")


def test_legacy_pickle_pth_converts(full, converted, tmp_path):
    """A `.pth` without the zip container (torch < 1.6) cannot be memory-mapped: read whole."""
    src = _subset(full, tmp_path, "official", T5_FILE)
    state = torch.load(src / T5_FILE, weights_only=True)
    torch.save(state, src / T5_FILE, _use_new_zipfile_serialization=False)
    argv = [str(src), str(tmp_path / "out"), "--layout", "official", "--dtype", "fp32"]
    assert wan.main(argv) == 0
    ours = _stored(tmp_path / "out", "text_encoder")
    reference = _stored(converted["official"], "text_encoder")
    assert all(ours[k].tobytes() == reference[k].tobytes() for k in reference)


def test_text_encoder_without_tokenizer_converts_with_a_note(full, tmp_path, capsys):
    src = _subset(full, tmp_path, "diffusers", "text_encoder")
    assert wan.main([str(src), str(tmp_path / "out"), "--layout", "diffusers"]) == 0
    out = capsys.readouterr().out
    assert "has a text encoder but no tokenizer (tokenizer/)" in out
    assert "tokenizer" not in checkpoint.read_manifest(tmp_path / "out")
    assert wanjax.tokenizer_path(tmp_path / "out") is None


def test_inspect_shows_the_new_components(full, converted, capsys):
    assert inspect.main([str(full["official"])]) == 0
    out = capsys.readouterr().out
    for fragment in (f"text_encoder  {T5_FILE}", f"vae           {VAE_FILE}",
                     "tokenizer     google/umt5-xxl", "bfloat16 x22"):
        assert fragment in out, out
    assert inspect.main([str(converted["diffusers"])]) == 0
    out = capsys.readouterr().out
    for fragment in ("umT5 d_model 32, 2 layers, 4 heads, ffn 48, vocab 100",
                     "Wan2.1 VAE, base_dim 4, z_dim 16, x8 space", "files from tokenizer"):
        assert fragment in out, out


# --- bad input ------------------------------------------------------------------------------------


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _edit_pth(path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def _edit_safetensors(folder, key, edit):
    """Rewrites the file of `folder` holding `key` (sharded with an index, or a single file)."""
    indexes = list(folder.glob("*.safetensors.index.json"))
    index = json.loads(indexes[0].read_text()) if indexes else None
    name = index["weight_map"][key] if index else next(folder.glob("*.safetensors")).name
    sd = load_file(folder / name)
    edit(sd)
    save_file(sd, folder / name)
    if index:
        index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != name}
        index["weight_map"].update(dict.fromkeys(sd, name))
        indexes[0].write_text(json.dumps(index))


def _reshape(key, shape):
    def edit(state):
        cut = state[key][tuple(slice(0, n) for n in shape)]
        state[key] = cut.clone() if isinstance(cut, torch.Tensor) else np.ascontiguousarray(cut)

    return edit


def _drop(key):
    return lambda state: state.pop(key)


BAD_INPUTS = {
    "official truncated VAE": (
        "official", (VAE_FILE,), lambda src: _truncate(src / VAE_FILE), ["truncated", VAE_FILE],
    ),
    "official VAE that is no torch file": (
        "official", (VAE_FILE,), lambda src: (src / VAE_FILE).write_bytes(b"not a checkpoint"),
        ["is not a torch checkpoint", VAE_FILE],
    ),
    "diffusers truncated VAE": (
        "diffusers", ("vae",),
        lambda src: _truncate(src / "vae" / "diffusion_pytorch_model.safetensors"),
        ["is truncated", "diffusion_pytorch_model.safetensors"],
    ),
    "official T5 tensor of wrong shape": (
        "official", (T5_FILE,),
        lambda src: _edit_pth(src / T5_FILE, _reshape("blocks.1.attn.q.weight", (24, 31))),
        ["text_encoder: tensor blocks.1.attn.q.weight", "[24, 31]", "does not fit the model"],
    ),
    "diffusers T5 tensor of wrong shape": (
        "diffusers", ("text_encoder",),
        lambda src: _edit_safetensors(
            src / "text_encoder", "encoder.block.1.layer.1.DenseReluDense.wo.weight",
            _reshape("encoder.block.1.layer.1.DenseReluDense.wo.weight", (32, 47)),
        ),
        ["DenseReluDense.wo.weight", "[32, 47]", "does not fit the model"],
    ),
    "official VAE missing a key": (
        "official", (VAE_FILE,),
        lambda src: _edit_pth(src / VAE_FILE, _drop("decoder.head.2.bias")),
        ["vae", "missing 1 keys: decoder.head.2.bias"],
    ),
    "diffusers T5 missing a key": (
        "diffusers", ("text_encoder",),
        lambda src: _edit_safetensors(
            src / "text_encoder", "encoder.final_layer_norm.weight",
            _drop("encoder.final_layer_norm.weight"),
        ),
        ["text_encoder", "missing 1 keys: encoder.final_layer_norm.weight"],
    ),
    "tokenizer folder without a tokenizer": (
        "diffusers", ("text_encoder", "tokenizer"),
        lambda src: [p.unlink() for p in (src / "tokenizer").iterdir() if "config" not in p.name],
        ["holds no tokenizer", "tokenizer.json or spiece.model"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_component_input_fails_cleanly(full, tmp_path, capsys, case):
    layout, names, damage, fragments = BAD_INPUTS[case]
    src = _subset(full, tmp_path, layout, *names)
    damage(src)
    dst = tmp_path / "out"
    code = wan.main([str(src), str(dst), "--layout", layout])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(f in err for f in fragments), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # no DST, no temp dir


def test_nan_in_the_vae_after_the_dits_were_written_leaves_nothing(full, tmp_path, capsys):
    """The VAE is converted last; a NaN found there still removes everything written before."""
    src = tmp_path / "src"
    shutil.copytree(full["official"], src)

    def poison(state):
        state["decoder.head.2.weight"][0, 0, 0, 0, 0] = float("nan")

    _edit_pth(src / VAE_FILE, poison)
    code = wan.main([str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "vae: tensor decoder.head.2.weight" in err and "NaN" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
