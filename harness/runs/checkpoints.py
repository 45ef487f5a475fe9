"""Resumable checkpoints: per-unit work appended to a JSONL file as soon as it finishes, keyed, so a rerun skips it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from . import files  # durable_write by attribute: the crash test's write log patches it there
from .files import atomic_write, jsonable


class CorruptCheckpoint(ValueError):
    """A complete checkpoint line that is not a record: skipping it would silently drop finished work."""


class Checkpoint:
    """Append-only JSONL of finished units keyed by ``key``.

    A torn last line (killed mid-write: no closing newline) is dropped and the file repaired, so appending continues
    cleanly; that unit is simply redone. Any complete line that does not parse is a ``CorruptCheckpoint`` naming the
    file and line, never skipped.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.appended = 0  # rows this object wrote (a key written again counts again)
        if self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):  # killed mid-write: drop the torn tail before appending again
                text = text[: text.rfind("\n") + 1]
                atomic_write(self.path, text)
            for number, line in enumerate(text.split("\n")[:-1], start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorruptCheckpoint(
                        f"{self.path}:{number}: corrupt checkpoint line ({e.msg}): {line[:80]!r}; "
                        "repair or delete that line, or rerun with --fresh") from None
                if not isinstance(rec, dict) or "key" not in rec:
                    raise CorruptCheckpoint(f"{self.path}:{number}: checkpoint line is not a record with a 'key': "
                                            f"{line[:80]!r}; repair or delete the line, or rerun with --fresh")
                self.records[rec["key"]] = rec

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict:
        return self.records[key]

    def add(self, key: str, **values: Any) -> dict:
        rec = {"key": key, **json.loads(json.dumps(values, default=jsonable))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            files.durable_write(f, (json.dumps(rec) + "\n").encode(), self.path.name)
        files.crash_point("unrenamed", "done")  # an append has no rename: its line is complete
        self.records[key] = rec
        self.appended += 1
        return rec

    def values(self) -> Iterator[dict]:
        return iter(self.records.values())
