"""One entry point for every dataset name: offline corpora, LongLaMP configs, or a path to custom JSON/JSONL."""
from __future__ import annotations

import logging
import random
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .corpora import load_conventions2012, load_debates2016
from .sotu import load_sotu
from .longlamp import CONFIGS, load_longlamp, load_longlamp_file
from .planted import FAMILIES, PREFIX as PLANTED_PREFIX, PlantedSpec, parse_planted_name, plant
from .records import DataError, Example, check_profile_docs, restrict_profile_docs

log = logging.getLogger(__name__)

CORPORA: dict[str, Callable[[], list[Example]]] = {
    "debates2016": load_debates2016,
    "conventions2012": load_conventions2012,
    "sotu": load_sotu,
}
# The covariate each corpus's examples carry, which a ``nearest`` donor is matched on (a corpus not named has none).
COVARIATES = {"sotu": "year of the address"}
DONORS = ("auto", "random", "nearest")
CORPUS_SPLITS = ("train",)  # the offline corpora are one split; use splits.py for discovery/evaluation


@lru_cache(maxsize=None)
def _corpus(name: str) -> tuple[Example, ...]:
    """A corpus built once per process (records are frozen, so sharing them is safe)."""
    return tuple(CORPORA[name]())


@lru_cache(maxsize=None)
def _planted(spec: PlantedSpec, split: str) -> tuple[Example, ...]:
    """A planted corpus built once per process from its whole base split (then subset like any dataset)."""
    base = load_examples(spec.data, split, profile_docs="any")  # the caller restricts the planted corpus
    return tuple(plant(base, spec.family, control_share=spec.control_share, seed=spec.seed, lead=spec.lead))


def dataset_names() -> list[str]:
    """Every known dataset name (a .json/.jsonl path or a folder of split files is also accepted, and
    ``planted:<any of these>:<family>`` plants a preference into any of them)."""
    return [*CORPORA, *(f"longlamp:{config}" for config in CONFIGS),
            *(f"{PLANTED_PREFIX}{corpus}:{family}" for corpus in CORPORA for family in FAMILIES)]


def base_corpus(name: str) -> str:
    """The corpus a dataset name reads (``planted:sotu:case`` reads sotu); the name itself otherwise."""
    return parse_planted_name(name).data if name.startswith(PLANTED_PREFIX) else name


def covariate_of(name: str) -> str | None:
    """What a ``nearest`` donor is matched on in dataset ``name`` (None: it has no covariate)."""
    return COVARIATES.get(base_corpus(name))


def resolve_donor(donor: str, name: str) -> str:
    """``--donor``: ``auto`` is ``nearest`` where the corpus has a covariate (the donor then differs from the user in
    little but who wrote it), else ``random``; ``nearest`` on a corpus without one is refused by name."""
    if donor not in DONORS:
        raise DataError(f"unknown --donor {donor!r}; choose {', '.join(DONORS)}")
    if donor == "auto":
        return "nearest" if covariate_of(name) else "random"
    if donor == "nearest" and not covariate_of(name) and not _is_file(base_corpus(name)):  # a file: checked on use
        known = ", ".join(f"{c} ({v})" for c, v in COVARIATES.items())
        raise DataError(f"--donor nearest needs a corpus covariate to match donors on, and {name} has none; use "
                        f"--donor random (corpora with one: {known})")
    return donor


def _is_file(name: str) -> bool:
    """Whether a dataset name is a path (a custom file may carry a covariate field; see longlamp.COVARIATE_FIELD)."""
    return name.endswith((".json", ".jsonl")) or Path(name).is_dir()


def load_examples(name: str, split: str = "train", *, n: int | None = None, seed: int = 0,
                  profile_docs: str = "other") -> list[Example]:
    """Examples of a named dataset split; n takes a seeded subset (kept in dataset order). ``profile_docs="other"``
    keeps only profile items from the user's other documents (an example with none is dropped); ``any`` keeps the
    example's own document's items too (records.restrict_profile_docs)."""
    check_profile_docs(profile_docs)  # before a corpus is loaded
    if name.startswith(PLANTED_PREFIX):
        examples = list(_planted(parse_planted_name(name), split))
    elif name in CORPORA:
        if split not in CORPUS_SPLITS:
            raise DataError(f"{name} has only split 'train'; draw discovery/evaluation with harness.data.splits")
        examples = list(_corpus(name))
    elif name.startswith("longlamp:"):
        examples = load_longlamp(name.split(":", 1)[1], split)
    elif _is_file(name):
        examples = load_longlamp_file(name, split)
    else:
        raise DataError(
            f"unknown dataset {name!r}; known: {', '.join(dataset_names())}, "
            "a path to a .json/.jsonl file (or folder of <split>.jsonl) in LongLaMP's schema, "
            f"or planted:<dataset>:<family> (families: {', '.join(FAMILIES)})"
        )
    return subset(restrict_profile_docs(examples, profile_docs), n, seed=seed)


def subset(examples: list[Example], n: int | None, *, seed: int = 0) -> list[Example]:
    """A seeded subset of n examples in their original order; all of them when n is None or >= len."""
    if n is None:
        return examples
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    if n >= len(examples):
        if n > len(examples):
            log.warning("asked for n=%d examples, dataset has %d: using all", n, len(examples))
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]
