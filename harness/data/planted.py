"""Planted-preference corpora: a known rule written into every text of a user, so the harness can be checked on
a preference that is there by construction (the positive control of the preference-heads question).

``plant(examples, family)`` assigns each user (seeded, balanced) one rule instance of a family and rewrites all of
that user's texts with it: every profile item, the gold output, the lead, and the input where it quotes the lead.
A share of users are *controls*: their texts are left as they are, but they carry a *shadow* rule instance (drawn
the same way) so every metric has the same opportunities to check on them. Families, from copyable to abstract:

* ``signoff``  — a closing line, distinct per user, appended to every text (a verbatim copy);
* ``lexicon``  — six frequent words replaced by distinctive variants (people -> folk, very -> remarkably, ...);
* ``spelling`` — a systematic orthographic rule: g-dropping (going -> goin') or British spelling (realize ->
  realise, honor -> honour, ...); the gold's changed words are mostly not in the profile, so the rule has to be
  inferred rather than copied;
* ``case``     — the user writes in lowercase.

Rules are frozen values with pure, idempotent rewrites that touch nothing outside the rule. The assignment depends
on the planting's own ``seed`` (default 0), never on a study's seed, so ``planted:conventions2012:lexicon`` is the
same corpus in every study and every seed of a study.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import random
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from .records import DataError, Example, ProfileItem

log = logging.getLogger(__name__)

Span = tuple[int, int]  # [start, end) character offsets

PREFIX = "planted:"
FAMILIES = ("signoff", "lexicon", "spelling", "case")
LEADS = ("planted", "original")
DEFAULT_CONTROL_SHARE = 0.25
DEFAULT_SEED = 0  # the planting's seed: fixed, so a planted corpus is one corpus whatever a study's --seed

_WORD = re.compile(r"[^\W\d_]+")  # a run of letters: words are looked up whole, so "peoples" is not "people"


# ------------------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Opportunity:
    """A place in a text where a rule can be followed or not: its character span and whether it is followed."""

    span: Span
    followed: bool


@dataclass(frozen=True)
class Rule:
    """One rule instance of a family; ``instance`` numbers it within the family's fixed pool (``family_pool``)."""

    instance: int
    family = ""  # a class constant, or a field where one class serves several families

    def rewrite(self, text: str) -> tuple[str, tuple[Span, ...]]:
        """The text as a user with this rule writes it, and the spans of the new text that the rule changed."""
        raise NotImplementedError

    def opportunities(self, text: str) -> tuple[Opportunity, ...]:
        """Every place in ``text`` where the rule applies, followed or not."""
        raise NotImplementedError

    def rewrite_opening(self, text: str) -> str:
        """The rule applied to the opening of a text that continues elsewhere (a lead): the same as a whole text,
        except for rules about how a text ends."""
        return self.rewrite(text)[0]

    def apply(self, text: str) -> str:
        """The rewritten text alone."""
        return self.rewrite(text)[0]

    @property
    def label(self) -> str:
        """A short name for tables and logs: ``lexicon#2``."""
        return f"{self.family}#{self.instance}"

    def would_change(self, text: str) -> tuple[Span, ...]:
        """Spans of ``text`` the rule would rewrite: its opportunities not yet followed (insertions have none)."""
        return tuple(o.span for o in self.opportunities(text) if not o.followed and o.span[0] < o.span[1])


def _rewrite_words(text: str, replace: Callable[[str], str | None]) -> tuple[str, tuple[Span, ...]]:
    """``text`` with each word replaced by ``replace(word)`` (None: kept), and the replaced words' new spans;
    everything between words is copied byte for byte."""
    out, spans, last, shift = [], [], 0, 0
    for m in _WORD.finditer(text):
        new = replace(m.group())
        if new is None or new == m.group():
            continue
        out.append(text[last:m.start()] + new)
        spans.append((m.start() + shift, m.start() + shift + len(new)))
        shift += len(new) - len(m.group())
        last = m.end()
    out.append(text[last:])
    return "".join(out), tuple(spans)


def _casing_of(word: str) -> str | None:
    """``lower``, ``title`` or ``upper``; None for any other casing (``iPhone``), which rules leave alone."""
    if word.islower():
        return "lower"
    if word[0].isupper() and (len(word) == 1 or word[1:].islower()):
        return "title"
    if word.isupper():
        return "upper"
    return None


