"""The summary at the end of every study and of the pipeline: one screen, also written as ``<results>/summary.md``.

It is built only from the files the studies wrote (``signal.csv``, ``mde.csv``, ``comparison_<outcome>.csv``,
``set_summary.csv``, ``damage_matched.csv``, ``dps_vs_best_baseline.csv``, ``comparison_pooled_<outcome>.csv``),
never from a run's memory (found and read through :mod:`harness.analysis.results`), so it reads the same after a
resume. ``summary.md`` at the results root holds one section per ``<model>/<data>`` folder, with every seed and
ablation design found there; every study's ``finish`` (and the pipeline at its end) rewrites it and prints the section
of its own model and data:

- the profile signal (``gain_own``, ``gain_specific``) with its interval, on the evaluation and discovery splits;
- the head-set comparison: the primary family's top-k vs each other family and vs its layer-matched random sets
  (estimate, interval, Holm p, MDE), each family's percentile in its own matched null, the damage-matched residual;
- DPS vs the best baseline (ROUGE-L, Holm);
- where the tables and plots are.

Above the sections, the declared analysis (``analysis.toml``): each declared family's comparisons on the pooled
estimate, Holm-corrected together across models and corpora; "above its null" means that corrected p passed alpha.
Every other number is exploratory, and each section names the runs made under another declaration.

    python -m harness.analysis.summary results-quick      # print it again (and rewrite summary.md)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from . import declared as analysis
from . import results as reader
from . import stats
from ..intervene.heads import copy_heads
from ..runs.files import TEMP_SUFFIX, atomic_write, slug
from .tables import format_number
from ..logs import cli

_muted = [0]  # > 0 inside ``muted()``: report() writes summary.md but prints nothing


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Studies run inside this block (the pipeline's stages) write summary.md without printing it."""
    _muted[0] += 1
    try:
        yield
    finally:
        _muted[0] -= 1


def report(results: str | Path, model: str, data: str | list[str]) -> str:
    """Rewrite ``<results>/summary.md`` and print (unless ``muted``) the sections of ``model`` on ``data``."""
    root = Path(results)
    write(root)
    names = [data] if isinstance(data, str) else list(data)
    text = "\n".join(section(root / slug(model) / slug(d), root) for d in names)
    if not _muted[0]:
        print(f"\n{text}(written to {root / 'summary.md'}; the paths above are relative to {root}/)\n", flush=True)
    return text


def write(root: Path) -> Path:
    """``<root>/summary.md``: one section per ``<model>/<data>`` folder that holds v2 (``seed<k>/``) runs."""
    for stale in root.glob(f".summary.md.*{TEMP_SUFFIX}"):  # a killed summary write's temporary
        stale.unlink(missing_ok=True)
    folders = [d for d in reader.data_folders(root) if reader.finished_runs(d)]
    body = "\n".join(section(d, root) for d in folders) or "No study results yet.\n"
    return atomic_write(root / "summary.md", "# Summary of the results in this folder\n\n" + HOW + "\n"
                        + declared(root) + body)


def declared(root: Path) -> str:
    """The declared families (``analysis.toml``) on the pooled estimates found below ``root``: each comparison's null
    p, Holm-corrected over its family, and whether it is above its null; a family none of whose models and corpora
    has results here is one line."""
    decl = analysis.load()
    lines = [f"## Declared analysis (`analysis.toml`, hash `{decl.hash}`)", "",
             f"Primary: `{decl.primary.set}@{decl.primary.k}` on {decl.primary.outcome.replace('_', ' ')} against its "
             f"layer-matched random sets, by its null position p = (1 + #{{null ≥ observed}}) / (1 + N), pooled over "
             f"split seeds (user-clustered); α = {decl.alpha}, Holm within each family below. Everything else in this "
             "summary and the tables is exploratory.", ""]
    for fam in decl.families:
        if not any((root / m / d).is_dir() for m in fam.models for d in fam.data):
            lines += [f"Family `{fam.name}`: no results of its models and corpora here.", ""]
            continue
        p_null = {(m, d, s): p for m in fam.models for d in fam.data for s, p in _pooled_p_null(root / m / d, fam)}
        rows = analysis.family_tests(decl, fam, p_null, lambda m, d: _copy_merged(root / m / d, fam.k, decl))
        lines += [f"Family `{fam.name}` ({len(rows)} comparisons, {fam.outcome.replace('_', ' ')} at k = {fam.k}, "
                  f"{fam.estimate.replace('_', ' ')}):", ""]
        lines += _table(["model", "data", "set", "p (null)", "p (Holm, family)", "above its null"],
                        [[r["model"], r["data"], r["set"], _p(r["p_null"]), _p(r["p_holm"]),
                          ("yes" if r["above_null"] else "no") if r["status"] == "measured" else r["status"]]
                         for r in rows]) + [""]
    return "\n".join(lines) + "\n"


