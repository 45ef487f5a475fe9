"""``--plan``: the work a study would do, counted before anything is spent, and how long it would take.

    python -m studies.ablation_comparison --preset full --model meta-llama/Llama-3.1-70B --remote ndif --plan

Nothing is sent to NDIF, no hosted weights are loaded and nothing is written. The plan draws the run's examples and
split, then counts, per unit of work, the remote requests (one per ``model.session`` or lone trace), forwards,
backwards and token positions (rows x sequence). A local model's prompts are built with its tokenizer, and one
calibration forward is timed. A hosted model (``harness.models.registry.HOSTED``) has no tokenizer offline: every input counts
as its budget (``--max-prompt-tokens`` + ``--max-target-tokens``), and the time is a roofline projection. Each unit
mirrors the library function named in its docstring; ``tests/test_plan.py`` checks the request counts against a
``--remote local`` run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..models.arch import ModelShape, shape_of
from ..intervene.heads import all_heads
from .config import PRESETS, PROMPT_FIELDS
from ..errors import ConfigError
from ..generation.decoding import DELTA_TOKENS, GENERATE_BATCH
from ..generation.steering import STYLE_ITEMS
from ..scorers.induction import INDUCTION_BATCH, INDUCTION_LEN
from ..scorers.retrieval import NEEDLE_LENGTHS as RETRIEVAL_LENGTHS, RETRIEVAL_TOKENS
from .experiment import FRAMING_TOKENS
from ..runs.provenance import config_diff


# The hosted projection's accelerator: one A100-80GB's bf16 peak and memory bandwidth (NVIDIA's datasheet). A
# forward reads every weight once and does 2 FLOPs per parameter per token; a backward twice that. Peak rates, so
# the projection is a lower bound; NDIF's queueing and transfer are not in it.
PROJECTION = {"accelerator": "one A100-80GB", "flops": 312e12, "bandwidth": 2.0e12, "bytes_per_param": 2}


@dataclass(frozen=True)
class Work:
    """One unit of a study's work: what it is and what it costs."""

    what: str
    requests: int = 0  # remote requests a --remote run sends (one per session or lone trace)
    forwards: int = 0
    backwards: int = 0
    tokens: int = 0  # token positions run forward: rows x sequence, summed
    grad_tokens: int = 0  # of those, the ones a backward runs over too
    local_only: bool = False  # runs on this machine even with --remote (eager-attention scorers)
    skipped: float = 0.0  # of ``tokens``, the share of blocks prefix reuse skips, in token positions (a 30-layer
    # forward that skips its lower 15 blocks counts half its positions here)

    def __add__(self, other: "Work") -> "Work":
        return dataclasses.replace(self, **{f: getattr(self, f) + getattr(other, f) for f in _COUNTS})


_COUNTS = ("requests", "forwards", "backwards", "tokens", "grad_tokens", "skipped")


def total(work: Sequence[Work], what: str = "total") -> Work:
    return sum(work, Work(what))


# ---------------------------------------------------------------------------------------------- cost of one call


def scoring(n_tokens: int, n_target: int, firsts: Sequence[int], batch_size: int, positions: str,
            n_layers: int) -> Work:
    """Forwards, token positions and prefix-skipped positions of one ``pcs.ablated_losses`` call on an input of
    ``n_tokens`` ending in ``n_target`` gold tokens, over sets whose lowest ablated layers are ``firsts``: with target
    positions the prompt runs once and the clean run and each batch of sets run over the gold tokens only; otherwise
    the clean run and every batch run the whole input. As there, sets are sorted by their lowest layer and each batch
    of ``batch_size`` skips the blocks below its first set's lowest layer (fed their clean outputs)."""
    firsts = sorted(min(f, n_layers) for f in firsts)
    start = n_tokens - n_target - 1
    cached = positions == "target" and start > 0
    seq = n_target if cached else n_tokens
    batches = [firsts[i:i + batch_size] for i in range(0, len(firsts), batch_size)]
    skipped = sum(len(b) * seq * b[0] / n_layers for b in batches)
    forwards = 1 + len(batches) + (1 if cached else 0)
    tokens = (start if cached else 0) + seq * (1 + len(firsts))
    return Work("", 0, forwards, 0, tokens, skipped=skipped)


