"""Discovery split (ranks heads) vs evaluation split (tests ablations/decoding): disjoint, seeded, recordable."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from .records import DataError, Example


@dataclass(frozen=True)
class Split:
    """The two sides of a discovery/evaluation split and how they were drawn."""

    discovery: list[Example]
    evaluation: list[Example]
    seed: int
    eval_fraction: float
    by_user: bool

    def manifest(self) -> dict:
        """What a results file records so the split can be checked and redrawn."""
        return {
            "seed": self.seed,
            "eval_fraction": self.eval_fraction,
            "by_user": self.by_user,
            "n_discovery": len(self.discovery),
            "n_evaluation": len(self.evaluation),
            "discovery_ids": [e.example_id for e in self.discovery],
            "evaluation_ids": [e.example_id for e in self.evaluation],
            "discovery_users": sorted({e.user_id for e in self.discovery}),
            "evaluation_users": sorted({e.user_id for e in self.evaluation}),
        }

    def check_disjoint(self) -> None:
        """Raise if an example (or, with by_user, a user) is on both sides."""
        shared = {e.example_id for e in self.discovery} & {e.example_id for e in self.evaluation}
        if shared:
            raise DataError(f"{len(shared)} example(s) on both sides of the split, e.g. {sorted(shared)[:3]}")
        if self.by_user:
            users = {e.user_id for e in self.discovery} & {e.user_id for e in self.evaluation}
            if users:
                raise DataError(f"{len(users)} user(s) on both sides of a by-user split, e.g. {sorted(users)[:3]}")


def split_discovery_evaluation(
    examples: Sequence[Example], *, eval_fraction: float = 0.5, seed: int = 0, by_user: bool = False
) -> Split:
    """Seeded split by example (or by user); the draw depends on ids only, not on the input order."""
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    ids = [e.example_id for e in examples]
    if len(set(ids)) != len(ids):
        raise DataError("duplicate example ids: a split needs unique ids")
    units = sorted({e.user_id for e in examples} if by_user else set(ids))
    if len(units) < 2:
        raise DataError(f"need at least 2 {'users' if by_user else 'examples'} to split, got {len(units)}")
    random.Random(seed).shuffle(units)
    n_eval = min(max(round(eval_fraction * len(units)), 1), len(units) - 1)
    eval_units = set(units[:n_eval])
    key = (lambda e: e.user_id) if by_user else (lambda e: e.example_id)
    split = Split(
        discovery=[e for e in examples if key(e) not in eval_units],
        evaluation=[e for e in examples if key(e) in eval_units],
        seed=seed,
        eval_fraction=eval_fraction,
        by_user=by_user,
    )
    split.check_disjoint()
    return split


def assert_not_used_for_ranking(eval_ids: Iterable[str], ranking_ids: Iterable[str]) -> None:
    """Raise if any evaluation example was also used to rank heads (that would leak into the evaluation)."""
    leaked = sorted(set(eval_ids) & set(ranking_ids))
    if leaked:
        raise DataError(
            f"{len(leaked)} evaluation example(s) were used for head ranking, e.g. {leaked[:3]}; "
            "rank heads on the discovery split only"
        )