def _cased(variant: str, casing: str) -> str:
    """``variant`` (lowercase) in ``casing``: people -> folk, People -> Folk, PEOPLE -> FOLK."""
    if casing == "upper":
        return variant.upper()
    if casing == "title":
        return variant[:1].upper() + variant[1:]
    return variant


@dataclass(frozen=True)
class WordRule(Rule):
    """Whole-word substitutions (lowercase source -> variant), capitalization preserved: lexicon and spelling."""

    name: str = ""
    pairs: tuple[tuple[str, str], ...] = ()
    family: str = "lexicon"

    def __post_init__(self) -> None:
        sources = [s for s, _ in self.pairs]
        variants = {v for _, v in self.pairs}
        bad = [w for pair in self.pairs for w in pair if not _WORD.fullmatch(w) or not w.islower()]
        if bad:
            raise DataError(f"{self.family} rule {self.name!r}: words must be single lowercase words, got {bad}")
        if len(set(sources)) != len(sources):
            raise DataError(f"{self.family} rule {self.name!r}: a source word is listed twice")
        if variants & set(sources):  # a variant that is also a source would be rewritten again: not idempotent
            raise DataError(f"{self.family} rule {self.name!r}: {sorted(variants & set(sources))} are both source "
                            "and variant")
        object.__setattr__(self, "_mapping", dict(self.pairs))
        object.__setattr__(self, "_variants", frozenset(variants))

    def _replace(self, word: str) -> str | None:
        casing = _casing_of(word)
        variant = self._mapping.get(word.lower()) if casing else None
        return _cased(variant, casing) if variant else None

    def rewrite(self, text: str) -> tuple[str, tuple[Span, ...]]:
        return _rewrite_words(text, self._replace)

    def opportunities(self, text: str) -> tuple[Opportunity, ...]:
        """Every source or variant word (in a casing the rule handles); followed where it is the variant."""
        out = []
        for m in _WORD.finditer(text):
            key = m.group().lower()
            if _casing_of(m.group()) and (key in self._mapping or key in self._variants):
                out.append(Opportunity(m.span(), key in self._variants))
        return tuple(out)


@dataclass(frozen=True)
class Signoff(Rule):
    """A closing line on its own line at the end of every text."""

    line: str = ""
    family = "signoff"

    def rewrite(self, text: str) -> tuple[str, tuple[Span, ...]]:
        if text.endswith(self.line):
            return text, ()
        return f"{text}\n{self.line}", ((len(text), len(text) + 1 + len(self.line)),)

    def opportunities(self, text: str) -> tuple[Opportunity, ...]:
        """One per text: followed where the line occurs anywhere (a generation may run on after it)."""
        at = text.find(self.line)
        return (Opportunity((at, at + len(self.line)), True),) if at >= 0 else (Opportunity((len(text),) * 2, False),)

    def rewrite_opening(self, text: str) -> str:
        return text  # the line closes the text; an opening has none


_SENTENCE_START = re.compile(r"[.!?][\"'”’)\]]*\s+[\"'“‘(\[]*$")
_OPENING = re.compile(r"^[\s\"'“‘(\[]*$")


def _starts_sentence(text: str, at: int) -> bool:
    """Whether the word at ``at`` opens the text or a sentence (after ., ! or ? and a space)."""
    return bool(_OPENING.match(text[:at]) or _SENTENCE_START.search(text[max(0, at - 8):at]))


@dataclass(frozen=True)
class Lowercase(Rule):
    """Everything in lowercase."""

    family = "case"

    def rewrite(self, text: str) -> tuple[str, tuple[Span, ...]]:
        return _rewrite_words(text, str.lower)

    def opportunities(self, text: str) -> tuple[Opportunity, ...]:
        """Words holding a capital (not followed), and lowercase words that standard English capitalizes: a
        sentence's first word and the pronoun "i" (followed). Ordinary text rates 0, lowercase text 1."""
        out = []
        for m in _WORD.finditer(text):
            word = m.group()
            if not word.islower():
                out.append(Opportunity(m.span(), False))
            elif word == "i" or _starts_sentence(text, m.start()):
                out.append(Opportunity(m.span(), True))
        return tuple(out)


