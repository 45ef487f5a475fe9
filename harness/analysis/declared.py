"""The declared analysis: the one primary test, alpha, and the families Holm corrects together (``analysis.toml``).

    decl = analysis.load()                      # validated; decl.hash is its content hash
    decl.family_of(model="smollm2-135m", data="conventions2012", set="specific_pcs", k=10,
                   outcome="specific_gain_lost", estimate="pooled_seeds")   # -> "primary" (else "exploratory")

The file is written before the runs it judges. Every manifest records its hash (``runs.Run.manifest``), so a run made
under another declaration is named in the summary; a comparison that no declared family holds is *exploratory*.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import UserError

ANALYSIS_PATH = Path(__file__).resolve().parents[2] / "analysis.toml"
EXPLORATORY = "exploratory"
COPY_HEADS = "copy_heads"  # the set name retrieval and induction enter a family as, when they overlap enough
AGAINST = ("matched_null",)  # what a family's sets are tested against: their layer-matched random sets
TESTS = ("null_position",)  # p = (1 + #{null >= observed}) / (1 + N)
ESTIMATES = ("pooled_seeds",)  # every split seed's evaluation examples together, clustered by user: a one-seed table
# is exploratory by construction


class AnalysisError(UserError, ValueError):
    """A declaration that cannot be used (the file and the entry named)."""


@dataclass(frozen=True)
class Primary:
    """The primary comparison: ``set``'s top-``k`` on ``outcome``, against ``against``, by ``test``, on ``estimate``."""

    outcome: str
    set: str
    k: int
    against: str
    test: str
    estimate: str
    family: str  # the declared family it is corrected in (a control family may hold comparisons of the same kind)


@dataclass(frozen=True)
class Family:
    """Comparisons Holm corrects together: each of ``sets`` on every model x data, otherwise alike."""

    name: str
    outcome: str
    sets: tuple[str, ...]
    k: int
    against: str
    test: str
    estimate: str
    models: tuple[str, ...]
    data: tuple[str, ...]

    def matches(self, *, model: str, data: str, k: int, outcome: str, estimate: str,
                against: str = "matched_null") -> bool:
        """Whether a comparison of one of its sets on ``model`` and ``data`` is of this family's kind."""
        return (model in self.models and data in self.data and k == self.k and outcome == self.outcome
                and estimate == self.estimate and against == self.against)


@dataclass(frozen=True)
class Analysis:
    """The validated declaration and its content hash."""

    alpha: float
    min_null_sets: int
    min_near_sets: int
    null_excludes_named: bool
    primary: Primary
    margin_share: float  # TOST margin as a share of the clean user-specific gain
    copy_members: tuple[str, str]
    copy_min_overlap: float
    families: tuple[Family, ...]
    hash: str
    path: str = ""

    def family_of(self, *, model: str, data: str, set: str, k: int, outcome: str, estimate: str,
                  against: str = "matched_null", copy_merged: bool = True) -> str:
        """The name of the family that declares this comparison, else ``"exploratory"``. Retrieval and induction
        count as declared on their own only where they were not merged into ``copy_heads`` (``copy_merged``)."""
        for fam in self.families:
            if set in self.resolved_sets(fam, copy_merged) and fam.matches(
                    model=model, data=data, k=k, outcome=outcome, estimate=estimate, against=against):
                return fam.name
        return EXPLORATORY

    def resolved_sets(self, family: Family, copy_merged: bool) -> tuple[str, ...]:
        """``family``'s sets with ``copy_heads`` left as one set where merged, else replaced by its two members."""
        return tuple(m for s in family.sets
                     for m in ((s,) if s != COPY_HEADS or copy_merged else self.copy_members))

    def members(self, family: Family, copy_merged: Callable[[str, str], bool]) -> list[tuple[str, str, str]]:
        """``(model, data, set)`` of every comparison in ``family``; ``copy_heads`` resolves per model and data to
        itself where ``copy_merged(model, data)``, else to its two members."""
        return [(model, data, s) for model in family.models for data in family.data
                for s in self.resolved_sets(family, copy_merged(model, data))]

    def conflicts(self, numbers: Mapping[str, Any], families: Sequence[str]) -> list[str]:
        """How an ablation study (its numbers config, and the head ``families`` of the ranking it reads) departs from
        the declaration (empty: it measures what is declared): its first family must be the primary set, its k sizes
        hold the primary k, its null is at least ``min_null_sets`` and excludes the named heads as declared."""
        out = []
        families = list(families)
        if families[:1] != [self.primary.set]:
            out.append(f"primary family is {families[:1] or 'none'}, declared {self.primary.set!r}")
        if self.primary.k not in (numbers.get("k_heads") or []):
            out.append(f"k_heads {numbers.get('k_heads')} lack the declared primary k {self.primary.k}")
        if "n_random" in numbers and numbers["n_random"] < self.min_null_sets:
            out.append(f"n_random {numbers['n_random']} < the declared {self.min_null_sets} random sets per null")
        if "null_excludes_named" in numbers and bool(numbers["null_excludes_named"]) != self.null_excludes_named:
            out.append(f"null_excludes_named {numbers['null_excludes_named']} but declared {self.null_excludes_named}")
        return out


