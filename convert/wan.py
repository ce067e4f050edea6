"""`python -m convert.wan SRC DST`: a Wan2.2 checkpoint (official or diffusers) to wanjax format."""

from __future__ import annotations

import argparse
import sys

from convert import cli
from convert.snapshot import convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert.wan",
        description=(
            "Convert a Wan2.2 checkpoint to the wanjax format (orbax, loadable with "
            "wanjax.load_dit, load_text_encoder and load_vae). Reads the official layout "
            "(high_noise_model/ + low_noise_model/, or config.json + shards; "
            "models_t5_umt5-xxl-enc-bf16.pth; Wan2.1_VAE.pth or Wan2.2_VAE.pth; "
            "google/umt5-xxl/), the diffusers layout (model_index.json, transformer/, "
            "transformer_2/, text_encoder/, vae/, tokenizer/), or a single .safetensors DiT file "
            "(keys may carry a model.diffusion_model. prefix). Converts every model the snapshot "
            "holds and copies the tokenizer files to DST/tokenizer/. Streams tensor by tensor: "
            "host memory stays near one transformer block."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "src", metavar="SRC",
        help="local snapshot directory or checkpoint file, or a Hugging Face repo id "
        "(e.g. Wan-AI/Wan2.2-T2V-A14B) fetched with snapshot_download when online",
    )
    parser.add_argument("dst", metavar="DST", help="output directory (must not exist)")
    parser.add_argument(
        "--layout", choices=("auto", "official", "diffusers"), default="auto",
        help="source layout; auto detects it",
    )
    parser.add_argument(
        "--dtype", choices=("bf16", "fp32"), default="bf16",
        help="stored parameter dtype (cast tensor by tensor, round to nearest even); the VAE "
        "is always stored in fp32, as the official pipeline runs it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument(
        "--compress", action="store_true",
        help="zstd-compress the stored arrays (about 20%% smaller for bf16, slower)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(
        lambda: convert(
            args.src, args.dst, layout=args.layout, dtype=args.dtype,
            overwrite=args.overwrite, compress=args.compress,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
