"""Ablation outcomes from gold losses, and the tables that compare head sets on them.

Conditions are the prompt variants of one example: ``own`` (the user's profile), ``other`` (another user's profile of
equal length) and ``none`` (no profile). For a head set, ``loss_<c>`` is the gold NLL with the set ablated and
``clean_<c>`` without ablation. Sign convention: every outcome is positive when the ablation hurts (raises loss or
removes gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import stats

CONDITIONS = ("own", "other", "none")


@dataclass(frozen=True)
class Outcome:
    name: str
    label: str
    needs: tuple[str, ...]  # conditions it reads
    fn: Callable[[pd.DataFrame], pd.Series]


OUTCOMES: dict[str, Outcome] = {}


def register_outcome(name: str, label: str, needs: Sequence[str]) -> Callable:
    """Register ``fn(frame) -> per-row values`` as outcome ``name`` computed from the ``needs`` conditions."""
    def deco(fn: Callable[[pd.DataFrame], pd.Series]) -> Callable:
        OUTCOMES[name] = Outcome(name, label, tuple(needs), fn)
        return fn
    return deco


@register_outcome("nll_increase", "NLL increase with profile", needs=("own",))
def nll_increase(d: pd.DataFrame) -> pd.Series:
    """L_own,abl − L_own."""
    return d.loss_own - d.clean_own


@register_outcome("gain_lost", "profile gain lost", needs=("own", "none"))
def gain_lost(d: pd.DataFrame) -> pd.Series:
    """(L_none − L_own) − (L_none,abl − L_own,abl): the profile gain the ablation removes."""
    return (d.clean_none - d.clean_own) - (d.loss_none - d.loss_own)


@register_outcome("generic_damage", "NLL increase without profile", needs=("none",))
def generic_damage(d: pd.DataFrame) -> pd.Series:
    """L_none,abl − L_none."""
    return d.loss_none - d.clean_none


@register_outcome("specific_gain_lost", "user-specific gain lost", needs=("own", "other"))
def specific_gain_lost(d: pd.DataFrame) -> pd.Series:
    """(L_own,abl − L_own) − (L_other,abl − L_other): the share of the user-specific gain the heads carry."""
    return (d.loss_own - d.clean_own) - (d.loss_other - d.clean_other)


# the clean gain an outcome removes a share of: (condition it is measured against, the own-profile condition)
SHARE_OF = {"specific_gain_lost": ("other", "own"), "gain_lost": ("none", "own")}


def clean_gain(frame: pd.DataFrame, outcome: str) -> pd.Series | None:
    """Per row, the clean (unablated) gain that ``outcome`` removes a share of: L_other − L_own for the user-specific
    gain, L_none − L_own for the profile gain (``marker_<outcome>``: on the rule's tokens); None for an outcome that is
    no share of a gain or whose clean losses the frame lacks."""
    prefix = "marker_" if outcome.startswith("marker_") else ""
    pair = SHARE_OF.get(outcome.removeprefix(prefix))
    columns = [f"{prefix}clean_{c}" for c in pair] if pair else []
    if not columns or not all(c in frame for c in columns):
        return None
    return frame[columns[0]] - frame[columns[1]]


def measurable(conditions: Sequence[str]) -> list[str]:
    """The outcomes computable from the measured ``conditions``, in registry order."""
    return [name for name, o in OUTCOMES.items() if set(o.needs) <= set(conditions)]


def add_outcomes(frame: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """``frame`` with one column per outcome that its ``loss_<c>`` / ``clean_<c>`` columns allow; where it also has
    ``marker_loss_<c>`` / ``marker_clean_<c>`` (a planted corpus), each outcome again on the rule's tokens alone as
    ``marker_<outcome>`` (NaN on an example that scores no marker token)."""
    out = frame.copy()
    names = measurable(conditions)
    for name in names:
        out[name] = OUTCOMES[name].fn(out)
    if all(f"marker_loss_{c}" in out for c in conditions):
        on_markers = pd.DataFrame({f"{kind}_{c}": out[f"marker_{kind}_{c}"] for kind in ("loss", "clean")
                                   for c in conditions})
        for name in names:
            out[f"marker_{name}"] = OUTCOMES[name].fn(on_markers)
    return out


def pivot(frame: pd.DataFrame, outcome: str, sets: Sequence[str], *, by: str = "set",
          missing: str = "error") -> pd.DataFrame:
    """One row per example (index example_id, column user_id) and one column per named set (values of ``by``).

    Rows are paired by example id; every set must have exactly one value for every example (asserted, never filled).
    ``missing="drop"`` instead leaves out an example where a set's value is NaN (an outcome that is undefined there,
    such as the marker rate of a text with no opportunity for the rule), so only complete pairs are compared.
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing={missing!r}: choose error or drop")
    part = frame[frame[by].isin(sets)]
    dup = part.duplicated(["example_id", by])
    if dup.any():
        first = part[dup].iloc[0]
        raise ValueError(f"{by} {first[by]!r} has two rows for example {first['example_id']!r}")
    wide = part.pivot(index="example_id", columns=by, values=outcome)
    absent = [s for s in sets if s not in wide.columns]
    if absent:
        raise ValueError(f"no rows for head sets {absent}")
    if missing == "drop":
        wide = wide.dropna(subset=list(sets))
    holes = wide[list(sets)].isna()
    if holes.values.any():
        ex, s = holes.stack()[lambda x: x].index[0]
        raise ValueError(f"head set {s!r} has no {outcome} for example {ex!r}: rows cannot be paired")
    users = part.drop_duplicates("example_id").set_index("example_id")["user_id"]
    wide = wide[list(sets)]
    wide.insert(0, "user_id", users.loc[wide.index])
    return wide