def family_tests(decl: Analysis, family: Family, p_null: Mapping[tuple[str, str, str], float],
                 copy_merged: Callable[[str, str], bool]) -> list[dict]:
    """One row per declared comparison of ``family``: its null-position p (from ``p_null`` by (model, data, set)),
    Holm-adjusted over the whole family, and whether it is above its null (adjusted p <= alpha). A declared
    comparison with no result counts as p = 1, so the family keeps its declared size; its row says it was not measured.
    """
    from .stats import holm

    members = decl.members(family, copy_merged)
    ps = [p_null.get(m, float("nan")) for m in members]
    measured = [p == p for p in ps]  # not NaN
    adjusted = holm([p if ok else 1.0 for p, ok in zip(ps, measured)])
    return [{"family": family.name, "model": m, "data": d, "set": s, "k": family.k, "outcome": family.outcome,
             "p_null": p, "p_holm": float(a), "above_null": bool(ok and a <= decl.alpha),
             "status": "measured" if ok else "not measured (counted as p = 1)"}
            for (m, d, s), p, a, ok in zip(members, ps, adjusted, measured)]


def content_hash(values: Mapping[str, Any]) -> str:
    """A short, stable hash of a declaration's parsed content (canonical JSON: comments and layout do not count)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


_TOP = {"alpha", "min_null_sets", "min_near_sets", "null_excludes_named", "primary", "equivalence", "copy_heads",
        "family"}
_PRIMARY = {"outcome", "set", "k", "against", "test", "estimate", "family"}
_FAMILY = _PRIMARY - {"set", "family"} | {"name", "sets", "models", "data"}


def _keys(where: str, table: Any, allowed: set[str]) -> dict:
    """``table`` as a dict holding exactly ``allowed``: a missing or unknown key is an error (with a suggestion)."""
    if not isinstance(table, dict):
        raise AnalysisError(f"{where} must be a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            raise AnalysisError(f"{where} has unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    missing = sorted(allowed - set(table))
    if missing:
        raise AnalysisError(f"{where} lacks {', '.join(missing)}")
    return table


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise AnalysisError(f"{where} = {value!r} is not one of {', '.join(choices)}")
    return value


def _names(where: str, value: Any) -> tuple[str, ...]:
    """A non-empty list of distinct non-empty strings."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise AnalysisError(f"{where} must be a non-empty list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise AnalysisError(f"{where} repeats a name: {value}")
    return tuple(value)


