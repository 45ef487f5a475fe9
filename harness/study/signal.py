"""The personalization signal, measured before any head claim: how much the user's own profile lowers the gold loss.

    gain_own      = L_none  − L_own     (the profile helps)
    gain_other    = L_none  − L_other   (any user's profile of the same length helps)
    gain_specific = L_other − L_own     (this user's profile helps more than another's: the user-specific gain)

With ``--same-doc`` (where a corpus tags documents), on the examples whose own document fills a profile block of the
same length: ``gain_same_doc`` = L_none − L_same_doc and ``same_doc_advantage`` = L_own − L_same_doc, how much more
the example's own document lowers the loss than the user's other documents (the same-document confound).

Each is averaged per user, with a user-clustered 95% CI, on the discovery and on the evaluation split. A head set can
only carry a user-specific preference where ``gain_specific`` is measurably above 0; where its CI includes 0 every
table of the study says so (``NO_SIGNAL``).

On a planted corpus (``planted:<data>:<family>``) the gains are also given for planted and control users apart
(``group``), and as *marker-token* gains (``marker_gain_*``): the same differences of the NLL restricted to the gold
tokens the planted rule changed (for controls, would change), the sharper outcome of a known answer.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from ..analysis import stats
from .config import PROMPT_FIELDS
from ..analysis.metrics import gold_marker_mask, marker_nll
from ..intervene.pcs import token_nlls

log = logging.getLogger("harness")

GAINS = {"gain_own": ("none", "own"), "gain_other": ("none", "other"), "gain_specific": ("other", "own"),
         # with --same-doc, on the examples whose own document fills a profile block: what that document gives, and
         # how much more than the user's other documents (the same-document confound of a one-document user)
         "gain_same_doc": ("none", "same_doc"), "same_doc_advantage": ("own", "same_doc")}
NO_SIGNAL = ("no measured user-specific signal (gain_specific's CI includes 0): head effects below are not evidence "
             "about preference")


# the settings a clean loss depends on: the draw, the split, the prompt (with the framing auto resolves to, itself
# chosen from generations that depend on min_new_tokens) and the scored gold tokens; not the study or its design
CLEAN_LOSS_FIELDS = (*PROMPT_FIELDS, "max_target_tokens", "framing", "min_new_tokens")


def clean_losses(setup: Any, run: Any, conditions: Sequence[str]) -> pd.DataFrame:
    """Unablated gold loss of every example (discovery and evaluation) in every condition, checkpointed with its
    per-token NLLs; one row per example with ``split``, ``user_id`` and ``loss_<condition>`` columns, and on a planted
    corpus ``group`` (planted / control), ``rule`` and ``marker_<condition>`` (NLL of the rule's tokens; NaN where
    none is scored)."""
    ck = run.checkpoint("clean_losses")
    run.adopt("clean_losses", CLEAN_LOSS_FIELDS)  # a sibling study of the same seed that measured them lends its rows
    sides = [("discovery", e) for e in setup.split.discovery] + [("evaluation", e) for e in setup.split.evaluation]
    measured = lambda e, c: setup.prompts[e.example_id].has(c)  # same_doc exists where the document fills a block
    todo = [(e, c) for _, e in sides for c in conditions
            if measured(e, c) and "tokens" not in ck.records.get(f"{e.example_id}|{c}", {})]
    for ex, cond in tqdm(todo, desc="signal (clean losses)", disable=not todo):
        nll = setup.call(token_nlls, setup.model, setup.tokenized(ex.example_id, cond), backend=setup.backend,
                         what=f"clean loss of {ex.example_id} ({cond})")
        ck.add(f"{ex.example_id}|{cond}", loss=float(nll.mean()), tokens=nll.tolist())
    rows = []
    for side, e in sides:
        recs = {c: ck.get(f"{e.example_id}|{c}") for c in conditions if measured(e, c)}
        row = {"split": side, "example_id": e.example_id, "user_id": e.user_id,
               **{f"loss_{c}": recs[c]["loss"] if c in recs else float("nan") for c in conditions}}
        if e.planted is not None:
            mask = gold_marker_mask(setup.tokenizer, e, setup.prompts[e.example_id].target,
                                    max_target_tokens=setup.max_target_tokens)
            row |= {"group": "control" if e.planted.control else "planted", "rule": e.planted.rule.label}
            for c, r in recs.items():
                value = marker_nll(torch.tensor(r["tokens"]), mask)
                row[f"marker_{c}"] = float("nan") if value is None else float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def signal_rows(losses: pd.DataFrame, *, n_boot: int, seed: int) -> list[dict]:
    """One row per (split, gain) that the measured conditions allow: mean over examples, user-clustered CI (or, with
    fewer than ``MIN_USERS_FOR_CI`` users, the range of the user means, marked descriptive), share of users > 0.

    On a planted corpus (a ``group`` column) the rows cover all users (``group`` "all"), then planted and control
    users apart, each with the marker-token gains over the examples that score a marker token."""
    rows = []
    groups = [("all", losses)]
    if "group" in losses:
        groups += [(g, losses[losses.group == g]) for g in ("planted", "control")]
    for group, frame in groups:
        for row in _gain_rows(frame, n_boot=n_boot, seed=seed):
            rows.append({"group": group, **row} if "group" in losses else row)
    return rows


def _gain_rows(losses: pd.DataFrame, *, n_boot: int, seed: int) -> list[dict]:
    """``signal_rows`` of one group of users."""
    rows = []
    gains = [(gain, f"loss_{a}", f"loss_{b}") for gain, (a, b) in GAINS.items()]
    gains += [(f"marker_{gain}", f"marker_{a}", f"marker_{b}") for gain, (a, b) in GAINS.items()]
    for side, part in losses.groupby("split", sort=False):
        for gain, a, b in gains:
            if a not in part or b not in part:
                continue
            scored = part[part[a].notna() & part[b].notna()]
            if scored.empty:
                continue
            users = scored.user_id.to_numpy()
            values = (scored[a] - scored[b]).to_numpy()
            per_user = pd.Series(values).groupby(users).mean()
            descriptive = per_user.size < stats.MIN_USERS_FOR_CI
            lo, hi = ((float(per_user.min()), float(per_user.max())) if descriptive else
                      stats.bootstrap_ci(values, clusters=users, n_boot=n_boot, seed=seed))
            rows.append({"split": side, "gain": gain, "mean": float(values.mean()), "ci": (lo, hi),
                         "interval": stats.RANGE_LABEL if descriptive else stats.CI_LABEL,
                         "n_examples": int(values.size), "n_users": int(per_user.size),
                         "users_positive": float((per_user > 0).mean()), "sd_user": float(per_user.std(ddof=1))
                         if per_user.size > 1 else float("nan")})
    return rows


COLUMNS = [("split", "split"), ("gain", "gain"), ("mean", "mean"), ("ci", "interval"), ("interval", "interval is"),
           ("n_examples", "examples"), ("n_users", "users"), ("users_positive", "share of users > 0")]


def columns(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """The signal table's columns: ``COLUMNS``, led by the user group on a planted corpus."""
    return ([("group", "users")] if any("group" in r for r in rows) else []) + COLUMNS


