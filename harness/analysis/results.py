"""The one reader of committed results: where the run folders lie below a results root, and how their files are read.

    <results>/<model>/<data>/seed<k>/<study>[-<design>]/      one study on one split seed (manifest.json once finished)
    <results>/<model>/<data>/all_seeds/seeds_summary[-<design>]/   studies.seeds: the split seeds pooled
    <results>/cross_model[-<design>]/                         studies.cross_model: every model's rankings side by side

The results summary (``summary.md``), the paper's numbers and appendix, and the studies that read other studies' runs
(seeds, known_answer, cross_model) all find folders and read tables here, so each file is read one way everywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from ..intervene.heads import HeadSet
from ..runs.files import slug

CROSS_MODEL = "cross_model"  # studies.cross_model's folder in results/ (cross_model-<design>/ too): not a model
SIGNAL_SOURCES = ("signal", "pcs_ranking", "ablation_comparison", "dps_decoding")  # where signal.csv is read first
OUTCOME_ORDER = ("specific_gain_lost", "gain_lost", "nll_increase")  # the outcome a comparison is shown on first
STUDY_ORDER = ("signal", "pcs_ranking", "ablation_comparison", "dps_decoding", "seeds_summary")
POOLED = "all_seeds"  # the folder beside seed<k>/ that holds the summaries across split seeds
RANKING = "ranking.json"
RANKING_LAYOUT = "<model>/<data>/seed<k>/{folder}/" + RANKING  # the v2 layout of a ranking (v1: no seed level)
_SEED = re.compile(r"seed(\d+)")


# ------------------------------------------------------------------------------------------------ one run folder


def finished(folder: Path) -> bool:
    """Whether a run folder holds its manifest (a study writes it last, so only a finished run has one)."""
    return (Path(folder) / "manifest.json").exists()


def manifest(folder: Path) -> dict:
    """A run folder's ``manifest.json``: its config, counts, provenance and what it read."""
    return json.loads((Path(folder) / "manifest.json").read_text())


def source_data(folders: Iterable[Path]) -> dict[str, str]:
    """Each finished run folder's data hash, read off its manifest: what a run that reads other runs rather than data
    (a summary across seeds or planted families) records as its data."""
    return {str(p): manifest(p).get("data_sha256") for p in folders}


def table(folder: Path, stem: str, *, na: Sequence[str] | None = None, pairs: bool = False) -> pd.DataFrame | None:
    """``<folder>/<stem>.csv`` as a frame, None when the run did not write it. ``na``: the cells read as missing
    (None: pandas' defaults; ``("",)``: empty cells only, so a name such as "None" stays a name; ``()``: none, empty
    cells stay ""); ``pairs``: the ``ci`` column's intervals read back as ``(low, high)``."""
    path = Path(folder) / f"{stem}.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path) if na is None else pd.read_csv(path, keep_default_na=False, na_values=list(na))
    if pairs and "ci" in frame:
        frame["ci"] = [tuple(json.loads(v)) if isinstance(v, str) else v for v in frame.ci]
    return frame


def first_outcome(run: Path, prefix: str) -> str | None:
    """The first outcome of :data:`OUTCOME_ORDER` whose ``<prefix><outcome>.csv`` the run wrote (the one a summary
    leads with), else None."""
    return next((o for o in OUTCOME_ORDER if (Path(run) / f"{prefix}{o}.csv").exists()), None)


def pooled_set_summary(run: Path) -> pd.DataFrame | None:
    """The pooled rows of a seeds summary's ``set_summary_by_seed.csv`` (every seed's evaluation examples together),
    names read literally; None without the table."""
    rows = table(run, "set_summary_by_seed", na=("",))
    return None if rows is None else rows[rows["seed"].astype(str) == "pooled"]


