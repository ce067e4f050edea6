"""Shared fixtures for the text tests: a tiny trained SentencePiece tokenizer, a tiny encoder pair."""

import pytest
from flax import nnx
from text_helpers import TINY

from convert.keymaps_umt5 import hf_encoder_state_dict, umt5_keymap
from torch_refs import hf_umt5_encoder, state_dict_numpy
from wanjax.io.params import load_flat_params
from wanjax.models.umt5 import UMT5Encoder

SENTENCES = [
    "A cat sits on the mat in the warm afternoon sun.",
    "Ein Hund läuft schnell durch den grünen Park.",
    "一只猫坐在垫子上，看着窗外的雨。",
    "The quick brown fox jumps over the lazy dog.",
    "A cinematic video of a sunset over the ocean, golden light & soft waves.",
    "Le chat noir dort sur le canapé rouge.",
]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A T5 tokenizer folder (pad 0, eos 1, unk 2) trained on a few sentences, as HF saves it."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    root = tmp_path_factory.mktemp("tokenizer")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 10), model_prefix=str(root / "spiece"),
        vocab_size=90, model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    src = root / "src"
    src.mkdir()
    (root / "spiece.model").rename(src / "spiece.model")
    T5Tokenizer.from_pretrained(str(src), extra_ids=0).save_pretrained(str(root / "hf"))
    return root / "hf"


@pytest.fixture(scope="session")
def tiny_pair():
    """(HF reference `UMT5EncoderModel`, our `UMT5Encoder` with the same random weights)."""
    ref = hf_umt5_encoder(TINY, seed=0)
    ours = UMT5Encoder(TINY, rngs=nnx.Rngs(0))
    sd = hf_encoder_state_dict(state_dict_numpy(ref))
    load_flat_params(ours, umt5_keymap(TINY, "diffusers").to_ours(sd))
    return ref, ours
