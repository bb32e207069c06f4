"""Image folders in, flat output folders out: listing the images, safe output names, atomic file writes.

Moved here from tools/infer.py so that the folder inference loop (detres.engine.folder_inference), the benchmark
and the output writers share one implementation.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

from detres.errors import UserError
from detres.io.atomic import write_atomic

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_STEM = 150  # characters of an output name taken from the input path (file names end at 255 bytes)


def find_images(folder: Path) -> list[Path]:
    """Every image file under `folder` (recursively), sorted: the same folder always gives the same order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _sanitize(text: str) -> str:
    """Only [A-Za-z0-9._-], no leading dot (no hidden files, no '..'), at most MAX_STEM characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")[:MAX_STEM] or "image"


def _candidate(relative: Path, level: int) -> str:
    """The output stem of an input at a disambiguation level: 0 the flattened path without its extension,
    1 plus the extension, 2 plus a hash of the whole relative path (distinct for distinct inputs)."""
    stem = _sanitize("__".join(relative.with_suffix("").parts))
    if level == 0:
        return stem
    stem = f"{stem}_{_sanitize(relative.suffix.lstrip('.'))}"
    if level == 1:
        return stem
    return f"{stem}_{hashlib.sha1(relative.as_posix().encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"


def output_names(relatives: list[Path]) -> dict[Path, str]:
    """A distinct flat, sanitized `.jpg` file name in the output folder for each input's relative path.

    A name is the path's parts joined by '__' with every other character than [A-Za-z0-9._-] replaced, so it
    can hold no separator and no '..'. Inputs whose names would clash (x.png and x.jpg, a/b.jpg and a__b.jpg,
    X.jpg and x.jpg on a case-insensitive disk) all keep their extension, then all add a hash of their path,
    so no output overwrites another and the same folder always gets the same names, whatever the order.
    """
    level = dict.fromkeys(relatives, 0)
    while True:
        names = {rel: _candidate(rel, level[rel]) for rel in relatives}
        groups: dict[str, list[Path]] = defaultdict(list)
        for rel, name in names.items():
            groups[name.casefold()].append(rel)
        clashes = [rels for rels in groups.values() if len(rels) > 1]
        if not clashes:
            return {rel: f"{name}.jpg" for rel, name in names.items()}
        for rels in clashes:
            if all(level[rel] == 2 for rel in rels):  # equal hashes of different paths: never seen in practice
                raise UserError(f"cannot give distinct output names to {', '.join(map(str, rels))}; rename one")
            for rel in rels:
                level[rel] = min(level[rel] + 1, 2)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write through a new temporary file and a rename: never half a file under the real name, and a symlink
    already at `path` is replaced, not followed out of the output folder (the temporary file is created
    exclusively, so no planted link is followed either). UserError on a failing disk, no temporary file left."""
    write_atomic(path, data, make_parents=False, fix="check free disk space and the permissions of --output")


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """UserError unless `input_dir` is a folder and `output_dir` lies outside it (inputs are never written)."""
    if not input_dir.is_dir():
        raise UserError(f"--input {input_dir} is not a folder")
    src, dst = input_dir.resolve(), output_dir.resolve()
    if dst == src or src in dst.parents:
        raise UserError(f"--output {output_dir} is inside --input {input_dir}; choose a folder outside it "
                        "(detres never writes into the input folder)")