def _pooled_p_null(data_dir: Path, fam: analysis.Family) -> list[tuple[str, float]]:
    """``(set, p_null)`` of the pooled rows of ``fam``'s outcome at its k in the primary design's seeds summary."""
    t = reader.pooled_set_summary(data_dir / reader.POOLED / "seeds_summary")
    if t is None:
        return []
    t = t[(t.outcome == fam.outcome) & (t.null_matched_to == t["set"] + f"@{fam.k}")]
    return [(r["set"], float(r.p_null)) for _, r in t.iterrows()]


def _copy_merged(data_dir: Path, k: int, decl: analysis.Analysis) -> bool:
    """Whether retrieval and induction enter as one ``copy_heads`` set on this model and corpus: measured so in the
    pooled summary, else every seed's ranking merges them (``heads.copy_heads``); with no ranking, as declared."""
    pooled = reader.table(data_dir / reader.POOLED / "seeds_summary", "set_summary_by_seed")
    if pooled is not None and (pooled["set"] == analysis.COPY_HEADS).any():
        return True
    verdicts = []
    for folder in reader.seed_rankings(data_dir):
        sets = reader.ranking_sets(folder)
        a, b = (sets.get(m, {}).get(k) for m in decl.copy_members)
        if a and b:
            verdicts.append(copy_heads(a, b, min_overlap=decl.copy_min_overlap).merged)
    return all(verdicts)


def _analysis_note(runs: list[Path], root: Path) -> list[str]:
    """One line naming the runs made under another declared analysis than today's (or before there was one)."""
    now = analysis.current_hash()
    other = {}
    for run in runs:
        made = reader.manifest(run).get("analysis_hash")
        if made != now:
            other.setdefault(made or "none", []).append(f"`{run.relative_to(root)}`")
    if not other:
        return []
    if len(other) == 1 and sum(map(len, other.values())) == len(runs):  # the usual case: one line, not a list
        h = next(iter(other))
        return [f"All {len(runs)} runs here were made {_made_under(h)}, not under today's `{now}`: their labels "
                "follow today's declaration.", ""]
    return [f"Made under another declared analysis than today's `{now}`: " + "; ".join(
        f"{_made_under(h)}: {', '.join(names)}" for h, names in other.items()), ""]


def _made_under(h: str) -> str:
    return "before analysis.toml existed" if h == "none" else f"under analysis `{h}`"


HOW = ("Written by every study at its end from the files below (`python -m harness.analysis.summary <results>` rewrites it). "
       "Gains and head effects are in nats of gold loss; intervals are user-clustered 95% CIs, or with fewer than "
       f"{stats.MIN_USERS_FOR_CI} users the range of the user means (\"range\").\n")


def section(data_dir: Path, root: Path) -> str:
    """The summary of one ``<model>/<data>`` folder: per seed, the signal, each ablation design, DPS; then where."""
    runs = reader.finished_runs(data_dir)
    lines = [f"## {data_dir.parent.name} on {data_dir.name}", ""]
    if not runs:
        return "\n".join(lines + ["No finished study here yet.", ""])
    lines += _analysis_note(runs, root)
    for group in dict.fromkeys(p.parent for p in runs):
        mine = [p for p in runs if p.parent == group]
        lines += [f"### {group.name}", ""]
        if group.name != "all_seeds":
            lines += _guarded(_signal_block, group)
        for run in mine:
            if run.name.startswith("ablation_comparison"):
                lines += _guarded(_ablation_block, run)
            elif run.name.startswith("dps_decoding"):
                lines += _guarded(_dps_block, run)
            elif run.name.startswith("seeds_summary"):
                lines += _guarded(_seeds_block, run)
    lines += ["### Tables (.md, .tex, .csv) and plots (.png)", ""]
    lines += [f"- `{run.relative_to(root)}/`: {_contents(run)}" for run in runs]
    paper = root / "paper-generated"
    if paper.is_dir():
        lines.append("- `paper-generated/`: the paper's tables and macros (`python -m studies.paper_tables`)")
    return "\n".join(lines) + "\n"