def null_means(frame: pd.DataFrame, outcome: str, k: int, matched_to: str) -> np.ndarray:
    """Mean ``outcome`` of each random set matched to ``matched_to`` at ``k`` (the null a named set is placed in)."""
    rows = frame[(frame.k == k) & (frame.family == "random_matched") & (frame.matched_to == matched_to)]
    return rows.groupby("set", sort=True)[outcome].mean().to_numpy()


def compare_sets(frame: pd.DataFrame, outcome: str, k: int, primary: str, baselines: Sequence[str], *,
                 null_of: str, n_boot: int, n_perm: int, seed: int) -> list[stats.Comparison]:
    """``primary@k`` against each baseline family's set at k and the mean of the random sets matched to ``null_of``;
    paired by example, user-clustered, Holm across the table; the null places ``primary@k`` among those random sets."""
    randoms = sorted(frame[(frame.k == k) & (frame.family == "random_matched") & (frame.matched_to == null_of)]["set"]
                     .unique())
    names = [f"{primary}@{k}"] + [f"{b}@{k}" for b in baselines]
    wide = pivot(frame, outcome, names + randoms)
    users, null = wide.user_id.to_numpy(), wide[randoms].mean(axis=0).to_numpy()
    columns = [(f"{b}@{k}", wide[f"{b}@{k}"].to_numpy()) for b in baselines]
    columns.append((f"random_matched_mean@{k}", wide[randoms].mean(axis=1).to_numpy()))
    comps = [stats.descriptive_if_few_users(stats.compare_paired(
        wide[names[0]].to_numpy(), values, name=names[0], baseline=base, outcome=outcome, users=users, n_boot=n_boot,
        n_perm=n_perm, seed=seed, null=null), wide[names[0]].to_numpy() - values, users) for base, values in columns]
    return stats.with_holm(comps)