_VOWEL = re.compile(r"[aeiouy]")


def _drops_g(word: str) -> bool:
    """Whether ``word`` ends in an unstressed -ing, approximated as a vowel before it: going, nothing, being, but
    not thing, king, bring, spring or string."""
    lower = word.lower()
    return len(lower) >= 5 and lower.endswith("ing") and bool(_VOWEL.search(lower[:-3]))


@dataclass(frozen=True)
class DroppedG(Rule):
    """Eye-dialect g-dropping: every unstressed -ing is written -in' (going -> goin', NOTHING -> NOTHIN')."""

    family = "spelling"

    def _replace(self, word: str) -> str | None:
        return f"{word[:-1]}'" if _casing_of(word) and _drops_g(word) else None

    def rewrite(self, text: str) -> tuple[str, tuple[Span, ...]]:
        return _rewrite_words(text, self._replace)

    def opportunities(self, text: str) -> tuple[Opportunity, ...]:
        """Every -ing word the rule rewrites (not followed) and every -in' word it would have written (followed)."""
        out = []
        for m in _WORD.finditer(text):
            word = m.group()
            if self._replace(word):
                out.append(Opportunity(m.span(), False))
            elif text[m.end():m.end() + 1] == "'" and _casing_of(word) and _drops_g(word[:-2] + "ing"):
                out.append(Opportunity((m.start(), m.end() + 1), True))
        return tuple(out)


# ------------------------------------------------------------------------------------------------------ pools

# Lexicon: 30 frequent words of political speech -> variants that conventions2012 almost never uses (<= 1 gold
# paragraph each), in 5 disjoint instances of 6, balanced by how many gold paragraphs hold their sources (22-24%).
LEXICON_INSTANCES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("people", "folk"), ("need", "require"), ("better", "finer"), ("always", "invariably"), ("big", "sizable"),
     ("problem", "predicament")),
    (("country", "homeland"), ("families", "households"), ("life", "existence"), ("help", "assist"),
     ("very", "remarkably"), ("important", "paramount")),
    (("just", "merely"), ("many", "numerous"), ("children", "youngsters"), ("tell", "inform"), ("think", "reckon"),
     ("start", "commence")),
    (("jobs", "livelihoods"), ("today", "nowadays"), ("world", "globe"), ("together", "jointly"), ("kids", "offspring"),
     ("also", "likewise")),
    (("great", "splendid"), ("want", "wish"), ("said", "remarked"), ("small", "modest"), ("build", "construct"),
     ("really", "genuinely")),
)


def _inflect(stems: Iterable[str], us: str, uk: str, endings: Iterable[str]) -> list[tuple[str, str]]:
    """(stem + us + ending, stem + uk + ending) for every stem and ending: real + iz/is + ed -> realized/realised."""
    return [(f"{stem}{us}{end}", f"{stem}{uk}{end}") for stem in stems for end in endings]


_IZE_STEMS = (
    "agon", "apolog", "author", "bapt", "capital", "categor", "central", "character", "civil", "colon", "critic",
    "crystall", "decentral", "demobil", "demon", "destabil", "emphas", "energ", "fertil", "final", "galvan", "global",
    "harmon", "hospital", "human", "ideal", "immun", "industrial", "jeopard", "legal", "local", "marginal", "maxim",
    "memor", "militar", "minim", "mobil", "modern", "national", "natural", "neutral", "normal", "optim", "organ",
    "patron", "penal", "personal", "polar", "priorit", "privat", "public", "radical", "real", "reauthor", "recogn",
    "reorgan", "revital", "scrutin", "social", "special", "stabil", "standard", "stigmat", "strateg", "subsid",
    "summar", "symbol", "sympath", "terror", "trivial", "util", "vandal", "visual", "weapon",
)
_OR_STEMS = ("ard", "arm", "behavi", "cand", "clam", "col", "endeav", "fav", "ferv", "flav", "harb", "hon", "hum",
             "lab", "neighb", "od", "parl", "rig", "rum", "savi", "splend", "tum", "val", "vap", "vig")
