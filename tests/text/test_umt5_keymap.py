"""The umT5 key table: official Wan names and HF names to ours, config inference, bad inputs."""

import json
import re

import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from text_helpers import TINY, padded_batch, rel_err

from convert.errors import ConversionError
from convert.keymaps import KeyMapError
from convert.keymaps_umt5 import (
    hf_encoder_state_dict,
    umt5_config_from_hf,
    umt5_config_from_shapes,
    umt5_keymap,
    umt5_param_shapes,
    umt5_read_config,
    umt5_select,
    umt5_to_ours,
)
from torch_refs import hf_umt5_forward, state_dict_numpy
from wanjax.io.params import flat_params, load_flat_params
from wanjax.models.umt5 import (
    UMT5Config,
    UMT5Encoder,
    umt5_config_from_json,
    umt5_config_to_json,
)

# Spec section 4 key table, HF `UMT5EncoderModel` name -> official Wan `.pth` name.
_HF_TO_OFFICIAL = [
    (r"shared\.weight", "token_embedding.weight"),
    (r"encoder\.final_layer_norm\.weight", "norm.weight"),
    (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight", r"blocks.\1.norm1.weight"),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight", r"blocks.\1.attn.\2.weight"),
    (
        r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
        r"blocks.\1.pos_embedding.embedding.weight",
    ),
    (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight", r"blocks.\1.norm2.weight"),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight", r"blocks.\1.ffn.gate.0.weight"),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight", r"blocks.\1.ffn.fc1.weight"),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight", r"blocks.\1.ffn.fc2.weight"),
]


def _official_name(hf_key: str) -> str:
    for pattern, repl in _HF_TO_OFFICIAL:
        if re.fullmatch(pattern, hf_key):
            return re.sub(pattern, repl, hf_key)
    raise AssertionError(f"no official name for {hf_key}")


@pytest.fixture(scope="module")
def hf_state(tiny_pair):
    ref, _ = tiny_pair
    sd = state_dict_numpy(ref)
    assert "shared.weight" in sd and "encoder.embed_tokens.weight" in sd  # tied, both listed
    return ref, sd


def _official_state(hf_sd):
    return {_official_name(k): v for k, v in hf_sd.items() if k != "encoder.embed_tokens.weight"}


def test_official_layout_gives_the_hf_forward(hf_state):
    ref, hf_sd = hf_state
    official = _official_state(hf_sd)
    assert len(official) == 2 + 10 * TINY.num_layers  # 242 tensors for the 24-layer XXL file
    cfg, flat = umt5_to_ours(official)  # layout detected, config inferred from shapes
    assert cfg == TINY
    ours = UMT5Encoder(cfg, rngs=nnx.Rngs(1))
    load_flat_params(ours, flat)
    ids, mask = padded_batch(cfg.vocab_size, [30, 9], 30)
    got = np.asarray(ours(ids, mask))
    expected = hf_umt5_forward(ref, ids, mask)
    for i, n in enumerate([30, 9]):
        assert rel_err(got[i, :n], expected[i, :n]) <= 1e-5


@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_round_trip_back_to_torch_names(hf_state, tiny_pair, layout):
    _, hf_sd = hf_state
    sd = _official_state(hf_sd) if layout == "official" else hf_encoder_state_dict(hf_sd)
    keymap = umt5_keymap(TINY, layout)
    back = keymap.to_torch({k: np.asarray(v) for k, v in flat_params(tiny_pair[1]).items()})
    assert back.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_tied_embedding_under_either_name(hf_state):
    _, hf_sd = hf_state
    only_shared = {k: v for k, v in hf_sd.items() if k != "encoder.embed_tokens.weight"}
    only_tied = {k: v for k, v in hf_sd.items() if k != "shared.weight"}
    flats = [umt5_to_ours(sd)[1] for sd in (hf_sd, only_shared, only_tied)]
    for flat in flats[1:]:
        np.testing.assert_array_equal(flat["token_embedding.embedding"], flats[0]["token_embedding.embedding"])


def test_tied_embedding_mismatch_raises(hf_state):
    _, hf_sd = hf_state
    bad = dict(hf_sd, **{"encoder.embed_tokens.weight": hf_sd["shared.weight"] + 1})
    with pytest.raises(KeyMapError, match="differ"):
        umt5_to_ours(bad)


def test_full_encoder_decoder_checkpoint_keeps_the_encoder(hf_state):
    _, hf_sd = hf_state
    full = dict(hf_sd, **{"decoder.block.0.layer.0.SelfAttention.q.weight": np.zeros((24, 32)),
                          "lm_head.weight": np.zeros((100, 32))})
    assert umt5_to_ours(full)[1].keys() == umt5_to_ours(hf_sd)[1].keys()


