"""The resume journal of folder inference: one append-only jsonl file per rank in the output folder.

Line 1 is a header that identifies the run (input folder, its file list, config, model, score threshold, drawing);
every further line is one finished image: `{"image": relative path, "detections": [...]}` or
`{"image": ..., "failed": reason}`. Each line is flushed as it is written, so a kill -9 loses nothing the
process finished (the kernel holds the data), and fsync'd in batches, so a power cut loses at most one batch.
A torn last line (the process died inside a write) is ignored on reading and cut off before appending. No
library keeps an append-only record with these guarantees in a file a user can read, so it is written here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from detres.config import flatten_dict
from detres.errors import UserError

JOURNAL_VERSION = 2  # 2: the header holds the run's config itself, so a refusal names the keys that changed
JOURNAL_GLOB = "journal-rank*.jsonl"
# header keys, with what a mismatch means to the user
_HEADER_WORDS = {"input": "the input folder", "images": "the number of images in the input folder",
                 "images_sha256": "the list of files in the input folder",
                 "config_sha256": "the config (file or overrides: model, test, data.input or deploy settings)",
                 "model_sha256": "the model (checkpoint or exported model)", "score_thr": "--score-thr",
                 "draw": "drawing (--no-draw)"}


def journal_path(output_dir: Path, rank: int) -> Path:
    return output_dir / f"journal-rank{rank}.jsonl"


def journal_files(output_dir: Path) -> list[Path]:
    """The journals of every rank of earlier runs in `output_dir` (any world size), sorted."""
    return sorted(output_dir.glob(JOURNAL_GLOB)) if output_dir.is_dir() else []


def path_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of every file under a folder (names and bytes, sorted): the model's identity."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with open(file, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def make_header(*, input_dir: Path, relatives: list[Path], config: dict, model_sha256: str, score_thr: float,
                draw: bool) -> dict:
    """The identity of a run: a journal resumes only a run whose header is equal (world size and workers may differ)."""
    files = "\n".join(rel.as_posix() for rel in relatives).encode("utf-8", "surrogateescape")
    return {"detres_infer_journal": JOURNAL_VERSION, "input": str(input_dir.resolve()), "images": len(relatives),
            "images_sha256": hashlib.sha256(files).hexdigest(),
            "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
            "config": flatten_dict(config), "model_sha256": model_sha256, "score_thr": score_thr, "draw": draw}


def _config_changes(found: dict, expected: dict, limit: int = 4) -> str:
    """" (deploy.precision: 'fp32' then, 'int8' now; ...)" for the keys whose values differ."""
    then, now = found.get("config") or {}, expected.get("config") or {}
    keys = [k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)]
    if not keys:
        return ""
    listed = "; ".join(f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in keys[:limit])
    return f" ({listed}{'; ...' if len(keys) > limit else ''})"


def check_header(found: dict, expected: dict, where: Path) -> None:
    """UserError naming what differs when `found` (a journal's or report's header) is not this run's."""
    if found == expected:
        return
    if found.get("detres_infer_journal") != expected["detres_infer_journal"]:
        raise UserError(f"{where} was written by another detres version; choose another --output "
                        "(or delete its journal-rank*.jsonl files to start over)")
    for key, words in _HEADER_WORDS.items():
        if found.get(key) != expected[key]:
            detail = f" ({found.get(key)!r} then, {expected[key]!r} now)" if key in (
                "input", "images", "score_thr", "draw") else ""
            if key == "config_sha256":
                detail = _config_changes(found, expected)
            raise UserError(f"{where} belongs to another run: {words} differs{detail}. Resume with the same "
                            "input, config, model and options, or choose another --output")
    raise UserError(f"{where} belongs to another run; choose another --output")


def _complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """(the complete lines, the byte length they take); a last line without its newline is torn and left out."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def read_journal(path: Path, expected_header: dict) -> Iterator[dict]:
    """The finished-image records of one journal, after checking its header; a torn last line is skipped."""
    lines, _ = _complete_lines(path.read_bytes())
    if not lines:
        return  # died before the header was whole: nothing was finished
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path}: line {number} is not valid JSON (the file was edited or damaged); delete "
                            "the journal-rank*.jsonl files to start over, or choose another --output") from None
        if number == 1:
            check_header(record, expected_header, path)
        elif not isinstance(record, dict) or "image" not in record:
            raise UserError(f"{path}: line {number} is not a journal record; delete the journal-rank*.jsonl "
                            "files to start over, or choose another --output")
        else:
            yield record


class JournalWriter:
    """Appends finished-image records to this rank's journal: a flush per line, an fsync every `sync_every`
    lines or `sync_seconds` seconds and at close. Opening cuts a torn last line off (or starts the file over
    when not even the header is whole) and writes the header into a new file."""

    def __init__(self, path: Path, header: dict, *, sync_every: int = 64, sync_seconds: float = 5.0) -> None:
        self.path, self.sync_every, self.sync_seconds = path, sync_every, sync_seconds
        keep = _complete_lines(path.read_bytes())[1] if path.exists() else 0
        try:
            self._file = open(path, "r+b" if path.exists() else "wb")  # noqa: SIM115 (closed by close())
            self._file.truncate(keep)
            self._file.seek(keep)
        except OSError as exc:
            raise UserError(f"could not write {path}: {exc.strerror or exc}; check free disk space and the "
                            "permissions of --output") from None
        self._pending, self._synced_at = 0, time.monotonic()
        if keep == 0:
            self.append(header)
            self.sync()

    def append(self, record: dict) -> None:
        try:
            self._file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            self._file.flush()
        except OSError as exc:
            raise UserError(f"could not write {self.path}: {exc.strerror or exc}; check free disk space") from None
        self._pending += 1
        if self._pending >= self.sync_every or time.monotonic() - self._synced_at >= self.sync_seconds:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._file.fileno())
        self._pending, self._synced_at = 0, time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