def decoding(prompt_tokens: Sequence[int], batch_size: int, new_tokens: int, *, branches: int = 1,
             shared_prompt: bool = False, what: str = "") -> Work:
    """Requests, forwards and token positions of ``decoding.decode`` (or one batched ``generate``) over prompts of
    these lengths: one session per batch, left-padded to its longest prompt, one forward per new token; two-branch
    methods (CAD, DPS) run 2 rows per prompt; ``shared_prompt`` (prompt-once DPS) runs the prompt but its last token
    once for both branches."""
    requests = forwards = tokens = 0
    for start in range(0, len(prompt_tokens), batch_size):
        chunk = prompt_tokens[start:start + batch_size]
        n, longest, rows = len(chunk), max(chunk), branches * len(chunk)
        requests += 1
        if shared_prompt:
            forwards += 1 + new_tokens
            tokens += n * (longest - 1) + rows * new_tokens
        else:
            forwards += new_tokens
            tokens += rows * longest + rows * (new_tokens - 1)
    return Work(what, requests, forwards, 0, tokens)


# ---------------------------------------------------------------------------------------------- what is counted


@dataclass
class Inputs:
    """What the counts are computed from: the config, the model's shape, the drawn examples and their token counts."""

    cfg: Any
    shape: ModelShape
    n_params: int
    hosted: bool  # no tokenizer or weights here: every input counts as its budget
    split: Any
    examples: list
    families: list[str]
    setup: Any = None  # a local model: the harness.study.experiment.Setup holding it and every prompt
    memo: dict = field(default_factory=dict)  # what several units read: generation prompts, the head sets

    def lengths(self, example_id: str, condition: str) -> tuple[int, int]:
        """(prompt tokens, gold tokens) of the scored input of ``example_id`` in ``condition``."""
        if self.hosted:
            return self.cfg.max_prompt_tokens, self.cfg.max_target_tokens
        item = self.setup.tokenized(example_id, condition)
        return item.n_prompt, item.n_target

    def generation_tokens(self, kind: str, examples: Sequence[Any]) -> list[int]:
        """Prompt tokens per example of generation method ``kind`` (``harness.generation.methods.build_prompts``); CAD's are
        the longer of its two prompts, as both are padded together."""
        if self.hosted:
            return [self.cfg.max_prompt_tokens] * len(examples)
        from ..generation.methods import Generation, build_prompts

        source = "profile" if kind == "profile" else "rag"
        key = (source, tuple(e.example_id for e in examples))
        if key not in self.memo:
            spec = Generation("profile") if source == "profile" else Generation.rag(k_profile=self.cfg.k_profile)
            self.memo[key] = build_prompts(
                spec, examples, self.setup.tokenizer, max_prompt_tokens=self.cfg.max_prompt_tokens,
                chat=self.setup.chat, framing=self.setup.framing)
        count = self.count
        return [{"no_profile": count(p.without_profile), "stylevector": count(p.without_profile),
                 "cad": max(count(p.with_profile), count(p.without_profile))}.get(kind, count(p.with_profile))
                for p in self.memo[key]]

    def count(self, text: str) -> int:
        """Tokens of ``text`` (a hosted model: its prompt budget)."""
        if self.hosted:
            return self.cfg.max_prompt_tokens
        return len(self.setup.tokenizer(text, add_special_tokens=False)["input_ids"])


UNITS: dict[str, Callable[[Inputs], list[Work]]] = {}
START = ("framing", "mean_reference", "clean_losses")  # what lifecycle.start does before a study's own work


def unit(name: str) -> Callable:
    """Register ``fn(inputs) -> [Work]`` as the counter of unit ``name`` (a study config's ``work`` names it)."""
    def deco(fn: Callable[[Inputs], list[Work]]) -> Callable:
        UNITS[name] = fn
        return fn
    return deco


def loans(x: Inputs) -> dict[str, Any]:
    """What sibling runs of the same seed would lend a local run (``Run.artifact``, ``Run.adopt``): ``framing`` and
    ``mean_reference`` (the lending folder) and ``clean_losses`` (key -> lending folder); a remote run borrows
    nothing."""
    from .experiment import framing_depends, reference_depends
    from ..models.remote import runs_here
    from ..runs.folder import sibling_artifact, sibling_folders, sibling_rows
    from ..runs.files import slug
    from .signal import CLEAN_LOSS_FIELDS

    if "loans" in x.memo:
        return x.memo["loans"]
    cfg, out = x.cfg, {}
    if runs_here(cfg.remote):
        siblings = sibling_folders(Path(cfg.results) / slug(cfg.model) / slug(cfg.data) / cfg.folder())
        framing = cfg.framing
        lent = sibling_artifact(siblings, "framing_choice", framing_depends(cfg)) if framing == "auto" else None
        if lent is not None:
            out["framing"], framing = lent.parent.parent.name, json.loads(lent.read_text())["value"]["chosen"]
        lent = sibling_artifact(siblings, "mean_reference",
                                reference_depends(cfg, "prefill" if framing == "auto" else framing))
        if lent is not None:
            out["mean_reference"] = lent.parent.parent.name
        need = {f"{e.example_id}|{c}" for e in x.split.discovery + x.split.evaluation for c in cfg.conditions}
        rows = sibling_rows(siblings, "clean_losses", cfg.numbers_config(), CLEAN_LOSS_FIELDS)
        out["clean_losses"] = {k: lender for k, (_, lender) in rows.items() if k in need}
    x.memo["loans"] = out
    return out