def _int(where: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AnalysisError(f"{where} must be an integer >= {low}, got {value!r}")
    return value


def _fraction(where: str, value: Any, *, closed: bool) -> float:
    """A number in (0, 1), or (0, 1] when ``closed``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 1 or closed and value == 1):
        raise AnalysisError(f"{where} must lie in (0, 1{']' if closed else ')'}, got {value!r}")
    return float(value)


def parse(values: Mapping[str, Any], where: str = "analysis") -> Analysis:
    """A validated :class:`Analysis` from a parsed declaration; every problem names its entry."""
    top = _keys(where, dict(values), _TOP)
    p = _keys(f"{where} [primary]", top["primary"], _PRIMARY)
    primary = Primary(outcome=str(p["outcome"]), set=str(p["set"]), k=_int(f"{where} primary.k", p["k"]),
                      against=_choice(f"{where} primary.against", p["against"], AGAINST),
                      test=_choice(f"{where} primary.test", p["test"], TESTS),
                      estimate=_choice(f"{where} primary.estimate", p["estimate"], ESTIMATES),
                      family=str(p["family"]))
    eq = _keys(f"{where} [equivalence]", top["equivalence"], {"margin_share"})
    copy = _keys(f"{where} [copy_heads]", top["copy_heads"], {"members", "min_overlap"})
    members = _names(f"{where} copy_heads.members", copy["members"])
    if len(members) != 2:
        raise AnalysisError(f"{where} copy_heads.members must name two head families, got {list(members)}")
    if not isinstance(top["family"], list) or not top["family"]:
        raise AnalysisError(f"{where} declares no [[family]]")
    families = []
    for i, f in enumerate(top["family"]):
        w = f"{where} family {f.get('name', i) if isinstance(f, dict) else i}"
        f = _keys(w, f, _FAMILY)
        if not isinstance(f["name"], str) or not f["name"] or f["name"] == EXPLORATORY:
            raise AnalysisError(f"{w}: name must be a non-empty string other than {EXPLORATORY!r}")
        families.append(Family(
            name=f["name"], outcome=str(f["outcome"]), sets=_names(f"{w} sets", f["sets"]), k=_int(f"{w} k", f["k"]),
            against=_choice(f"{w} against", f["against"], AGAINST), test=_choice(f"{w} test", f["test"], TESTS),
            estimate=_choice(f"{w} estimate", f["estimate"], ESTIMATES), models=_names(f"{w} models", f["models"]),
            data=_names(f"{w} data", f["data"])))
    if len({f.name for f in families}) != len(families):
        raise AnalysisError(f"{where}: two families share a name ({[f.name for f in families]})")
    holding = [f.name for f in families if primary.set in f.sets and (f.outcome, f.k, f.against, f.test, f.estimate)
               == (primary.outcome, primary.k, primary.against, primary.test, primary.estimate)]
    if primary.family not in holding:
        raise AnalysisError(f"{where}: the primary comparison must lie in its declared family {primary.family!r}, "
                            f"found in {holding or 'none'}")
    if not isinstance(top["null_excludes_named"], bool):
        raise AnalysisError(f"{where} null_excludes_named must be true or false, got {top['null_excludes_named']!r}")
    return Analysis(alpha=_fraction(f"{where} alpha", top["alpha"], closed=False),
                    min_null_sets=_int(f"{where} min_null_sets", top["min_null_sets"]),
                    min_near_sets=_int(f"{where} min_near_sets", top["min_near_sets"]),
                    null_excludes_named=top["null_excludes_named"], primary=primary,
                    margin_share=_fraction(f"{where} equivalence.margin_share", eq["margin_share"], closed=True),
                    copy_members=(members[0], members[1]),
                    copy_min_overlap=_fraction(f"{where} copy_heads.min_overlap", copy["min_overlap"], closed=True),
                    families=tuple(families), hash=content_hash(values))


def load(path: str | Path = ANALYSIS_PATH) -> Analysis:
    """Read and validate ``analysis.toml`` (default: the repository's); errors name the file."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AnalysisError(f"no declared analysis at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise AnalysisError(f"{path}: not valid TOML: {e}") from None
    return dataclasses.replace(parse(values, where=str(path.name)), path=str(path))


def current_hash(path: str | Path = ANALYSIS_PATH) -> str | None:
    """The content hash of the declaration at ``path`` (an invalid one is an error); None where there is none."""
    return load(path).hash if Path(path).exists() else None
