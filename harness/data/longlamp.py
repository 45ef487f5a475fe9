"""LongLaMP (and any JSON/JSONL file in its schema) turned into Examples through `datasets.load_dataset`."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import datasets

from .records import DataError, Example, ProfileItem

log = logging.getLogger(__name__)

HUB_ID = "LongLaMP/LongLaMP"
HUB_SPLITS = ("train", "val", "test")  # the hub's split names; "validation"/"dev" are NOT aliases
SETTINGS = ("user", "temporal")


def _join(*parts: Any) -> str:
    """Join the non-empty parts with newlines (profile item text)."""
    return "\n".join(str(p).strip() for p in parts if p is not None and str(p).strip())


@dataclass(frozen=True)
class FieldMap:
    """How one LongLaMP task names its user id and profile-item fields, and how an item becomes text."""

    user_field: str
    item_fields: tuple[str, ...]  # required on every profile item
    render: Callable[[dict[str, Any]], str]
    time_field: str | None = None  # orders items chronologically when every item has it


FIELD_MAPS: dict[str, FieldMap] = {
    "abstract_generation": FieldMap(
        "name", ("title", "abstract"), lambda f: _join(f["title"], f["abstract"]), time_field="year"
    ),
    "product_review": FieldMap(
        "reviewerId",
        ("overall", "summary", "description", "reviewText"),
        lambda f: _join(f["summary"], f["reviewText"]),
    ),
    "topic_writing": FieldMap("author", ("summary", "content"), lambda f: _join(f["summary"], f["content"])),
}
# Schema for researchers' own users: {"user_id", "input", "output", "profile": [{"text", ...}]}. Optional, in any
# schema: "doc_id" on a row and on its profile items (the document each text comes from: a profile item of the row's
# own document is then left out under profile_docs="other"), and a numeric "covariate" on a row (what
# --donor nearest matches donors on, e.g. a year). Without doc_id every text is its own document.
DOC_FIELD, COVARIATE_FIELD = "doc_id", "covariate"
CUSTOM_FIELD_MAP = FieldMap("user_id", ("text",), lambda f: str(f["text"]))
CONFIGS = tuple(f"{task}_{setting}" for task in FIELD_MAPS for setting in SETTINGS)


def field_map(config: str) -> FieldMap:
    """The field map of a LongLaMP config such as 'product_review_user'; unknown config -> error."""
    for task, fmap in FIELD_MAPS.items():
        if config in (f"{task}_{s}" for s in SETTINGS):
            return fmap
    raise DataError(f"unknown LongLaMP config {config!r}; known configs: {', '.join(CONFIGS)}")


def load_longlamp(config: str, split: str = "train", *, load_dataset: Callable | None = None) -> list[Example]:
    """Load one LongLaMP config/split from the hub; a missing split is an error, never a fallback."""
    fmap = field_map(config)
    if split not in HUB_SPLITS:
        raise DataError(f"LongLaMP has no split {split!r}; splits: {', '.join(HUB_SPLITS)}")
    load = load_dataset or datasets.load_dataset
    source = f"{HUB_ID}:{config}"
    try:
        rows = load(HUB_ID, config, split=split)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataError(f"{source} has no split {split!r} ({err})") from err
        raise
    return rows_to_examples(rows, fmap, source=source, task=f"longlamp:{config}", split=split)


def load_longlamp_file(path: str | Path, split: str = "train", *, config: str | None = None) -> list[Example]:
    """Load a JSON/JSONL file (one split, called 'train') or a folder of <split>.json(l) files in LongLaMP's schema."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / f"{split}.jsonl", path / f"{split}.json") if p.exists()]
        if not found:
            have = sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
            raise DataError(f"{path}: no split {split!r} ({split}.jsonl or {split}.json); files there: {have}")
        file = found[0]
    elif path.is_file():
        if path.suffix not in (".json", ".jsonl"):
            raise DataError(f"{path}: custom data must be a .json or .jsonl file")
        if split != "train":
            raise DataError(
                f"{path}: a single file holds one split, 'train'; asked for {split!r}. "
                "Pass a folder with <split>.jsonl files to have several splits."
            )
        file = path
    else:
        raise DataError(f"{path}: no such file or folder")
    rows = _read_json_rows(file)
    fmap = field_map(config) if config else _infer_field_map(rows, file)
    return rows_to_examples(rows, fmap, source=str(file), task=f"file:{path.stem}", split=split)