@unit("framing")
def _framing(x: Inputs) -> list[Work]:
    """experiment.choose_framing: greedy no-profile generations of the discovery examples under each framing (none
    when a sibling run lends its choice)."""
    from ..data.prompts import FRAMINGS

    if x.cfg.framing != "auto" or "framing" in loans(x):
        return []
    lens = [x.lengths(e.example_id, "none")[0] for e in x.split.discovery]
    n, once = len(FRAMINGS), decoding(lens, GENERATE_BATCH, FRAMING_TOKENS)
    return [total([once] * n, f"framing choice: {n} framings x {len(lens)} discovery generations")]


@unit("mean_reference")
def _mean_reference(x: Inputs) -> list[Work]:
    """experiment.mean_reference -> ablation.head_means: one session over the discovery own-profile inputs."""
    if x.cfg.mode != "mean" or "mean_reference" in loans(x):
        return []
    lens = [sum(x.lengths(e.example_id, "own")) for e in x.split.discovery]
    return [Work(f"mean reference: {len(lens)} discovery inputs", 1, len(lens), 0, sum(lens))]


@unit("clean_losses")
def _clean_losses(x: Inputs) -> list[Work]:
    """signal.clean_losses: one clean ablated_losses call (all positions) per example and prompt variant that no
    sibling run lends."""
    lent = loans(x).get("clean_losses", {})
    items = [(e.example_id, c) for e in x.split.discovery + x.split.evaluation for c in x.cfg.conditions
             if f"{e.example_id}|{c}" not in lent]
    if not items:
        return []
    tokens = sum(sum(x.lengths(i, c)) for i, c in items)
    what = (f"signal: clean losses, {len(items) // len(x.cfg.conditions)} examples x {len(x.cfg.conditions)} "
            "variants" if not lent else f"signal: clean losses, {len(items)} (example, variant) pairs not lent")
    return [Work(what, len(items), len(items), 0, tokens)]


def _pcs(x: Inputs, items: Sequence[tuple[str, str]], estimator: str, what: str) -> Work:
    """ranking.discovery_effects / exact_check: per (example, variant) one request; attribution is 1 forward + 1
    backward (pcs.head_attributions), exact one ablated_losses call with one head per row, a layer per batch."""
    work = Work(what, requests=len(items))
    for example_id, cond in items:
        prompt, gold = x.lengths(example_id, cond)
        if estimator == "attribution":
            work += Work(what, 0, 1, 1, prompt + gold, prompt + gold)
        else:
            work += scoring(prompt + gold, gold, [h.layer for h in all_heads(x.shape)], x.shape.n_heads,
                            x.cfg.positions, x.shape.n_layers)
    return work