def comparison_diffs(frame: pd.DataFrame, comps: Sequence[stats.Comparison]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each ``compare_sets`` comparison's per-example differences and their users (the random null: the mean over the
    random sets matched to the compared set's family, per example)."""
    out = []
    for c in comps:
        a = pivot(frame, c.outcome, [c.name])
        if c.baseline.startswith("random_matched_mean@"):
            k = int(c.baseline.split("@")[1])
            of = frame[(frame["set"] == c.name)].family.iloc[0]
            rand = frame[(frame.k == k) & (frame.family == "random_matched") & (frame.matched_to == of)]
            b = rand.groupby("example_id")[c.outcome].mean().loc[a.index]
        else:
            b = pivot(frame, c.outcome, [c.baseline])[c.baseline].loc[a.index]
        out.append((a[c.name].to_numpy() - b.to_numpy(), a.user_id.to_numpy()))
    return out


def comparison_mdes(frame: pd.DataFrame, comps: Sequence[stats.Comparison]) -> list[float]:
    """Each comparison's minimal detectable difference (80% power, alpha .05 after Holm over the table), from the
    spread of its own per-user differences."""
    return [stats.mde_of_pairs(d, u, n_tests=len(comps)) for d, u in comparison_diffs(frame, comps)]


def comparison_equivalence(frame: pd.DataFrame, comps: Sequence[stats.Comparison], *, margin: float,
                           alpha: float = 0.05) -> list[stats.Equivalence]:
    """Each comparison's verdict: a difference (its Holm p), an equivalence within ±``margin`` (TOST on the per-user
    mean differences), or "not resolved (MDE x)"; ``margin`` NaN: no equivalence can be shown."""
    return [stats.tost(d, users=u, margin=margin, alpha=alpha, n_tests=len(comps), p_difference=c.p_holm)
            for c, (d, u) in zip(comps, comparison_diffs(frame, comps))]


def equivalence_margin(frame: pd.DataFrame, share: float) -> float:
    """The declared TOST margin in nats: ``share`` of the clean user-specific gain (other − own) averaged over the
    frame's examples; NaN where the ``other`` condition was not measured or the gain is not above 0."""
    gain = clean_gain(frame.drop_duplicates("example_id"), "specific_gain_lost")
    return float(share * gain.mean()) if gain is not None and gain.mean() > 0 else float("nan")


def set_summary(frame: pd.DataFrame, outcome: str, k: int, families: Sequence[str], *, null_of: str | None = None,
                n_boot: int, seed: int) -> list[dict]:
    """Per named family at ``k``: mean effect, user-clustered CI, d_z, Wilcoxon p vs 0, the minimal detectable
    effect vs 0 (80% power, Holm over the families), the share of the clean gain it removes (``share_of_gain``), and
    the position of its mean in the null of random sets matched to ``null_of`` (default: to the family's own set,
    where the study drew one; recorded in the row)."""
    wide = pivot(frame, outcome, [f"{f}@{k}" for f in families])
    users = wide.user_id.to_numpy()
    out = []
    for fam in families:
        of = null_of or (fam if null_means(frame, outcome, k, fam).size else families[0])
        null = null_means(frame, outcome, k, of)
        v = wide[f"{fam}@{k}"].to_numpy()
        pct, p_null = stats.null_position(float(v.mean()), null) if null.size else (float("nan"), float("nan"))
        effect = _effect(v, users, n_tests=len(families), n_boot=n_boot, seed=seed)
        interval = effect.pop("interval")  # the label goes last, as the tables list it
        out.append({"set": fam, "k": k, "outcome": outcome, **effect,
                    **share_of_gain(frame, outcome, wide.index, v, users, n_boot=n_boot, seed=seed),
                    "null_percentile": pct, "p_null": p_null, "null_matched_to": f"{of}@{k}", "interval": interval})
    return out


def share_of_gain(frame: pd.DataFrame, outcome: str, example_ids: Sequence[str], v: np.ndarray, users: np.ndarray,
                  *, n_boot: int, seed: int) -> dict:
    """``share``: mean(v) / mean(clean gain) over ``example_ids`` (v: a set's ``outcome`` on them), the share of the
    gain the set removes, and ``share_ci``, its ratio CI from the same user-clustered bootstrap (users resampled, ratio
    of the means); NaN for an outcome that is no share of a gain, a gain not above 0, or fewer than
    ``stats.MIN_USERS_FOR_CI`` users."""
    nan = float("nan")
    gains = clean_gain(frame, outcome)
    if gains is None:
        return {"share": nan, "share_ci": (nan, nan)}
    g = gains.groupby(frame.example_id).first().loc[list(example_ids)].to_numpy()
    if not g.mean() > 0:
        return {"share": nan, "share_ci": (nan, nan)}
    few = pd.Series(users).nunique() < stats.MIN_USERS_FOR_CI
    ci = (nan, nan) if few else stats.bootstrap_ratio_ci(v, g, clusters=users, n_boot=n_boot, seed=seed)
    return {"share": float(v.mean() / g.mean()), "share_ci": ci}


def _effect(v: np.ndarray, users: np.ndarray, *, n_tests: int, n_boot: int, seed: int) -> dict:
    """One set's per-example effects summarized: mean, user-clustered CI (with fewer than ``MIN_USERS_FOR_CI`` users
    the range of the user means, labelled so), d_z, Wilcoxon p vs 0 and the MDE (80%, Holm over ``n_tests``)."""
    user_means = pd.Series(v).groupby(users).mean()
    few = user_means.size < stats.MIN_USERS_FOR_CI
    lo, hi = (float(user_means.min()), float(user_means.max())) if few else \
        stats.bootstrap_ci(v, clusters=users, n_boot=n_boot, seed=seed)
    return {"mean": float(v.mean()), "ci": (lo, hi), "d_z": stats.cohens_dz(v),
            "p_wilcoxon": stats.wilcoxon_p(v, clusters=users), "mde": stats.mde_of_pairs(v, users, n_tests=n_tests),
            "interval": stats.RANGE_LABEL if few else stats.CI_LABEL}


def matched_null_summary(frame: pd.DataFrame, outcome: str, k: int, families: Sequence[str], *, n_boot: int,
                         seed: int) -> list[dict]:
    """Per named family at ``k`` that has a layer-matched random null: the null's own effect, as ``set_summary``
    gives a named set's (the per-example mean over its random sets; user-clustered CI, Wilcoxon p vs 0, MDE), in a
    row whose set is ``random:<family>``: what ablating that many heads on those layers does by itself."""
    out = []
    for fam in families:
        rand = frame[(frame.k == k) & (frame.family == "random_matched") & (frame.matched_to == fam)]
        if rand.empty:
            continue
        per_example = rand.groupby(["example_id", "user_id"], sort=True)[outcome].mean().reset_index()
        v, users = per_example[outcome].to_numpy(), per_example.user_id.to_numpy()
        effect = _effect(v, users, n_tests=len(families), n_boot=n_boot, seed=seed)
        interval = effect.pop("interval")
        out.append({"set": f"random:{fam}", "k": k, "outcome": outcome, **effect,
                    **share_of_gain(frame, outcome, per_example.example_id, v, users, n_boot=n_boot, seed=seed),
                    "null_percentile": float("nan"),
                    "p_null": float("nan"), "null_matched_to": f"{fam}@{k}",
                    "n_random_sets": int(rand["set"].nunique()), "interval": interval})
    return out


MIN_NEAR_SETS = 20  # random sets of similar damage a residual needs to be placed among them (analysis.toml)


def damage_matched(frame: pd.DataFrame, families: Sequence[str], k: int, *, outcome: str = "specific_gain_lost",
                   damage: str = "generic_damage", window: float = 0.25,
                   min_near: int = MIN_NEAR_SETS) -> tuple[list[dict], pd.DataFrame]:
    """Does a named set remove more of ``outcome`` than its ``damage`` predicts? Over the ``random_damage`` sets (mean
    per set over examples), fit ``outcome ~ a + b * damage`` by least squares; per named family at ``k``: its
    residual, how many random sets lie within ``±window`` of its damage, and its percentile and null p among them;
    with fewer than ``min_near`` such sets it is "not placed" (NaN): a percentile of 2-7 sets says nothing.

    Returns the rows and the random sets' cloud (set, damage, outcome) for the plot."""
    means = frame.groupby(["set", "family"], sort=True)[[damage, outcome]].mean().reset_index()
    cloud = means[means.family == "random_damage"]
    if len(cloud) < 3:
        raise ValueError(f"the damage-matched null needs random_damage sets, got {len(cloud)}")
    b, a = np.polyfit(cloud[damage], cloud[outcome], 1)
    rows = []
    for fam in families:
        named = means[means["set"] == f"{fam}@{k}"].iloc[0]
        d, y = float(named[damage]), float(named[outcome])
        near = cloud[(cloud[damage] - d).abs() <= window * abs(d)] if d else cloud.iloc[0:0]
        placed = len(near) >= min_near
        pct, p = stats.null_position(y, near[outcome].to_numpy()) if placed else (float("nan"), float("nan"))
        rows.append({"set": fam, "k": k, "outcome": outcome, "mean": y, "damage": d, "predicted": a + b * d,
                     "residual": y - (a + b * d), "n_near_damage": int(len(near)), "percentile_near_damage": pct,
                     "p_near_damage": p, "near_damage": near_damage_label(len(near), min_near),
                     "slope": float(b), "intercept": float(a), "n_random": int(len(cloud))})
    return rows, cloud


def near_damage_label(n_near: int, min_near: int = MIN_NEAR_SETS) -> str:
    """Whether a damage-matched residual is placed among its ``n_near`` random sets of similar damage, and why not."""
    return "placed" if n_near >= min_near else f"not placed ({n_near} < {min_near} sets of similar damage)"


def mdes_to_one(frame: pd.DataFrame, by: str, comps: Sequence[stats.Comparison], *,
                missing: str = "error") -> list[float]:
    """The minimal detectable difference of each ``compare_to_one`` comparison (Holm over the table)."""
    out = []
    for c in comps:
        wide = pivot(frame, c.outcome, [c.name, c.baseline], by=by, missing=missing)
        out.append(stats.mde_of_pairs((wide[c.name] - wide[c.baseline]).to_numpy(), wide.user_id.to_numpy(),
                                      n_tests=len(comps)))
    return out


def clustered_means(frame: pd.DataFrame, by: str, values: Sequence[str], *, n_boot: int, seed: int,
                    order: Sequence[str] | None = None) -> list[dict]:
    """Per group of ``by`` (sorted, or in ``order``): the mean of each of ``values`` and its user-clustered bootstrap
    CI (key ``<value>_ci``; with fewer than ``stats.MIN_USERS_FOR_CI`` users the range of the user means, and
    ``interval`` says which)."""
    rows = []
    for name in order if order is not None else sorted(frame[by].unique()):
        grp = frame[frame[by] == name]
        few = grp.user_id.nunique() < stats.MIN_USERS_FOR_CI
        row = {by: name, "interval": stats.RANGE_LABEL if few else stats.CI_LABEL}
        for v in values:
            row[v] = float(grp[v].mean())
            user_means = grp.groupby("user_id")[v].mean()
            row[f"{v}_ci"] = (float(user_means.min()), float(user_means.max())) if few else stats.bootstrap_ci(
                grp[v].to_numpy(), clusters=grp.user_id.to_numpy(), n_boot=n_boot, seed=seed)
        rows.append(row)
    return rows


def compare_to_one(frame: pd.DataFrame, by: str, names: Sequence[str], baseline: str | Sequence[str],
                   values: Sequence[str], *, n_boot: int, n_perm: int, seed: int,
                   missing: str = "error") -> list[stats.Comparison]:
    """Each of ``names`` against ``baseline`` (values of ``by``; a list: against each of them) on every one of
    ``values``: paired by example (``missing``: see ``pivot``; a pair left with fewer than 2 examples is no
    comparison and no row), user-clustered, Holm across the whole table."""
    comps = []
    baselines = [baseline] if isinstance(baseline, str) else list(baseline)
    for name, base, v in ((n, b, v) for n in names for b in baselines for v in values):
        wide = pivot(frame, v, [name, base], by=by, missing=missing)
        if len(wide) < 2:
            continue
        a, b, users = wide[name].to_numpy(), wide[base].to_numpy(), wide.user_id.to_numpy()
        comps.append(stats.descriptive_if_few_users(stats.compare_paired(
            a, b, name=name, baseline=base, outcome=v, users=users, n_boot=n_boot, n_perm=n_perm, seed=seed),
            a - b, users))
    return stats.with_holm(comps)


PAIRED_COLUMNS = [("name", "head set"), ("baseline", "vs"), ("mean_a", "mean"), ("mean_b", "baseline mean"),
                  ("mean_diff", "diff"), ("ci", "interval"), ("interval", "interval is"), ("d_z", "d_z"),
                  ("p_wilcoxon", "p (Wilcoxon)"), ("p_permutation", "p (perm.)"), ("p_holm", "p_Holm"),
                  ("mde", "MDE (80%, Holm)")]  # any paired comparison (DPS's too)
COMPARISON_COLUMNS = PAIRED_COLUMNS + [("null_percentile", "null pct."), ("p_null", "p (null)"),
                                       ("margin", "equivalence margin"), ("p_tost", "p (TOST)"),
                                       ("verdict", "verdict")]  # a head set's: its null position, its TOST
SUMMARY_COLUMNS = [("set", "head set"), ("outcome", "outcome"), ("mean", "mean effect"), ("ci", "interval"),
                   ("interval", "interval is"),
                   ("d_z", "d_z"), ("p_wilcoxon", "p (Wilcoxon, vs 0)"), ("mde", "MDE (80%, Holm)"),
                   ("share", "share of the gain"), ("share_ci", "share interval"),
                   ("null_percentile", "null pct."), ("p_null", "p (null)"), ("null_matched_to", "null matched to")]
DAMAGE_COLUMNS = [("set", "head set"), ("mean", "specific gain lost"), ("damage", "generic damage"),
                  ("predicted", "predicted from damage"), ("residual", "residual"),
                  ("n_near_damage", "sets of ±25% damage"), ("percentile_near_damage", "pct. among them"),
                  ("p_near_damage", "p (among them)"), ("near_damage", "residual placed")]


def comparison_records(comps: Sequence[stats.Comparison], mdes: Sequence[float] | None = None,
                       equivalence: Sequence[stats.Equivalence] | None = None) -> list[dict]:
    """Table rows of comparisons (the CI as one pair; the MDE, the TOST margin, p and verdict where given)."""
    mdes = list(mdes) if mdes is not None else [float("nan")] * len(comps)
    eqs = list(equivalence) if equivalence is not None else [None] * len(comps)
    return [{**c.to_dict(), "ci": (c.ci_low, c.ci_high), "interval": c.seeds.get("interval", stats.CI_LABEL), "mde": m,
             "margin": e.margin if e else float("nan"), "p_tost": e.p_tost if e else float("nan"),
             "verdict": e.verdict if e else None} for c, m, e in zip(comps, mdes, eqs)]