def sha256(path: Path) -> str:
    """A file's sha256: what a run that reads another run's file records of it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ finding folders


def run_folder(results: str | Path, model: str, data: str, folder: str) -> Path:
    """``<results>/<model>/<data>/<folder>`` (names made folder-safe), e.g. ``folder = "seed0/pcs_ranking"``."""
    return Path(results) / slug(model) / slug(data) / folder


def is_cross_model(name: str) -> bool:
    """Whether a folder name below the results root is studies.cross_model's (any design), not a model's."""
    return name == CROSS_MODEL or name.startswith(CROSS_MODEL + "-")


def model_folders(results: Path, *, cross_model: bool = False) -> list[Path]:
    """The folders below the results root, sorted: the models', or with ``cross_model`` studies.cross_model's."""
    results = Path(results)
    if not results.is_dir():
        return []
    return sorted(p for p in results.iterdir() if p.is_dir() and is_cross_model(p.name) == cross_model)


def data_folders(results: Path) -> list[Path]:
    """Every ``<model>/<data>`` folder below the results root, sorted by model, then data."""
    return [d for m in model_folders(results) for d in sorted(p for p in m.iterdir() if p.is_dir())]


def seed_number(folder: Path) -> int | None:
    """``k`` of a ``seed<k>`` folder, None for any other name."""
    m = _SEED.fullmatch(Path(folder).name)
    return int(m.group(1)) if m else None


def seed_folders(data_dir: Path) -> list[Path]:
    """The ``seed<k>`` folders of a ``<model>/<data>`` folder, by seed."""
    found = [p for p in Path(data_dir).glob("seed*") if p.is_dir() and seed_number(p) is not None]
    return sorted(found, key=seed_number)


def finished_runs(data_dir: Path) -> list[Path]:
    """The finished study folders of a ``<model>/<data>`` folder: ``seed<k>/<study>[-<design>]``, then
    ``all_seeds/<summary>``; by seed, then study (:data:`STUDY_ORDER`), then name."""
    def order(p: Path) -> tuple:
        """Seed (the pooled folder last), study, name."""
        study = next((i for i, s in enumerate(STUDY_ORDER) if p.name.startswith(s)), len(STUDY_ORDER))
        seed = seed_number(p.parent)
        return 1 << 30 if seed is None else seed, study, p.name
    found = [p.parent for p in Path(data_dir).glob("*/*/manifest.json")
             if seed_number(p.parent.parent) is not None or p.parent.parent.name == POOLED]
    return sorted(found, key=order)


def signal_source(seed_dir: Path, *, finished: bool = False) -> Path | None:
    """The ``signal.csv`` a seed folder's signal is read from: the first study of :data:`SIGNAL_SOURCES` that wrote
    one, else any other (a non-primary design alone has it too); ``finished``: only from runs with a manifest."""
    candidates = [seed_dir / s / "signal.csv" for s in SIGNAL_SOURCES] + sorted(seed_dir.glob("*/signal.csv"))
    return next((p for p in candidates if p.exists() and (not finished or (p.parent / "manifest.json").exists())),
                None)


# ------------------------------------------------------------------------------------------------ rankings


def ranking_folders(results: Path, folder: str = "pcs_ranking") -> tuple[list[Path], list[Path]]:
    """The v2 ranking folders below the results root (``<model>/<data>/seed<k>/<folder>`` holding ``ranking.json``),
    by model, data and seed number, and the v1 folders (``<model>/<data>/<folder>``, no seed level) left unread."""
    v1 = sorted(p for p in Path(results).glob(f"*/*/{folder}") if p.is_dir())
    return [f for d in data_folders(results) for f in seed_rankings(d, folder)], v1


def seed_rankings(data_dir: Path, folder: str = "pcs_ranking") -> list[Path]:
    """The ranking folders (``seed<k>/<folder>`` holding ``ranking.json``) of one ``<model>/<data>`` folder, by seed."""
    return [s / folder for s in seed_folders(data_dir) if (s / folder / RANKING).exists()]


def ranking_sets(folder: Path) -> dict[str, dict[int, HeadSet]]:
    """A ranking folder's top-k sets as ``ranking.json`` holds them: family -> k -> heads."""
    raw = json.loads((Path(folder) / RANKING).read_text())
    return {f: {int(k): HeadSet.parse(v) for k, v in s.items()} for f, s in raw["sets"].items()}