@unit("head_scores")
def _head_scores(x: Inputs) -> list[Work]:
    """ranking.rank_heads: the discovery effects every per-example family reads, and the baseline scorers, which run
    on an eager-attention copy of the model on this machine."""
    from ..scorers.ranking import head_scorer

    cfg, out = x.cfg, []
    if any(head_scorer(f).uses_discovery for f in cfg.families):
        items = [(e.example_id, c) for e in x.split.discovery for c in cfg.conditions]
        out.append(_pcs(x, items, cfg.estimator, f"PCS {cfg.estimator}: {len(x.split.discovery)} discovery x "
                                                 f"{len(cfg.conditions)} variants"))
    if "retrieval" in cfg.families:
        lens = [RETRIEVAL_LENGTHS[i % len(RETRIEVAL_LENGTHS)] for i in range(cfg.retrieval_prompts)]
        w = decoding(lens, 1, RETRIEVAL_TOKENS)
        out.append(dataclasses.replace(w, what=f"retrieval scores: {len(lens)} needle prompts (eager, local)",
                                       requests=0, local_only=True))
    if "induction" in cfg.families:
        n = cfg.induction_sequences
        out.append(Work(f"induction scores: {n} sequences (eager, local)", 0, -(-n // INDUCTION_BATCH), 0,
                        n * (2 * INDUCTION_LEN + 1), local_only=True))
    return out


@unit("exact_check")
def _exact_check(x: Inputs) -> list[Work]:
    """ranking.exact_check: exact PCS of the first --check-exact discovery examples (own profile)."""
    if x.cfg.estimator != "attribution" or not x.cfg.check_exact:
        return []
    items = [(e.example_id, "own") for e in x.split.discovery[:x.cfg.check_exact]]
    return [_pcs(x, items, "exact", f"exact PCS check: {len(items)} discovery examples")]


def head_sets(x: Inputs) -> tuple[int, int, str]:
    """(head sets, distinct sets, where the named sets came from) of the ablation comparison
    (``measure.comparison_sets``): from the ranking run when it exists, else from stand-in top-k sets (the count is
    the same; the distinct count may differ by a few)."""
    from ..analysis import declared as analysis
    from .measure import comparison_sets, copy_head_unions
    from ..intervene.pcs import lowest_layer
    from ..scorers.ranking import Ranking, load_ranking

    if "head_sets" in x.memo:
        return x.memo["head_sets"]
    cfg, source = x.cfg, "the ranking run"
    try:
        ranking = load_ranking(cfg)[0]
    except (FileNotFoundError, ConfigError) as error:
        source = f"stand-in top-k sets ({str(error).split(':')[0]})"
        gen = torch.Generator().manual_seed(cfg.seed)
        ranking = Ranking.from_maps({f: torch.rand(x.shape.n_layers, x.shape.n_heads, generator=gen)
                                     for f in x.families}, cfg.k_heads, [], {})
    decl = analysis.load()
    unions = copy_head_unions(ranking, max(cfg.k_heads), members=decl.copy_members,
                              min_overlap=decl.copy_min_overlap, name=analysis.COPY_HEADS)
    sets = comparison_sets(ranking, x.shape, ranking.families + list(unions), cfg.k_heads, n_random=cfg.n_random,
                           n_random_other=min(cfg.n_random_other, cfg.n_random), n_unmatched=cfg.n_unmatched,
                           seed=cfg.seed, matched_to=cfg.matched_to, n_damage=cfg.n_damage,
                           exclude_named=cfg.null_excludes_named, unions=unions)
    distinct = {str(s.heads): s for s in sets}
    x.memo["head_sets"] = len(sets), len(distinct), source
    x.memo["set_firsts"] = [lowest_layer(s.heads) for s in distinct.values()]  # scoring() clamps to n_layers
    return x.memo["head_sets"]


def _evaluation(x: Inputs) -> list:
    cap = getattr(x.cfg, "max_eval", None)
    return x.split.evaluation[:cap] if cap else x.split.evaluation


@unit("ablation_sets")
def _ablation_sets(x: Inputs) -> list[Work]:
    """measure.ablation_losses: per evaluation example and variant one ablated_losses call over the distinct sets."""
    cfg, evaluation = x.cfg, _evaluation(x)
    _, distinct, _ = head_sets(x)
    work = Work(f"ablation sets: {distinct} distinct x {len(evaluation)} evaluation x {len(cfg.conditions)} variants")
    for e in evaluation:
        for cond in cfg.conditions:
            prompt, gold = x.lengths(e.example_id, cond)
            work += dataclasses.replace(scoring(prompt + gold, gold, x.memo["set_firsts"], cfg.batch_size,
                                                cfg.positions, x.shape.n_layers), requests=1)
    return [work]


@unit("ablated_generations")
def _ablated_generations(x: Inputs) -> list[Work]:
    """generation.generate_ablated: per evaluation example one batched generate, a row per family's largest set and
    one unablated."""
    evaluation, rows = _evaluation(x), 1 + len(x.families)
    work = Work(f"generations with sets ablated: {len(evaluation)} evaluation x {rows} rows")
    for e in evaluation:
        prompt = x.lengths(e.example_id, "own")[0]
        work += decoding([prompt] * rows, rows, x.cfg.max_new_tokens)
    return [work]


def _style_items(x: Inputs) -> list[tuple[str, str]]:
    """steering.fit_style_vectors's (input prompt, real continuation) pairs: up to STYLE_ITEMS recent items of each
    evaluation and discovery user."""
    from ..data.prompts import render_prompt
    from ..generation.steering import continuation_split

    users = {e.user_id for e in x.split.evaluation}
    profiles: dict[str, Any] = {}
    for e in [e for e in x.examples if e.user_id in users] + list(x.split.discovery):
        profiles.setdefault(e.user_id, e.profile)
    chat = bool(x.setup and x.setup.chat)
    tokenizer = x.setup.tokenizer if x.setup else None
    pairs = []
    for profile in profiles.values():
        for item in sorted(profile, key=lambda item: -item.position)[:STYLE_ITEMS]:
            if len(item.text.split()) >= 2:
                cue, real = continuation_split(item)
                pairs.append((render_prompt([], cue, tokenizer, chat), real))
    return pairs


@unit("style_vectors")
def _style_vectors(x: Inputs) -> list[Work]:
    """steering.fit_and_choose: generic continuations of each style item and two last-token traces per batch (fit),
    then steered no-profile generations of the discovery examples per (layer, alpha) (choice)."""
    cfg, new = x.cfg, x.cfg.max_new_tokens
    pairs = _style_items(x)
    prompts = [x.count(p) for p, _ in pairs]
    generic = decoding(prompts, GENERATE_BATCH, new)
    batches = -(-len(pairs) // GENERATE_BATCH)
    real, made = [x.count(p + y) for p, y in pairs], [n + new for n in prompts]  # prompt + real / generic text
    traced = sum(len(c) * max(c) for lens in (real, made)
                 for c in (lens[i:i + GENERATE_BATCH] for i in range(0, len(lens), GENERATE_BATCH)))
    fit = generic + Work("", 2 * batches, 2 * batches, 0, traced)
    layers = cfg.style_layers or sorted({x.shape.n_layers // 3, 2 * x.shape.n_layers // 3})
    grid = len(layers) * len(cfg.style_alphas)
    once = decoding(x.generation_tokens("stylevector", x.split.discovery), GENERATE_BATCH, new)
    return [dataclasses.replace(fit, what=f"StyleVector fit: {len(pairs)} profile items"),
            total([once] * grid, f"StyleVector choice: {grid} (layer, alpha) x {len(x.split.discovery)} discovery")]


def _generation_specs(x: Inputs) -> list[Any]:
    """The DPS study's generation methods (``generation.comparison_generations``), with stand-in head sets."""
    from ..generation.methods import comparison_generations
    from ..intervene.ablation import Ablation
    from ..intervene.heads import HeadSet
    from ..generation.steering import StyleVectors

    heads = {f: HeadSet([(0, 0)]) for f in [*x.families, "random"]}
    cfg = x.cfg
    return comparison_generations(heads, x.families[0], gamma=cfg.gamma, gammas=cfg.gammas, k_profile=cfg.k_profile,
                                  style=StyleVectors(0, {}), alpha=1.0,
                                  ablation=Ablation(cfg.mode, positions=cfg.positions))


def _generate(x: Inputs, specs: Sequence[Any], examples: Sequence[Any], what: str) -> Work:
    work = Work(what)
    for spec in specs:
        two = spec.kind in ("cad", "dps")
        shared = spec.kind == "dps" and spec.ablation.positions != "all" and spec.ablation.mode != "resample"
        work += decoding(x.generation_tokens(spec.kind, examples), x.cfg.batch_size, x.cfg.max_new_tokens,
                         branches=2 if two else 1, shared_prompt=shared)
    return work


@unit("generations")
def _generations(x: Inputs) -> list[Work]:
    """measure.generations: every method on the evaluation examples, the baselines also on the discovery ones (to
    choose the best)."""
    specs = _generation_specs(x)
    baselines = [s for s in specs if s.kind != "dps"]
    return [_generate(x, specs, x.split.evaluation, f"generations: {len(specs)} methods x "
                                                    f"{len(x.split.evaluation)} evaluation"),
            _generate(x, baselines, x.split.discovery, f"baseline choice: {len(baselines)} baselines x "
                                                       f"{len(x.split.discovery)} discovery")]


@unit("delta_logits")
def _delta_logits(x: Inputs) -> list[Work]:
    """decoding.delta_logits_report: DPS on the first evaluation example (all positions, both branches)."""
    prompt = x.lengths(x.split.evaluation[0].example_id, "own")[0]
    return [decoding([prompt], 1, min(DELTA_TOKENS, x.cfg.max_new_tokens), branches=2, what="Δ-logits example")]


# ---------------------------------------------------------------------------------------------- inputs and time


_INPUTS: dict[str, Inputs] = {}  # one draw per model and data settings (a pipeline's stages share it)


def _families(cfg: Any) -> list[str]:
    """The head families a study would use: its own option, else the ranking run's, else the preset's."""
    from ..scorers.ranking import HEAD_SCORERS, load_ranking

    if getattr(cfg, "families", None):
        return list(cfg.families)
    try:
        if hasattr(cfg, "ranking_run"):
            return load_ranking(cfg)[0].families
    except (FileNotFoundError, ConfigError):
        pass
    return list(PRESETS.get(cfg.preset, {}).get("families") or HEAD_SCORERS)


def _parameters(config: Any) -> int:
    """Parameters of a model built from ``config`` on no device (no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def build_inputs(cfg: Any, families: Sequence[str] | None = None) -> Inputs:
    """The examples, split, shape and token counts a study's work is counted from (a hosted model: offline)."""
    from ..data import load_examples, split_discovery_evaluation
    from ..models.registry import SOURCES, hosted_config

    key = json.dumps(cfg.subset(*PROMPT_FIELDS, "max_target_tokens", "framing", "conditions"))
    if key not in _INPUTS:
        config = hosted_config(cfg.model)
        if config is None and cfg.model not in SOURCES and not os.path.isdir(cfg.model):
            raise ConfigError(f"--plan has no shape facts for {cfg.model} offline: it knows the local models "
                              f"({', '.join(sorted(SOURCES))}), local folders and the hosted ones "
                              "(harness.models.registry.HOSTED)")
        examples = load_examples(cfg.data, cfg.split, n=cfg.n, seed=cfg.seed, profile_docs=cfg.profile_docs)
        if cfg.n is not None and len(examples) < cfg.n:
            raise ConfigError(f"--n {cfg.n} is larger than {cfg.data} ({len(examples)} examples)")
        split = split_discovery_evaluation(examples, eval_fraction=cfg.eval_fraction, seed=cfg.seed,
                                           by_user=cfg.by_user)
        if config is not None:
            _INPUTS[key] = Inputs(cfg, shape_of(config, cfg.model), _parameters(config), True, split, examples, [])
        else:
            _INPUTS[key] = _local_inputs(cfg, examples, split)
    cfg.validate_shape(_INPUTS[key].shape)
    return dataclasses.replace(_INPUTS[key], cfg=cfg, families=list(families or _families(cfg)), memo={})


def _local_inputs(cfg: Any, examples: list, split: Any) -> Inputs:
    """A local model's inputs: its prompts built as the study builds them (``auto`` framing counted as prefill)."""
    from .experiment import Setup, build_prompts, resolve_chat
    from ..models.registry import load_model, model_shape
    from ..models.remote import LOCAL

    model = load_model(cfg.model)
    shape = model_shape(model, cfg.model)
    setup = Setup(model=model, shape=shape, backend=LOCAL, examples=examples, split=split,
                  max_target_tokens=cfg.max_target_tokens, chat=resolve_chat(cfg.chat, model.tokenizer),
                  framing="prefill" if cfg.framing == "auto" else cfg.framing)
    build_prompts(setup, cfg)
    return Inputs(cfg, shape, sum(p.numel() for p in model._module.parameters()), False, split, examples, [], setup)


@dataclass(frozen=True)
class Calibration:
    """A timed forward of the planned input length and one of a single token, on this machine."""

    n_tokens: int
    seconds: float  # forward of n_tokens
    overhead: float  # forward of one token: the per-forward cost
    load: float = 0.0  # the machine's 1-minute load average per core before timing (other jobs: > ~0.3)

    def estimate(self, w: Work) -> float:
        """Seconds of ``w``: per-forward overhead plus per-token cost of the positions run (prefix-skipped blocks
        subtracted); a backward costs two forwards. Batching does not change the per-token cost on a CPU (measured:
        SmolLM2-135M 1.12 ms/token at 1 x 450, 1.22 at 16 x 450)."""
        per_token = max(self.seconds - self.overhead, 0.0) / max(self.n_tokens - 1, 1)
        return (w.forwards + w.backwards) * self.overhead + (w.tokens - w.skipped + 2 * w.grad_tokens) * per_token


def calibrate(model: Any, n_tokens: int, repeats: int = 3) -> Calibration:
    """Time a traced forward of ``n_tokens`` random tokens and one of a single token after a warm-up, each the
    fastest of ``repeats`` (other jobs on a shared machine only ever add time; the load average before timing is
    recorded so that the estimate can say so)."""
    import nnsight

    load = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 0.0

    def timed(n: int) -> float:
        ids = torch.randint(model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        with torch.no_grad(), model.trace(ids):
            nnsight.save(model.output.logits[:, -1])
        return time.perf_counter() - start

    timed(n_tokens)
    return Calibration(n_tokens, min(timed(n_tokens) for _ in range(repeats)),
                       min(timed(1) for _ in range(2 * repeats)), load)


def projection(n_params: int, w: Work, accelerator: dict = PROJECTION) -> float:
    """Seconds of ``w`` on ``accelerator`` (default ``PROJECTION``) at peak rates: every forward and backward reads
    the weights, 2 FLOPs per parameter per token forward (prefix-skipped blocks subtracted) and twice that backward (a
    lower bound; ``benchmarks/gpu_roofline.py`` measures how far real forwards are from it)."""
    reads = (w.forwards + w.backwards) * n_params * accelerator["bytes_per_param"] / accelerator["bandwidth"]
    return reads + 2 * n_params * (w.tokens - w.skipped + 2 * w.grad_tokens) / accelerator["flops"]


# ---------------------------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """A study's counted work and the facts it was counted from."""

    cfg: Any
    inputs: Inputs | None
    work: list[Work]

    @property
    def total(self) -> Work:
        return total(self.work, f"total ({self.cfg.study})")


def study_plan(cfg: Any, families: Sequence[str] | None = None) -> Plan:
    """Count the work of the study ``cfg`` configures: the units its config declares (``work``)."""
    units = getattr(cfg, "work", None)
    if units is None:
        raise ConfigError(f"--plan does not know the work of study {cfg.study!r}: declare its units in its config's "
                          f"`work` (harness.study.plan.UNITS: {', '.join(UNITS)})")
    unknown = [u for u in units if u not in UNITS]
    if unknown:
        raise ConfigError(f"study {cfg.study!r} declares unknown units of work {unknown}: known {', '.join(UNITS)}")
    if not units:
        return Plan(cfg, None, [])
    x = build_inputs(cfg, families)
    return Plan(cfg, x, [w for name in units for w in UNITS[name](x)])


def _fmt_time(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _row(w: Work) -> str:
    requests = "local" if w.local_only else f"{w.requests:,}"
    return (f"  {w.what[:62]:<62} {requests:>9} {w.forwards:>10,} {w.backwards:>9,} {w.tokens:>13,}")


def _facts(p: Plan) -> list[str]:
    """The header of one study's plan: model, where it runs, examples, variants, tokens, head sets, results folder."""
    from ..models.remote import API_KEY_ENV, ndif_host
    from ..runs.files import slug

    cfg, x = p.cfg, p.inputs
    lines = []
    host = ndif_host(cfg.remote)  # None for a local run, --remote local included
    if host:
        where = f"NDIF at {host}" + (f"; {API_KEY_ENV} is not set: a run would stop before any work"
                                     if not os.environ.get(API_KEY_ENV, "").strip() else "")
    elif cfg.remote.strip().lower() == "local":
        where = "locally, each request through nnsight's serialization check (--remote local)"
    else:
        where = "locally (requests: what a --remote run would send)"
    if x is not None:
        kind = ("hosted: shape from harness.models.registry.HOSTED, no weights or tokenizer loaded" if x.hosted
                else "local weights")
        lines.append(f"model      {x.shape}; {x.n_params / 1e9:.2f}B parameters ({kind})")
    lines.append(f"runs       {where}")
    if x is not None:
        d, e = x.split.discovery, _evaluation(x)
        users = lambda side: len({ex.user_id for ex in side})  # noqa: E731
        lines.append(f"examples   {len(x.examples)} drawn: {len(d)} discovery ({users(d)} users) / "
                     f"{len(x.split.evaluation)} evaluation ({users(x.split.evaluation)} users)"
                     + (f", {len(e)} measured (--max-eval)" if len(e) < len(x.split.evaluation) else ""))
        lines.append(f"variants   {', '.join(cfg.conditions)}; ablation: {cfg.mode} at {cfg.positions} positions")
        if x.hosted:
            lines.append(f"tokens     <= {cfg.max_prompt_tokens} prompt + <= {cfg.max_target_tokens} gold per input "
                         "(the budgets: no tokenizer offline, so every count is an upper bound)")
        else:
            lens = [x.lengths(ex.example_id, c) for ex in x.examples for c in cfg.conditions]
            lines.append(f"tokens     prompt {sum(a for a, _ in lens) / len(lens):.0f} mean / {max(a for a, _ in lens)}"
                         f" max, gold {sum(b for _, b in lens) / len(lens):.0f} mean / {max(b for _, b in lens)} max "
                         f"per input (tokenized{'; auto framing counted as prefill' if cfg.framing == 'auto' else ''})")
        units = cfg.work
        if "head_scores" in units:
            lines.append(f"families   {', '.join(cfg.families)}; PCS {cfg.estimator} over "
                         f"{x.shape.n_total:,} heads")
        if "ablation_sets" in units:
            n, distinct, source = head_sets(x)
            lines.append(f"head sets  {n:,} ({distinct:,} distinct) at k {', '.join(map(str, cfg.k_heads))} for "
                         f"{', '.join(x.families)}; from {source}")
        if "generations" in units:
            lines.append(f"methods    {', '.join(s.name for s in _generation_specs(x))}")
    root = Path(cfg.results) / slug(cfg.model) / slug(cfg.data) / cfg.folder()
    state = "does not exist"
    if (root / "config.json").exists():
        changed = config_diff(json.loads((root / "config.json").read_text()), cfg.numbers_config())
        state = (f"holds another configuration: a run would be refused ({'; '.join(changed)})" if changed else
                 "holds this configuration: a run resumes and skips its checkpointed work (counted here: all of it)")
    lines.append(f"results    {root} ({state}; --plan writes nothing)")
    if x is not None and "clean_losses" in units:
        lent = loans(x)
        what = [f"{len(lent['clean_losses'])} clean losses"] if lent.get("clean_losses") else []
        what += [f"the {name.replace('_', ' ')}" for name in ("framing", "mean_reference") if name in lent]
        if what:
            lenders = sorted({lent[n] for n in ("framing", "mean_reference") if n in lent}
                             | set(lent.get("clean_losses", {}).values()))
            lines.append(f"lent       {', '.join(what)}, by sibling runs ({', '.join(lenders)}): a run takes them "
                         "instead of measuring them (not counted below)")
    return lines


def render(plans: Sequence[Plan], calibration: Calibration | None = None) -> str:
    """The printed plan: each study's facts and work table, the total, and the time estimate."""
    from ..models.remote import ndif_host

    out = []
    header = f"  {'work':<62} {'requests':>9} {'forwards':>10} {'backwards':>9} {'tokens':>13}"
    for p in plans:
        cfg = p.cfg
        out.append(f"plan: {cfg.study} on {cfg.model}, {cfg.data} (preset {cfg.preset}, seed {cfg.seed})")
        out += ["  " + line for line in _facts(p)]
        if not p.work:
            out.append("  no model work: it reads finished runs (no requests, forwards or tokens)")
            continue
        out += [header] + [_row(w) for w in p.work] + [_row(p.total), ""]
    work = [w for p in plans for w in p.work]
    if not work:
        return "\n".join(out)
    grand = total(work, "total" if len(plans) == 1 else "pipeline total")
    if len(plans) > 1:
        out += [header, _row(grand)]
    x = next(p.inputs for p in plans if p.inputs is not None)
    local = [w for w in work if w.local_only]
    if calibration is not None:
        seconds = sum(calibration.estimate(w) for w in work)
        out.append(f"time: ~{_fmt_time(seconds)} on this machine, from a calibration forward (1 x "
                   f"{calibration.n_tokens} tokens: {calibration.seconds:.2f} s; 1 token: {calibration.overhead:.3f} "
                   "s; a backward counted as two forwards; blocks skipped by prefix reuse subtracted)")
        if calibration.load > 0.3:
            out.append(f"      WARNING: other jobs were running while timing (load average {calibration.load:.1f} per "
                       "core): the time is inflated; plan again on an idle machine")
        if any(ndif_host(p.cfg.remote) for p in plans):
            out.append("      that is this machine's time; on NDIF each request's compute, queueing and transfer "
                       "differ")
    else:
        sent = total([w for w in work if not w.local_only])
        seconds = projection(x.n_params, sent)
        out.append(f"time: >= {_fmt_time(seconds)} of accelerator time, a projection (not a measurement): "
                   f"{PROJECTION['accelerator']} at peak bf16 ({PROJECTION['flops'] / 1e12:.0f} TFLOP/s, "
                   f"{PROJECTION['bandwidth'] / 1e12:.1f} TB/s), weights read once per forward, 2 FLOPs per "
                   "parameter per token, a backward twice a forward")
        out.append(f"      plus NDIF queueing and transfer: every second a request waits adds "
                   f"{_fmt_time(sent.requests)} ({sent.requests:,} requests)")
        if local:
            out.append(f"      WARNING: {', '.join(sorted({w.what.split(':')[0] for w in local}))} run on THIS "
                       f"machine on an eager-attention copy of {x.cfg.model}: a run loads its "
                       f"{x.n_params * PROJECTION['bytes_per_param'] / 1e9:.0f} GB of weights here (not counted)")
    skipped = sum(w.skipped for w in work)
    out.append(f"counts are upper bounds: generations that stop early and padding are not subtracted; the times "
               f"subtract the lower blocks prefix reuse skips ({skipped / max(grand.tokens, 1):.0%} of the token "
               "positions); nothing was sent, loaded onto NDIF or written")
    return "\n".join(out)


def plan_text(configs: Sequence[Any]) -> str:
    """The plan of one study, or of a pipeline's stages (sharing one draw and one calibration), as printed."""
    families = next((list(c.families) for c in configs if getattr(c, "families", None)), None)
    plans = [study_plan(c, families) for c in configs]
    calibration = None
    inputs = [p.inputs for p in plans if p.inputs is not None and not p.inputs.hosted]
    if inputs:
        longest = max(sum(x.lengths(e.example_id, "own")) for x in inputs for e in x.examples)
        calibration = calibrate(inputs[0].setup.model, longest)
    return render(plans, calibration)


def print_plan(*configs: Any) -> None:
    """Print the plan of ``configs`` (``--plan``)."""
    print(plan_text(configs), flush=True)