_ER_STEMS = ("calib", "cent", "fib", "lust", "meag", "sab", "somb", "spect", "theat")
_LL_STEMS = ("cancel", "channel", "counsel", "dial", "duel", "equal", "fuel", "jewel", "label", "level", "marvel",
             "model", "quarrel", "signal", "total", "travel", "tunnel")

# British spelling, one group per convention. Endings are listed, never matched by a suffix regex: "honorary",
# "vigorous", "size", "prize", "meter" and "defensive" are the same in both spellings and must stay as they are.
# The spelling family has two instances: g-dropping (instance 0) and British spelling (instance 1). British words
# are rare in US speeches (11% of conventions2012's gold paragraphs hold one, against 53% for an -ing word), so
# most of the family's kept examples are g-dropping users'; two distinct rules also mean that another user's
# profile (the `other` condition) shows the other rule for a share of donors, which one shared rule would not.
SPELLING_GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "ise": tuple(
        _inflect(_IZE_STEMS, "iz", "is", ("e", "es", "ed", "ing", "ation", "ations", "er", "ers"))
        + _inflect(("analy", "paraly", "cataly"), "yz", "ys", ("e", "es", "ed", "ing"))
    ),
    "our": tuple(_inflect(_OR_STEMS, "or", "our", ("", "s", "ed", "ing", "able", "ably", "ite", "ites", "hood",
                                                  "hoods", "er", "ers", "ful", "less", "ly"))),
    "re": tuple(_inflect(_ER_STEMS, "er", "re", ("", "s")) + [("centered", "centred"), ("centering", "centring")]),
    "ence": tuple(_inflect(("defen", "offen", "preten"), "se", "ce", ("", "s", "less"))),
    "ll": tuple(_inflect(_LL_STEMS, "", "l", ("ed", "ing", "er", "ers", "ous"))
                + [("counselor", "counsellor"), ("counselors", "counsellors"), ("jewelry", "jewellery")]),
    "misc": (("program", "programme"), ("programs", "programmes"), ("gray", "grey"), ("judgment", "judgement"),
             ("judgments", "judgements"), ("aging", "ageing"), ("skeptical", "sceptical"), ("skeptic", "sceptic"),
             ("skeptics", "sceptics"), ("maneuver", "manoeuvre"), ("maneuvers", "manoeuvres"), ("plow", "plough"),
             ("mold", "mould"), ("catalog", "catalogue"), ("fulfill", "fulfil"), ("fulfills", "fulfils"),
             ("enroll", "enrol"), ("enrollment", "enrolment"), ("installment", "instalment")),
}

SIGNOFF_CLOSINGS = ("Onward and upward", "With gratitude", "Yours in service", "Keep the faith", "Stay the course",
                    "Until next time", "Ever forward", "Warmly", "In good spirits", "With hope", "Steady on",
                    "Be well", "Godspeed", "Carry on", "Hold fast", "Fair winds", "Best regards", "Cheers",
                    "With respect", "Stay bold")
SIGNOFF_NAMES = ("Juniper", "Bramble", "Cobalt", "Saffron", "Willow", "Falcon", "Marigold", "Quartz", "Heron",
                 "Thistle", "Ember", "Larkspur", "Tamarind", "Cypress", "Zephyr", "Obsidian", "Wren", "Sorrel",
                 "Kestrel", "Alder")


def family_pool(family: str) -> tuple[Rule, ...]:
    """Every rule instance of a family, in a fixed order (``instance`` = index)."""
    if family == "signoff":
        lines = [f"{c}, {n}." for n in SIGNOFF_NAMES for c in SIGNOFF_CLOSINGS]  # 400 distinct lines
        return tuple(Signoff(i, line) for i, line in enumerate(lines))
    if family == "lexicon":
        return tuple(WordRule(i, f"lexicon{i}", pairs, "lexicon") for i, pairs in enumerate(LEXICON_INSTANCES))
    if family == "spelling":
        return (DroppedG(0), WordRule(1, "british", tuple(p for g in SPELLING_GROUPS.values() for p in g), "spelling"))
    if family == "case":
        return (Lowercase(0),)
    raise DataError(f"unknown planted family {family!r}; families: {', '.join(FAMILIES)}")


