"""`python -m wanjax.text.build_cache` on a converted tiny checkpoint: the cached embeddings equal
transformers' `UMT5EncoderModel` on transformers' own token ids, a rerun adds only new prompts,
and user mistakes are one-line errors that leave no cache behind."""

import numpy as np
import pytest
from components_helpers import valid_rows_rel_err
from test_convert_components import converted, full, refs, tokenizer_dir  # noqa: F401
from transformers import AutoTokenizer

from torch_refs import hf_umt5_forward
from wanjax.text import build_cache
from wanjax.text.cache import TextEmbeddingCache

PROMPTS = ["A red fox runs across a snowy field.", "Waves crash against the rocky shore."]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _build(checkpoint, prompts_file, out, *extra):
    return build_cache.main(["--checkpoint", str(checkpoint), "--prompts-file", prompts_file,
                             "--out", str(out), "--dtype", "fp32", "--encoder-dtype", "fp32",
                             "--batch-size", "2", *extra])


def test_cache_matches_transformers_and_extends(converted, refs, tokenizer_dir, tmp_path):  # noqa: F811
    ckpt, out = converted["diffusers"], tmp_path / "cache"
    assert _build(ckpt, _write(tmp_path / "p.txt", ["", *PROMPTS, PROMPTS[0]]), out) == 0
    cache = TextEmbeddingCache(out)
    assert cache.prompts() == PROMPTS and cache.has_negative()

    hf_tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for prompt in PROMPTS:
        ids = np.asarray(hf_tok(prompt)["input_ids"])[None]  # `</s>` appended, no padding
        expected = hf_umt5_forward(refs[0], ids, np.ones_like(ids))
        got, length = cache.get(prompt)
        assert length == ids.shape[1]
        assert valid_rows_rel_err(got[None], expected, [length]) <= 1e-4

    more = _write(tmp_path / "more.txt", [*PROMPTS, "A small boat on a quiet lake."])
    assert _build(ckpt, more, out) == 0
    assert len(TextEmbeddingCache(out)) == 3
    assert sorted(p.name for p in out.glob("shard-*")) == [
        "shard-00000.safetensors", "shard-00001.safetensors"  # the rerun wrote only the new one
    ]


@pytest.mark.parametrize("case, message", [
    ("missing prompts", "not found"),
    ("empty prompts", "holds no prompts"),
    ("missing checkpoint", "not found"),
    ("no tokenizer", "tokenizer"),
])
def test_user_mistakes_are_one_line_errors(case, message, converted, snapshots, tmp_path, capsys):  # noqa: F811
    prompts = _write(tmp_path / "p.txt", PROMPTS)
    ckpt = converted["diffusers"]
    if case == "missing prompts":
        prompts = str(tmp_path / "nope.txt")
    elif case == "empty prompts":
        prompts = _write(tmp_path / "empty.txt", ["", "  "])
    elif case == "missing checkpoint":
        ckpt = tmp_path / "nope"
    else:
        ckpt = snapshots["diffusers"]  # the two experts only
    out = tmp_path / "cache"
    assert _build(ckpt, prompts, out) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()


def test_other_settings_on_an_existing_cache_are_refused(converted, tmp_path, capsys):  # noqa: F811
    prompts, out = _write(tmp_path / "p.txt", PROMPTS[:1]), tmp_path / "cache"
    assert _build(converted["diffusers"], prompts, out) == 0
    capsys.readouterr()
    code = build_cache.main(["--checkpoint", str(converted["diffusers"]), "--prompts-file",
                             prompts, "--out", str(out), "--dtype", "bf16"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "other settings" in err and "\n" not in err
