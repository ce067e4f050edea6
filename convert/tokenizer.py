"""The umT5 tokenizer files: found in a snapshot, checked, and copied into a converted checkpoint.

Official snapshots keep them in `google/umt5-xxl/`, diffusers ones in `tokenizer/`. They are small
(about 20 MB), so conversion copies the files as they are to `DST/tokenizer/` and lists them in
the manifest; `wanjax.tokenizer_path` finds them there and `wanjax.text.tokenizer.Tokenizer` loads
them, so prompts can be tokenized from the converted checkpoint alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from convert.errors import ConversionError
from convert.layouts import Snapshot

FOLDER = "tokenizer"  # in the converted checkpoint
LOCATIONS = {"official": "google/umt5-xxl", "diffusers": "tokenizer"}
MODEL_FILES = ("tokenizer.json", "spiece.model")  # a tokenizer folder holds at least one


def locate(snapshot: Snapshot) -> Path | None:
    """The tokenizer folder of `snapshot`, None when it has none."""
    if snapshot.single_file:
        return None
    folder = snapshot.root / LOCATIONS[snapshot.layout]
    return folder if folder.exists() else None


def files(folder: Path) -> list[Path]:
    """The files to copy (top level, no hidden ones); ConversionError if it is no tokenizer."""
    if not folder.is_dir():
        raise ConversionError(f"{folder} should be the tokenizer folder but is not a directory")
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.name in MODEL_FILES for p in found):
        listing = ", ".join(p.name for p in found[:8]) or "nothing"
        raise ConversionError(
            f"{folder} holds no tokenizer: expected {' or '.join(MODEL_FILES)}, found {listing}"
        )
    return found


def copy(folder: Path, dst: Path, source_name: str) -> dict:
    """Copies the tokenizer `folder` to `dst/tokenizer/`; returns its manifest entry."""
    out = dst / FOLDER
    out.mkdir()
    listed = []
    for path in files(folder):
        shutil.copyfile(path, out / path.name)  # follows links (the Hugging Face cache uses them)
        listed.append({"file": path.name, "bytes": (out / path.name).stat().st_size})
    return {"path": FOLDER, "source": source_name, "files": listed}