def has_signal(rows: Sequence[dict], split: str = "evaluation") -> bool | None:
    """Whether ``gain_specific``'s interval on ``split`` lies above 0 (None when it was not measured or is only
    descriptive)."""
    row = next((r for r in rows if r["split"] == split and r["gain"] == "gain_specific"), None)
    if row is None or "descriptive" in row["interval"]:
        return None
    return bool(row["ci"][0] > 0)


def signal_note(rows: Sequence[dict]) -> str:
    """The warning every table of the study carries when the user-specific signal is not measured above 0."""
    measured = has_signal(rows)
    if measured is None:
        return ("no measured user-specific signal (too few evaluation users for an interval): head effects below "
                "are not evidence about preference")
    return "" if measured else NO_SIGNAL


def summary_line(rows: Sequence[dict]) -> str:
    """One printable line per split: the three gains with their intervals."""
    out = []
    rows = [r for r in rows if r.get("group", "all") == "all"]  # planted corpora: all users here, groups in the table
    for side in dict.fromkeys(r["split"] for r in rows):
        parts = [f"{r['gain']} {r['mean']:+.3f} {'range' if 'descriptive' in r['interval'] else 'CI'} "
                 f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" for r in rows if r["split"] == side]
        n_users = next(r["n_users"] for r in rows if r["split"] == side)
        out.append(f"signal on {side} ({n_users} users): " + "; ".join(parts))
    return "\n".join(out)


def prior_mde(rows: Sequence[dict], n_users: int, *, n_tests: int) -> dict:
    """The minimal detectable effect (80% power, alpha .05 after Holm over ``n_tests``) at ``n_users`` evaluation
    users, from the discovery users' spread of the user-specific gain (of the profile gain when no other-user
    variant was measured): the scale a head set's specific gain lost is measured on."""
    gain = "gain_specific" if any(r["gain"] == "gain_specific" for r in rows) else "gain_own"
    row = next(r for r in rows if r["split"] == "discovery" and r["gain"] == gain)
    value = stats.mde(row["sd_user"], n_users, n_tests=n_tests)
    return {"mde": value, "from": f"discovery SD of per-user {gain}", "sd_user": row["sd_user"], "n_users": n_users,
            "n_tests": n_tests, "discovery_gain": row["mean"], "share_of_gain": value / row["mean"] if row["mean"]
            else float("nan")}