def _read_json_rows(file: Path) -> datasets.Dataset:
    """Read a JSON/JSONL file through the `datasets` json builder; a syntax error names the file and line."""
    try:
        return datasets.load_dataset("json", data_files={"train": str(file)}, split="train")
    except Exception as err:  # datasets wraps pyarrow errors; find the offending line ourselves
        if file.suffix == ".jsonl":
            for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as jerr:
                    raise DataError(f"{file} row {lineno - 1} (line {lineno}): invalid JSON ({jerr.msg})") from err
        raise DataError(f"{file}: could not be read as LongLaMP-schema JSON: {err}") from err


def _infer_field_map(rows: datasets.Dataset, file: Path) -> FieldMap:
    """Pick the field map whose user-id field the file has (name, reviewerId, author or user_id)."""
    maps = {**FIELD_MAPS, "custom": CUSTOM_FIELD_MAP}
    hits = [fmap for fmap in maps.values() if fmap.user_field in rows.column_names]
    if len(hits) != 1:
        expected = ", ".join(f"{k}: {m.user_field!r}" for k, m in maps.items())
        raise DataError(
            f"{file}: cannot tell the schema from columns {rows.column_names}; "
            f"exactly one user id field is expected ({expected})"
        )
    return hits[0]


def rows_to_examples(
    rows: Iterable[dict[str, Any]], fmap: FieldMap, *, source: str, task: str, split: str
) -> list[Example]:
    """Validate every row (missing field -> error naming source, row and field) and map it to an Example."""
    examples = []
    for i, row in enumerate(rows):
        for key in ("input", "output", "profile", fmap.user_field):
            if row.get(key) is None:
                raise DataError(f"{source} row {i}: missing field {key!r}")
        user_id = str(row[fmap.user_field])
        raw_profile = row["profile"]
        if not isinstance(raw_profile, list):
            raise DataError(f"{source} row {i}: field 'profile' must be a list, got {type(raw_profile).__name__}")
        if not raw_profile:
            raise DataError(f"{source} row {i}: empty profile for user {user_id}")
        example_id = f"{task}:{split}:{row['id'] if row.get('id') is not None else i}"
        try:
            profile = _profile_items(raw_profile, fmap)
            covariate = row.get(COVARIATE_FIELD)
            if covariate is not None and _as_float(covariate) is None:
                raise DataError(f"field {COVARIATE_FIELD!r} must be a number, got {covariate!r}")
            examples.append(Example(example_id, user_id, str(row["input"]), str(row["output"]), profile, task, split,
                                    doc_id=str(row.get(DOC_FIELD) or ""), covariate=_as_float(covariate)))
        except DataError as err:
            raise DataError(f"{source} row {i}: {err}") from err
    if not examples:
        raise DataError(f"{source}: no rows")
    ids = [e.example_id for e in examples]
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: duplicate example ids (field 'id')")
    log.info("%s [%s]: %d examples, %d users", source, split, len(examples), len({e.user_id for e in examples}))
    return examples


def _profile_items(raw_profile: list[Any], fmap: FieldMap) -> tuple[ProfileItem, ...]:
    """Check each profile item's fields and give it a chronological position (by time_field if all have it)."""
    for j, raw in enumerate(raw_profile):
        if not isinstance(raw, dict):
            raise DataError(f"profile item {j} is a {type(raw).__name__}, not an object")
        for name in fmap.item_fields:
            if raw.get(name) is None:
                raise DataError(f"profile item {j} is missing field {name!r}")
    order = list(range(len(raw_profile)))
    if fmap.time_field and all(_as_float(raw.get(fmap.time_field)) is not None for raw in raw_profile):
        order.sort(key=lambda j: _as_float(raw_profile[j][fmap.time_field]))
    items = []
    for position, j in enumerate(order):
        raw = raw_profile[j]
        fields = {k: str(v) for k, v in raw.items() if v is not None}
        text = fmap.render(raw)
        if not text:
            raise DataError(f"profile item {j} has no text in fields {list(fmap.item_fields)}")
        items.append(ProfileItem(text=text, fields=fields, position=position, doc_id=str(raw.get(DOC_FIELD) or "")))
    return tuple(items)


def _as_float(value: Any) -> float | None:
    """A sortable time value, or None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