def _guarded(block, folder: Path) -> list[str]:
    """A block's lines, or one line naming the file it could not read (a summary never fails a finished study)."""
    try:
        return block(folder)
    except (OSError, ValueError, KeyError, IndexError) as e:
        return [f"Could not summarize `{folder.name}`: {type(e).__name__}: {e}", ""]


def _signal_block(seed_dir: Path) -> list[str]:
    source = reader.signal_source(seed_dir)
    if source is None:
        return []
    sig = reader.table(source.parent, "signal")
    lines = [f"**Signal** (`{source.parent.name}/signal.csv`; gain = loss without − with the profile):", ""]
    groups = ["all", "planted"] if "group" in sig else [None]  # a planted corpus: all users, then the planted ones
    for split in ("evaluation", "discovery"):
        for group in groups:
            part = sig[(sig.split == split) & ((sig.group == group) if group else True)]
            if part.empty:
                continue
            shown = ("gain_own", "gain_specific") + (("marker_gain_specific",) if group == "planted" else ())
            gains = [f"{r.gain} {_num(r['mean'])} {_interval(r.ci, r.interval)}" for _, r in part.iterrows()
                     if r.gain in shown]
            who = f"{group} users" if group == "planted" else "users"
            lines.append(f"- {split} ({int(part.n_users.iloc[0])} {who}): " + "; ".join(gains))
    if "group" in sig:
        sig = sig[sig.group == "all"]
    specific = sig[(sig.split == "evaluation") & (sig.gain == "gain_specific")]
    if not specific.empty:
        row = specific.iloc[0]
        low = json.loads(row.ci)[0]
        lines.append("- user-specific signal on evaluation: " + (
            "measured (interval above 0)" if _is_ci(row.interval) and low > 0 else
            "**none measured** (too few users for a CI)" if not _is_ci(row.interval) else
            "**none measured** (CI includes 0): head effects are not evidence about preference"))
    mde = reader.table(seed_dir / "signal", "mde")
    if mde is not None:
        first = mde.iloc[0]
        lines.append(f"- minimal detectable effect at {int(first.n_users)} evaluation users: {_num(first.mde)} nats "
                     f"(`signal/mde.csv` sizes other numbers of users)")
    return lines + [""]


def _ablation_block(run: Path) -> list[str]:
    outcome = reader.first_outcome(run, "comparison_")
    if outcome is None:
        return []
    comp = reader.table(run, f"comparison_{outcome}")
    primary = comp.name.iloc[0]
    summary = reader.table(run, "set_summary")
    own = summary[(summary.outcome == outcome) & (summary["set"] == primary.split("@")[0])] if summary is not None \
        else pd.DataFrame()
    effect = _num(comp.mean_a.iloc[0]) + ("" if own.empty else f" ({_interval(own.ci.iloc[0], own.interval.iloc[0])}"
                                                                f", MDE {_num(own.mde.iloc[0])})")
    rows = [[_set_name(r.baseline), _num(r.mean_b), _num(r.mean_diff), _interval(r.ci, r.interval), _p(r.p_holm),
             _num(r.mde), _verdict(r)] for _, r in comp.iterrows()]
    lines = [f"**Head sets** (`{run.name}/`, exploratory: one split seed): {outcome.replace('_', ' ')} by ablating "
             f"`{primary}` {effect}; "
             f"vs each other set (`comparison_{outcome}.csv`):", ""]
    lines += _table(["vs", "its effect", "difference", "interval", "p (Holm)", "MDE", "verdict"], rows)
    if summary is not None:
        s = summary[summary.outcome == outcome]
        lines += ["", "Each family's percentile in its own layer-matched random null (null p = (1 + #{null ≥ it}) / "
                  "(1 + N), before any correction): " + "; ".join(
            f"{r['set']} {r.null_percentile:.1f} ({_p(r.p_null)})" for _, r in s.iterrows())]
    damage = reader.table(run, "damage_matched")
    if damage is not None and outcome == "specific_gain_lost":
        min_near = analysis.load().min_near_sets
        for _, d in damage.iterrows():
            n = int(d.n_near_damage)
            where = (f"percentile {d.percentile_near_damage:.1f}, p {_p(d.get('p_near_damage', float('nan')))}"
                     if n >= min_near else f"not placed: fewer than {min_near}")
            lines.append(f"Damage-matched (`damage_matched.csv`): `{d['set']}` residual {_num(d.residual)} beyond what "
                         f"its generic damage predicts; {n} random sets within ±25% of its damage ({where}).")
    return lines + [""]