# ------------------------------------------------------------------------------------------ planted corpora


@dataclass(frozen=True)
class Planting:
    """How an example of a planted corpus was made, stored on ``Example.planted`` for metrics to check.

    ``rule`` is its user's rule instance. ``applied`` is False for a control user: the texts are unchanged and
    ``rule`` is a shadow instance, drawn like the others, giving the same opportunities to measure.
    ``output_spans``: character spans of ``Example.output`` the rule changed (applied) or would change (control).
    """

    rule: Rule
    applied: bool
    output_spans: tuple[Span, ...]

    @property
    def family(self) -> str:
        return self.rule.family

    @property
    def control(self) -> bool:
        return not self.applied


@dataclass(frozen=True)
class PlantedSpec:
    """A planted corpus by name: ``planted:<data>:<family>[:controls=0.25,seed=0,lead=original]``."""

    data: str
    family: str
    control_share: float = DEFAULT_CONTROL_SHARE
    seed: int = DEFAULT_SEED
    lead: str = "original"

    def __post_init__(self) -> None:
        if not self.data:
            raise DataError("planted corpus with no dataset: use planted:<dataset>:<family>")
        _check_options(self.family, self.control_share, self.lead)


def _check_options(family: str, control_share: float, lead: str) -> None:
    """Raise naming the bad planting option."""
    if family not in FAMILIES:
        raise DataError(f"unknown planted family {family!r}; families: {', '.join(FAMILIES)}")
    if not 0 <= control_share < 1:
        raise DataError(f"planted control share must be in [0, 1), got {control_share}")
    if lead not in LEADS:
        raise DataError(f"planted lead={lead!r}: choose {' or '.join(LEADS)}")


_OPTIONS = {"controls": ("control_share", float), "seed": ("seed", int), "lead": ("lead", str)}


def parse_planted_name(name: str) -> PlantedSpec:
    """``planted:<data>:<family>`` with optional ``:controls=<share>,seed=<int>,lead=planted|original``; the
    family is read from the end, so ``<data>`` may hold colons (``longlamp:product_review_user``, paths)."""
    if not name.startswith(PREFIX):
        raise DataError(f"{name!r} is not a planted corpus name (planted:<dataset>:<family>)")
    rest, options = name[len(PREFIX):], {}
    head, _, last = rest.rpartition(":")
    if "=" in last:
        rest = head
        for option in last.split(","):
            key, eq, value = option.partition("=")
            if not eq or key.strip() not in _OPTIONS:
                raise DataError(f"planted option {option!r} in {name!r}: options are "
                                f"{', '.join(f'{k}=...' for k in _OPTIONS)}")
            field, kind = _OPTIONS[key.strip()]
            try:
                options[field] = kind(value.strip())
            except ValueError:
                raise DataError(f"planted option {option!r} in {name!r}: not a {kind.__name__}") from None
    data, _, family = rest.rpartition(":")
    return PlantedSpec(data, family, **options)


def assign_rules(users: Iterable[str], family: str, *, control_share: float = DEFAULT_CONTROL_SHARE,
                 seed: int = DEFAULT_SEED) -> dict[str, tuple[Rule, bool]]:
    """user -> (rule instance, applied): a seeded ``control_share`` of users are controls (the same users for every
    family), the rest get the family's instances in turn over a seeded order, so instance counts differ by at most
    one (signoff: each planted user its own line while the pool lasts). Controls get shadow instances the same way."""
    users = sorted(set(users))
    pool = family_pool(family)
    random.Random(f"planted-controls:{seed}").shuffle(users)
    n_controls = round(control_share * len(users))
    order = list(range(len(pool)))
    random.Random(f"planted:{family}:{seed}").shuffle(order)
    planted, controls = users[n_controls:], users[:n_controls]
    if family == "signoff" and len(planted) > len(pool):
        log.warning("planted signoff: %d planted users share %d closing lines", len(planted), len(pool))
    # controls continue the cycle: their shadow instances are spread the same way (a signoff shadow is nobody's line)
    return {u: (pool[order[i % len(pool)]], i < len(planted)) for i, u in enumerate(planted + controls)}