def test_missing_and_unknown_keys_are_named(hf_state):
    _, hf_sd = hf_state
    official = _official_state(hf_sd)
    missing = {k: v for k, v in official.items() if k != "blocks.1.ffn.fc2.weight"}
    with pytest.raises(KeyMapError, match=r"missing 1 keys: blocks\.1\.ffn\.fc2\.weight"):
        umt5_to_ours(missing)
    extra = dict(official, **{"blocks.0.attn.bias": np.zeros(3)})
    with pytest.raises(KeyMapError, match=r"unknown 1 keys: blocks\.0\.attn\.bias"):
        umt5_to_ours(extra)


def test_wrong_shape_is_named(hf_state):
    _, hf_sd = hf_state
    official = _official_state(hf_sd)
    official["blocks.1.attn.o.weight"] = official["blocks.1.attn.o.weight"][:, :-1]
    with pytest.raises(KeyMapError, match=r"blocks\.1\.attn\.o\.weight: \(32, 23\) != \(32, 24\)"):
        umt5_to_ours(official)


def test_not_an_encoder_checkpoint():
    with pytest.raises(KeyMapError, match="not a umT5 encoder"):
        umt5_to_ours({"patch_embedding.weight": np.zeros(3)})
    with pytest.raises(KeyMapError, match="cannot infer"):
        umt5_config_from_shapes({"token_embedding.weight": (100, 32)}, "official")


def test_config_from_transformers_json(hf_state):
    ref, hf_sd = hf_state
    cfg = umt5_config_from_hf(ref.config.to_dict())
    assert cfg == TINY
    shapes = {k: v.shape for k, v in hf_sd.items()}
    assert umt5_config_from_shapes(shapes, "diffusers") == TINY


def test_xxl_config_from_json_file(tmp_path):
    xxl = {  # the fields of google/umt5-xxl's config.json that matter
        "model_type": "umt5", "vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240,
        "num_heads": 64, "num_layers": 24, "num_decoder_layers": 24,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(xxl))
    assert umt5_config_from_hf(path) == UMT5Config()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"feed_forward_proj": "relu"}, "gated-gelu"),
        ({"model_type": "t5"}, "model_type 't5'"),
        ({"d_kv": None}, "d_kv"),
    ],
)
def test_bad_transformers_config(hf_state, change, message):
    ref, _ = hf_state
    c = dict(ref.config.to_dict(), **change)
    c = {k: v for k, v in c.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        umt5_config_from_hf(c)


# The streaming converter's `Family` pieces, on real files read by `convert.readers`.


def _stream(path, layout, files):
    from convert.layouts import Snapshot
    from convert.readers import TensorSource

    source = TensorSource(files)
    cfg = umt5_read_config(path, source, Snapshot(path, layout))
    view = source.renamed(umt5_select(source.keys(), layout))
    keymap = umt5_keymap(cfg, layout)
    keymap.check_keys(view.keys())
    flat = {leaf.ours_key: leaf.to_ours(view.read(leaf.torch_key)) for leaf in keymap.leaves}
    assert {k: v.shape for k, v in flat.items()} == umt5_param_shapes(cfg)
    return cfg, flat


def test_streams_a_saved_transformers_folder(hf_state, tiny_pair, tmp_path):
    ref, _ = hf_state
    ref.save_pretrained(tmp_path)  # config.json + model.safetensors, tied embedding saved once
    cfg, flat = _stream(tmp_path, "diffusers", [tmp_path / "model.safetensors"])
    assert cfg == TINY
    for k, v in flat_params(tiny_pair[1]).items():
        np.testing.assert_array_equal(flat[k], np.asarray(v), err_msg=k)


def test_streams_an_official_bf16_pth(hf_state, tiny_pair, tmp_path):
    import torch

    _, hf_sd = hf_state
    official = {k: torch.from_numpy(v).bfloat16() for k, v in _official_state(hf_sd).items()}
    torch.save(official, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    cfg, flat = _stream(tmp_path, "official", [tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"])
    assert cfg == TINY
    for k, v in flat_params(tiny_pair[1]).items():
        np.testing.assert_array_equal(
            flat[k].astype(np.float32), np.asarray(v).astype(ml_dtypes.bfloat16).astype(np.float32)
        )


def test_streamed_tied_embedding_mismatch(hf_state, tmp_path):
    from safetensors.numpy import save_file

    _, hf_sd = hf_state
    sd = dict(hf_sd, **{"encoder.embed_tokens.weight": hf_sd["shared.weight"] * 2})
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, tmp_path / "model.safetensors")
    with pytest.raises(ConversionError, match="differ"):
        _stream(tmp_path, "diffusers", [tmp_path / "model.safetensors"])
    save_file(dict(hf_sd), tmp_path / "model.safetensors")  # both names, equal: fine
    assert _stream(tmp_path, "diffusers", [tmp_path / "model.safetensors"])[0] == TINY


def test_config_json_round_trip():
    assert umt5_config_from_json(umt5_config_to_json(TINY)) == TINY
    with pytest.raises(ValueError, match="unknown UMT5Config fields"):
        umt5_config_from_json({**umt5_config_to_json(TINY), "rope": 1})
