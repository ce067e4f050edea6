"""`python -m wanjax.text.build_cache`: encode a prompt file once with a checkpoint's umT5 encoder.

`train.dmd`, `train.calibrate` and `train.evaluate` read the result with `--text-cache`, so the
5.7B encoder never runs during training. Running it again on the same folder adds only the
prompts not cached yet (and resumes an interrupted build); the negative prompt for CFG is
stored once. The encoder runs on the first device, unsharded (11.4 GB of bf16 parameters for
umT5-XXL).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wanjax.argtypes import positive_int

DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wanjax.text.build_cache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = "(default: %(default)s)"
    p.add_argument("--checkpoint", required=True,
                   help="converted checkpoint or Wan2.2 snapshot holding the umT5 encoder and "
                        "its tokenizer")
    p.add_argument("--prompts-file", required=True, help="one prompt per line (blank lines skipped)")
    p.add_argument("--out", required=True, help="cache folder (created, or extended if it exists)")
    p.add_argument("--batch-size", type=positive_int, default=8, help=f"prompts per forward {d}")
    p.add_argument("--shard-size", type=positive_int, default=256,
                   help=f"prompts per safetensors shard {d}")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                   help=f"stored embedding dtype {d}")
    p.add_argument("--encoder-dtype", choices=sorted(DTYPES), default=None,
                   help="encoder parameter/compute dtype (default: as stored; official: bf16)")
    neg = p.add_mutually_exclusive_group()
    neg.add_argument("--negative-prompt", default=None,
                     help="negative prompt for CFG (default: the official Wan2.2 one)")
    neg.add_argument("--no-negative", action="store_true", help="store no negative prompt")
    return p


def _read_prompts(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompts file {path} not found")
    prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ValueError(f"prompts file {path} holds no prompts")
    return prompts


def run(args) -> tuple[int, int]:
    """Builds or extends the cache; returns (prompts now cached, prompts encoded by this run)."""
    import wanjax
    from wanjax.text.cache import TextEmbeddingCache, build_text_cache
    from wanjax.text.prompts import SAMPLE_NEG_PROMPT
    from wanjax.text.tokenizer import Tokenizer

    prompts = _read_prompts(args.prompts_file)
    if not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} not found")
    tokenizer_dir = wanjax.tokenizer_path(args.checkpoint)
    if tokenizer_dir is None:
        raise FileNotFoundError(f"no umT5 tokenizer in {args.checkpoint}")
    out = Path(args.out)
    before = 0
    if (out / "index.json").is_file():  # refuse other settings before loading the encoder
        existing = TextEmbeddingCache(out)
        existing.check_settings(dtype=DTYPES[args.dtype], encoder=str(args.checkpoint))
        before = len(existing)
    encoder = wanjax.load_text_encoder(args.checkpoint, dtype=DTYPES.get(args.encoder_dtype))
    negative = None if args.no_negative else (args.negative_prompt or SAMPLE_NEG_PROMPT)
    cache = build_text_cache(
        out, encoder, Tokenizer(tokenizer_dir), prompts, negative_prompt=negative,
        batch_size=args.batch_size, shard_size=args.shard_size, dtype=DTYPES[args.dtype],
        encoder_name=str(args.checkpoint), progress=True,
    )
    return len(cache), len(cache) - before


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        total, added = run(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {str(e).strip(chr(39))}", file=sys.stderr)
        return 1
    print(f"{args.out}: {total} prompts cached ({added} encoded now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