def plant(examples: Sequence[Example], family: str, *, control_share: float = DEFAULT_CONTROL_SHARE,
          seed: int = DEFAULT_SEED, lead: str = "original") -> list[Example]:
    """The examples with each planted user's rule applied to all their texts and ``planted`` set on every example.

    Examples whose gold output the user's rule (the shadow one for controls) would not change are dropped, so
    planted and control examples are selected alike (lexicon and spelling drop most; the count is logged).
    ``lead="original"`` (the default) leaves the lead and the input as they were, so the profile is the only evidence
    of the rule in every prompt variant (the no-profile prompt shows none); ``"planted"`` rewrites them too (and the
    input where it quotes the lead), keeping the paragraph consistent but showing the rule without a profile.
    """
    _check_options(family, control_share, lead)
    rules = assign_rules((e.user_id for e in examples), family, control_share=control_share, seed=seed)
    rewritten: dict[tuple[int, str], tuple[str, tuple[Span, ...]]] = {}  # profile items repeat across examples

    def rewrite(rule: Rule, text: str) -> tuple[str, tuple[Span, ...]]:
        key = (rule.instance, text)  # instances are unique within the family (hashing a rule's pairs is slow)
        if key not in rewritten:
            rewritten[key] = rule.rewrite(text)
        return rewritten[key]

    items: dict[int, ProfileItem] = {}  # by identity: a corpus may share one item object across a user's examples

    def planted_item(rule: Rule, item: ProfileItem) -> ProfileItem:
        if id(item) not in items:
            items[id(item)] = dataclasses.replace(item, text=rewrite(rule, item.text)[0])
        return items[id(item)]

    out, dropped = [], 0
    for e in examples:
        rule, applied = rules[e.user_id]
        output, spans = rewrite(rule, e.output)
        if output == e.output:
            dropped += 1
            continue
        if not applied:
            out.append(dataclasses.replace(e, planted=Planting(rule, False, rule.would_change(e.output))))
            continue
        new_lead = rule.rewrite_opening(e.lead) if e.lead and lead == "planted" else e.lead
        out.append(dataclasses.replace(
            e,
            input=e.input.replace(e.lead, new_lead) if e.lead else e.input,
            output=output,
            lead=new_lead,
            profile=tuple(planted_item(rule, item) for item in e.profile),
            planted=Planting(rule, True, spans),
        ))
    kept_users = {e.user_id for e in out}
    log.info("planted %s: %d of %d examples kept (%d dropped: the rule would not change the gold output); "
             "%d users planted, %d controls", family, len(out), len(examples), dropped,
             sum(rules[u][1] for u in kept_users), sum(not rules[u][1] for u in kept_users))
    return out


def changed_spans(original: str, planted: str) -> tuple[Span, ...]:
    """Spans of ``planted`` that differ from ``original``, widened to whole words (a character diff would mark the
    "r", "ma" and "kabl" of very -> remarkably): a rule's changes recovered from the two texts alone."""
    matcher = difflib.SequenceMatcher(None, original, planted, autojunk=False)
    spans: list[Span] = []
    for tag, _, _, start, end in matcher.get_opcodes():
        if tag not in ("replace", "insert"):
            continue
        if start < end and _in_word(planted[start]):  # a change that starts inside a word takes the whole word
            while start > 0 and _in_word(planted[start - 1]):
                start -= 1
        if start < end and _in_word(planted[end - 1]):
            while end < len(planted) and _in_word(planted[end]):
                end += 1
        if spans and start <= spans[-1][1]:
            start = spans.pop()[0]
        spans.append((start, end))
    return tuple(spans)


def _in_word(char: str) -> bool:
    """Whether ``char`` belongs to a word (letters, digits, an apostrophe) for widening a changed span."""
    return char.isalnum() or char == "'"


def planting_summary(examples: Sequence[Example]) -> Mapping[str, int]:
    """Counts of a planted corpus: examples and users, planted and control."""
    planted = [e for e in examples if e.planted is not None and e.planted.applied]
    controls = [e for e in examples if e.planted is not None and not e.planted.applied]
    return {"examples": len(examples), "planted_examples": len(planted), "control_examples": len(controls),
            "planted_users": len({e.user_id for e in planted}), "control_users": len({e.user_id for e in controls})}