def _verdict(row: pd.Series) -> str:
    """A comparison's verdict (difference, equivalence or "not resolved (MDE x)"); for a table written before the
    TOST, a difference where its Holm p passes alpha and otherwise not resolved (no equivalence was tested)."""
    verdict = row.get("verdict")
    if isinstance(verdict, str) and verdict:
        return verdict
    return "difference" if row.p_holm <= analysis.load().alpha else f"not resolved (MDE {row.mde:.3g})"


def _set_name(name: str) -> str:
    """A comparison table's set name, the matched null spelled out."""
    return re.sub(r"random_matched_mean@(\d+)", r"layer-matched random@\1 (mean)", name)


def _dps_block(run: Path) -> list[str]:
    comp = reader.table(run, "dps_vs_best_baseline")
    if comp is None:
        return []
    comp = comp[(comp.outcome == "rougeL") & ~comp.name.str.contains(r"-g[0-9.]+$")]  # the gamma sweep: its own plot
    best = comp.baseline.iloc[0]
    rows = [[r['name'], _num(r.mean_a), _num(r.mean_diff), _interval(r.ci, r.interval), _p(r.p_holm), _num(r.mde)]
            for _, r in comp.iterrows()]
    lines = [f"**DPS vs the best baseline** `{best}` (chosen on discovery; ROUGE-L {_num(comp.mean_b.iloc[0])}; "
             f"`{run.name}/dps_vs_best_baseline.csv` has METEOR and style too):", ""]
    return lines + _table(["generation", "ROUGE-L", f"− {best}", "interval", "p (Holm)", "MDE"], rows) + [""]


def _seeds_block(run: Path) -> list[str]:
    outcome = reader.first_outcome(run, "comparison_pooled_")
    if outcome is None:
        return []
    comp = reader.table(run, f"comparison_pooled_{outcome}")
    rows = [[_set_name(r.baseline), _num(r.mean_diff),
             _interval(r.ci, r.interval), _p(r.p_holm), _verdict(r)] for _, r in comp.iterrows()]
    lines = [f"**Pooled over seeds** (`{run.name}/comparison_pooled_{outcome}.csv`), `{comp.name.iloc[0]}` vs:", ""]
    lines += _table(["set", "difference", "interval", "p (Holm)", "verdict"], rows)
    o = reader.table(run, "overlap_across_seeds")
    if o is not None:
        o = o[o.k == o.k.max()]
        lines += ["", f"Top-{int(o.k.iloc[0])} overlap across seeds (mean Jaccard): " + "; ".join(
            f"{r.family} {format_number(r.mean_jaccard)}" for _, r in o.iterrows())]
    return lines + [""]


def _contents(run: Path) -> str:
    tables = sorted(p.stem for p in run.glob("*.md"))
    plots = sorted(run.glob("*.png"))
    return f"{len(tables)} tables ({', '.join(tables)}); {len(plots)} plots" if tables else f"{len(plots)} plots"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table whose columns line up in a terminal too."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def _num(x: float) -> str:
    return format_number(float(x))


def _p(x: float) -> str:
    return format_number(float(x), p_value=True)


def _is_ci(label: str) -> bool:
    return label == stats.CI_LABEL


def _interval(ci: str, label: str) -> str:
    """``CI [low, high]`` or ``range [low, high]`` from a table's CSV cell and its label."""
    low, high = json.loads(ci)
    return f"{'CI' if _is_ci(label) else 'range'} [{_num(low)}, {_num(high)}]"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="Rewrite <results>/summary.md from the results files and print it.")
    ap.add_argument("results", nargs="?", default="results")
    root = Path(ap.parse_args(argv).results)
    path = write(root)
    print(path.read_text(), end="")
    return path


if __name__ == "__main__":
    cli(main)
