"""--plan: every study prints its work and exits 0, writing nothing; the counts match what a run sends; and the work
that would go to NDIF builds, serializes and (where nnsight can) runs on weightless 32x32- and 80x64-head models."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import nnsight
import pytest
import torch

from harness.models.arch import shape_of
from harness.errors import ConfigError
from harness.intervene.ablation import Ablation
from harness.intervene.heads import HeadSet
from harness.models.registry import HOSTED, REMOTE_ALIASES, hosted_config
from harness.models.remote import LOCAL, Backend
from harness.study.plan import Work, decoding, scoring, study_plan
from studies import ablation_comparison, dps_decoding, pcs_ranking, pipeline, seeds, signal

STUDIES = {"signal": signal, "pcs_ranking": pcs_ranking, "ablation_comparison": ablation_comparison,
           "dps_decoding": dps_decoding}
CONFIGS = {"signal": signal.SignalConfig, "pcs_ranking": pcs_ranking.RankingConfig,
           "ablation_comparison": ablation_comparison.AblationConfig, "dps_decoding": dps_decoding.DPSConfig}
SHAPES = {"meta-llama/Llama-3.1-8B": (32, 32), "meta-llama/Llama-3.1-70B": (80, 64)}
# The tiny study settings of tests/test_studies.py, per study.
RANK = ["--retrieval-prompts", "1", "--induction-sequences", "2"]
EXTRA = {"signal": [], "pcs_ranking": RANK,
         "ablation_comparison": ["--n-random", "5", "--n-random-other", "2", "--max-new-tokens", "4",
                                 "--n-damage", "12"],
         "dps_decoding": ["--max-new-tokens", "4", "--gammas", "1.0", "--style-alphas", "1.0", "--style-layers", "1"]}
CHECK = Backend("check")  # nnsight's serialization check (--remote local); meta_model registers the harness


def planned(study: Any, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``study.main(argv + --plan)``, assert it exits 0, and return what it printed."""
    with pytest.raises(SystemExit) as stop:
        study.main(argv + ["--plan"])
    assert stop.value.code in (0, None)
    return capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- arithmetic


def test_scoring_runs_the_prompt_once_at_target_positions_and_the_whole_input_otherwise():
    # 100 tokens ending in 10 gold ones, 20 sets in batches of 8 (3 batches), none skipping a block (first layer 0)
    w = scoring(100, 10, [0] * 20, 8, "target", 4)
    assert (w.forwards, w.tokens, w.skipped) == (2 + 3, 89 + 10 * 21, 0)  # prompt, clean and 3 batches of gold
    w = scoring(100, 10, [0] * 20, 8, "all", 4)
    assert (w.forwards, w.tokens, w.skipped) == (1 + 3, 100 * 21, 0)
    assert (scoring(100, 10, [], 8, "all", 4).forwards, scoring(100, 10, [], 8, "all", 4).tokens) == (1, 100)


def test_scoring_subtracts_the_blocks_each_batch_skips_below_its_lowest_layer():
    # 4 layers; sets sorted by lowest layer [0, 1, 2, 3, 3] in batches of 2: [0, 1] skips 0 blocks, [2, 3] skips 2 of
    # 4 (rows x seq x 2/4), [3] skips 3 of 4; a set of a layer past the model counts as skipping every block
    w = scoring(100, 10, [3, 1, 0, 3, 2], 2, "all", 4)
    assert w.skipped == pytest.approx(2 * 100 * 2 / 4 + 1 * 100 * 3 / 4)
    assert scoring(20, 4, [2], 1, "target", 4).skipped == pytest.approx(4 * 2 / 4)  # gold tokens only
    assert scoring(20, 4, [9], 1, "all", 4).skipped == pytest.approx(20)


def test_planned_block_work_is_what_ablated_losses_runs(tiny_model_dir):
    """The plan's token positions less its prefix-skipped share equal the (row x position x block) work that
    ``pcs.ablated_losses`` runs through the blocks, counted by a hook on every block's attention output projection
    (a skipped block's own hooks still fire; its submodules do not run), in units of whole forwards."""
    from harness.models.arch import out_proj
    from harness.models.registry import load_model
    from harness.data.tokens import TokenizedInput
    from harness.intervene.pcs import ablated_losses

    model = load_model(tiny_model_dir)
    shape = shape_of(model.config)
    sets = [HeadSet.parse(s) for s in ("L0H1", "L2H0", "L1H3,L2H1", "L2H2", "L1H0", "L0H2,L2H3")]
    item = TokenizedInput(torch.arange(5, 35), 6, (0, 0))
    for positions in ("all", "target"):
        seen: list[int] = []
        hooks = [out_proj(model._module, k).register_forward_hook(
            lambda _m, args, _o: seen.append(args[0].shape[0] * args[0].shape[1])) for k in range(shape.n_layers)]
        try:
            ablated_losses(model, item, sets, Ablation(positions=positions), batch_size=4)
        finally:
            for h in hooks:
                h.remove()
        w = scoring(30, 6, [s.heads[0].layer for s in sets], 4, positions, shape.n_layers)
        assert sum(seen) / shape.n_layers == pytest.approx(w.tokens - w.skipped), positions


def test_decoding_counts_one_request_per_batch_padded_to_its_longest_prompt():
    w = decoding([5, 7, 6], 2, 4)  # batches [5, 7] and [6]
    assert (w.requests, w.forwards, w.tokens) == (2, 8, 2 * 7 + 2 * 3 + 1 * 6 + 1 * 3)
    two = decoding([5, 7], 2, 4, branches=2, shared_prompt=True)  # DPS, prompt once: 2 x 6 tokens, then 4 steps
    assert (two.requests, two.forwards, two.tokens) == (1, 5, 2 * 6 + 4 * 4)


def test_work_adds_up():
    w = Work("a", 1, 2, 3, 4, 5, skipped=1.5) + Work("b", 10, 20, 30, 40, 50, skipped=2.0)
    assert (w.what, w.requests, w.forwards, w.backwards, w.tokens, w.grad_tokens) == ("a", 11, 22, 33, 44, 55)
    assert w.skipped == 3.5


# ---------------------------------------------------------------------------------------------- hosted, offline


def test_hosted_configs_carry_the_published_shapes():
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    params = {"meta-llama/Llama-3.1-8B": 8.03e9, "meta-llama/Llama-3.1-70B": 70.55e9}
    for name, (layers, heads) in SHAPES.items():
        config = hosted_config(name)
        shape = shape_of(config)
        assert (shape.n_layers, shape.n_heads, shape.head_dim, shape.n_kv_heads) == (layers, heads, 128, 8)
        assert config.vocab_size == 128256 and config.rope_parameters["rope_type"] == "llama3"
        with init_empty_weights():
            n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        assert n == pytest.approx(params[name], rel=1e-3)
    assert hosted_config("llama-3.1-8b").hidden_size == 4096  # the registry alias
    assert hosted_config("smollm2-135m") is None
    assert set(HOSTED) >= set(SHAPES)


@pytest.mark.parametrize("model", ["llama-3.1-8b", "meta-llama/Llama-3.1-70B"])
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_plan_of_every_study_on_a_hosted_model_prints_its_work_and_writes_nothing(study, model, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)  # a plan needs no key; it says a run would
    results = tmp_path / "results"
    out = planned(STUDIES[study], ["--preset", "quick", "--model", model, "--remote", "ndif", "--results",
                                   str(results)], capsys)
    layers, heads = SHAPES[REMOTE_ALIASES.get(model, model)]
    assert f"{layers} layers x {heads} heads" in out and "no weights or tokenizer loaded" in out
    assert "requests" in out and f"total ({study})" in out and "projection" in out
    assert "NDIF_API_KEY is not set" in out
    assert not results.exists()


def test_hosted_plan_warns_that_the_baseline_scorers_load_the_weights_locally(tmp_path, capsys):
    out = planned(pcs_ranking, ["--preset", "quick", "--model", "llama-3.1-70b", "--results", str(tmp_path / "r")],
                  capsys)
    assert "WARNING: induction scores, retrieval scores run on THIS machine" in out


def test_pipeline_plan_sums_its_stages_and_writes_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    pipeline.main(["--preset", "quick", "--model", "llama-3.1-8b", "--results", str(results), "--plan"])
    out = capsys.readouterr().out
    for study in ("pcs_ranking", "ablation_comparison", "dps_decoding"):
        assert f"plan: {study} on llama-3.1-8b" in out
    assert "pipeline total" in out and not results.exists()


def head_sets(plan_text: str) -> int:
    """The head-set count a printed plan states (its first ``head sets`` line)."""
    return int(plan_text.split("head sets  ")[1].split()[0])


def test_full_pipeline_plans_the_secondary_design_with_the_smaller_null(tmp_path, capsys):
    results = tmp_path / "results"
    pipeline.main(["--preset", "full", "--model", "llama-3.1-8b", "--results", str(results), "--plan", "--stages",
                   "ablation"])
    out = capsys.readouterr().out
    primary, secondary = out.split("plan: ablation_comparison")[1:]
    assert "mean at target positions" in primary and "zero at all positions" in secondary
    alone = planned(ablation_comparison, ["--preset", "full", "--model", "llama-3.1-8b", "--results", str(results),
                                          "--mode", "zero", "--positions", "all", *pipeline.SECONDARY_NULL], capsys)
    assert head_sets(secondary) == head_sets(alone) and head_sets(primary) > 3 * head_sets(secondary)
    assert not results.exists()


def test_small_null_gives_the_primary_design_the_smaller_null_too(tmp_path, capsys):
    results = tmp_path / "results"
    pipeline.main(["--preset", "full", "--model", "llama-3.1-8b", "--results", str(results), "--plan", "--stages",
                   "ablation", "--designs", "mean/target", "--small-null"])
    out = capsys.readouterr().out
    alone = planned(ablation_comparison, ["--preset", "full", "--model", "llama-3.1-8b", "--results", str(results),
                                          *pipeline.SECONDARY_NULL], capsys)
    full = planned(ablation_comparison, ["--preset", "full", "--model", "llama-3.1-8b", "--results", str(results)],
                   capsys)
    assert "mean at target positions" in out
    assert head_sets(out) == head_sets(alone) and head_sets(full) > 3 * head_sets(out)
    assert not results.exists()


def test_plan_requests_grow_with_examples_not_heads(tmp_path):
    argv = ["--preset", "quick", "--model", "llama-3.1-8b", "--results", str(tmp_path)]
    small, large = (study_plan(pcs_ranking.RankingConfig.from_argv(argv + ["--n", str(n)])).total for n in (12, 24))
    big_model = study_plan(pcs_ranking.RankingConfig.from_argv(
        ["--preset", "quick", "--model", "llama-3.1-70b", "--results", str(tmp_path), "--n", "12"])).total
    assert large.requests > small.requests and big_model.requests == small.requests


def test_plan_refuses_k_heads_beyond_the_hosted_models_head_count(tmp_path):
    cfg = pcs_ranking.RankingConfig.from_argv(["--preset", "quick", "--model", "llama-3.1-8b", "--results",
                                               str(tmp_path), "--n", "12", "--k-heads", "1", "2000"])
    with pytest.raises(ConfigError, match=r"--k-heads 2000 is more than the model's 1024 heads"):
        study_plan(cfg)


def test_seeds_summary_plan_does_no_model_work(tmp_path, capsys):
    out = planned(seeds, ["--preset", "quick", "--results", str(tmp_path / "r"), "--seeds", "0", "1"], capsys)
    assert "no model work" in out and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- local models


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_plan_of_every_study_on_a_local_model_prints_its_work_and_writes_nothing(study, tiny_model_dir, tmp_path,
                                                                                capsys):
    results = tmp_path / "results"
    out = planned(STUDIES[study], ["--preset", "quick", "--model", tiny_model_dir, "--n", "6", "--results",
                                   str(results)] + EXTRA[study], capsys)
    assert "3 layers x 4 heads" in out and "local weights" in out and "tokenized" in out
    assert f"total ({study})" in out and "from a calibration forward" in out
    assert not results.exists()


def test_plan_counts_the_requests_a_remote_local_run_sends(tiny_model_dir, tmp_path, monkeypatch):
    """Each study run through nnsight's serialization check sends exactly the planned requests, and at most the
    planned forwards (generations may stop early); a study after the signal run borrows its clean losses, and its plan
    counts none."""
    from harness.models.registry import load_model
    from harness.models.remote import remote_job_counter

    args = ["--preset", "quick", "--model", tiny_model_dir, "--data", "conventions2012", "--profile-docs", "any", "--n", "6", "--results",
            str(tmp_path), "--max-prompt-tokens", "96", "--max-target-tokens", "8", "--k-heads", "1", "2",
            "--n-boot", "200", "--n-perm", "200", "--remote", "local"]
    # nnsight 0.8.1's local simulation cannot rerun generate_ablated's generate (see the xfail below): its requests
    # run unsimulated here and are left out of the comparison
    run_locally = ablation_comparison.generate_ablated
    monkeypatch.setattr(ablation_comparison, "generate_ablated",
                        lambda *args, **kw: run_locally(*args, **{**kw, "backend": LOCAL}))
    forwards = []
    hook = load_model(tiny_model_dir)._module.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        for study in ("signal", "pcs_ranking", "ablation_comparison", "dps_decoding"):
            argv = args + EXTRA[study]
            plan = study_plan(CONFIGS[study].from_argv(argv))
            remote = [w for w in plan.work if not w.local_only]
            if study != "signal":  # the signal run of the same seed lends its clean losses and framing choice
                assert not any(w.what.startswith(("signal: clean losses", "framing")) for w in remote), study
            forwards.clear()
            with remote_job_counter() as count:
                STUDIES[study].main(argv)
            simulated = [w for w in remote if not w.what.startswith("generations with sets ablated")]
            assert count.simulated == sum(w.requests for w in simulated), study
            assert len(forwards) <= sum(w.forwards for w in remote), study
    finally:
        hook.remove()


@pytest.mark.xfail(strict=True, raises=AttributeError, reason="nnsight 0.8.1's LocalSimulationBackend reruns a "
                   "generate with an open tracer.all() loop from a module shipped by value outside its mediator "
                   "('greenlet' object has no attribute 'mediator'); the loopback NDIF service runs it")
def test_ablated_generation_runs_through_the_local_serialization_check(tiny_model_dir):
    from harness.generation.methods import generate_ablated
    from harness.models.registry import load_model
    from harness.models.remote import choose_backend

    generate_ablated(load_model(tiny_model_dir), "Dear diary,", [None, HeadSet.parse("L1H2")], max_new_tokens=2,
                     backend=choose_backend("local"))


# ---------------------------------------------------------------------------------------------- meta models


def char_tokenizer() -> Any:
    """A character-level tokenizer built in memory (the hosted tokenizers need the hub): ids well inside the
    Llama-3.1 vocabulary, an eos that pads."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, **{chr(i): i - 30 for i in range(32, 127)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")


def meta_model(name: str) -> Any:
    """The weightless model an NDIF client holds for ``name`` (nnsight's meta build from the shipped config, as
    ``load_model(..., backend=<ndif>)`` builds it from the hub's), marked dispatched so ``remote="local"`` runs request
    bodies on its meta tensors instead of downloading weights. Eager attention: sdpa's mask check reads a value,
    which a meta tensor does not have; the ablations act on the output projection either way."""
    from nnsight import TransformersModel

    from harness.models.remote import pin_model_key, resolve_remote

    resolve_remote("local")  # registers the harness, so its functions ship by value
    pin_model_key(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformersModel(name, config=hosted_config(name), tokenizer=char_tokenizer(),
                                  task="text-generation", attn_implementation="eager")
    model.dispatched = True
    model._module.requires_grad_(False)
    return model


class Serialized(Exception):
    """A request went through nnsight's serialize/deserialize round trip and was not run."""


def _zeros_for_meta(value: Any) -> Any:
    """``value`` with every meta tensor replaced by zeros of its shape and dtype (in lists, tuples and dicts too)."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        return torch.zeros(value.shape, dtype=value.dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_zeros_for_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: _zeros_for_meta(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def on_meta(execute: bool = True) -> Iterator[list[int]]:
    """``remote="local"`` requests as NDIF would take them: each is serialized and deserialized with non-installed
    modules hidden (nnsight's check); then, with ``execute``, its body runs on the meta model and each saved meta
    tensor comes back as zeros of its shape (so the harness's post-processing runs); without, it raises
    ``Serialized``. Yields the payload size of every request."""
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.util import push

    run, serialize, sizes = LocalSimulationBackend.__call__, RequestModel.serialize.__func__, []

    def measured(cls: Any, tracer: Any, compress: bool = False) -> bytes:
        blob = serialize(cls, tracer, compress)
        sizes.append(len(blob))
        return blob

    def call(self: Any, tracer: Any) -> None:
        if not execute:
            def stop(code: Any) -> None:
                raise Serialized(f"{sizes[-1]:,} bytes")
            tracer.execute = stop
        run(self, tracer)
        frame = tracer.info.frame
        push(frame, {k: _zeros_for_meta(v) for k, v in frame.f_locals.items() if _zeros_for_meta(v) is not v})

    LocalSimulationBackend.__call__, RequestModel.serialize = call, classmethod(measured)
    try:
        yield sizes
    finally:
        LocalSimulationBackend.__call__, RequestModel.serialize = run, classmethod(serialize)


@pytest.fixture(scope="module", params=sorted(SHAPES))
def hosted(request) -> Any:
    return meta_model(request.param)


def scored_input(n_prompt: int = 24, n_target: int = 6) -> Any:
    from harness.data.tokens import TokenizedInput

    return TokenizedInput(torch.arange(2, 2 + n_prompt + n_target), n_target, (2, 12))


@pytest.mark.slow
def test_signal_reference_and_attribution_requests_run_on_meta(hosted):
    from harness.intervene.ablation import head_means
    from harness.intervene.pcs import ablated_losses, head_attributions

    shape = shape_of(hosted.config)
    item = scored_input()
    with on_meta() as sizes:
        clean, none = ablated_losses(hosted, item, [], backend=CHECK)  # signal: one clean loss
        ref = head_means(hosted, [item.ids[None]], backend=CHECK)  # the mean reference
        _, deltas = head_attributions(hosted, item, ablation=Ablation("mean", ref, "target"), backend=CHECK)
    assert len(sizes) == 3 and len(none) == 0
    assert sorted(ref.values) == list(range(shape.n_layers)) and ref.values[0].shape == (shape.proj_in,)
    assert deltas.shape == (shape.n_layers, shape.n_heads)  # every head's attribution from 1 forward + 1 backward


@pytest.mark.slow
@pytest.mark.parametrize("positions", ["target", "all", "profile"])
def test_ablation_sets_request_runs_on_meta(hosted, positions):
    from harness.intervene.ablation import Reference
    from harness.intervene.pcs import ablated_losses

    shape = shape_of(hosted.config)
    L, H = shape.n_layers, shape.n_heads
    ref = Reference("mean", {layer: torch.zeros(shape.proj_in) for layer in range(L)}, 1)
    sets = [HeadSet.parse(s) for s in ("L0H0", f"L{L - 1}H{H - 1}", f"L{L // 2}H0-{H - 1}")]
    with on_meta() as sizes:  # three sets, two rows a batch: the prompt, the clean run and two batches, one request
        _, losses = ablated_losses(hosted, scored_input(), sets, ablation=Ablation("mean", ref, positions),
                                   batch_size=2, backend=CHECK)
    assert losses.shape == (3,) and len(sizes) == 1


@pytest.mark.slow
def test_dps_step_runs_on_meta_and_whole_decodes_serialize(hosted):
    from harness.intervene.ablation import Reference
    from harness.generation.decoding import decode, forward_step
    from harness.generation.methods import generate_ablated

    shape = shape_of(hosted.config)
    ref = Reference("mean", {layer: torch.zeros(shape.proj_in) for layer in range(shape.n_layers)}, 1)
    heads = HeadSet.parse(f"L1H2,L{shape.n_layers - 1}H{shape.n_heads - 1}")
    ids = torch.arange(2, 14)[None].expand(2, -1)  # [full; masked] rows of one prompt
    mask, pos = torch.ones_like(ids), torch.arange(12)[None].expand(2, -1)
    with on_meta() as sizes:  # one DPS step: both branches in one forward, the masked row ablated from index 11 on
        with hosted.session(remote=CHECK.remote):
            logits, _ = forward_step(hosted, ids, mask, pos, heads=[None, heads], ablation=Ablation("mean", ref),
                                     ablate_from=11)
            step = nnsight.save(logits)
    assert step.shape == (2, hosted.config.vocab_size) and len(sizes) == 1
    # A whole decode stops on a value (every row done), which a meta tensor does not have: serialized only.
    with on_meta(execute=False) as sizes, pytest.raises(Serialized):
        decode(hosted, ["Dear diary, today I"], heads=heads, max_new_tokens=4, ablation=Ablation("mean", ref, "target"),
               backend=CHECK)
    with on_meta(execute=False), pytest.raises(Serialized):
        generate_ablated(hosted, "Dear diary, today I", [None, heads], max_new_tokens=4, ablation=Ablation("mean", ref),
                         backend=CHECK)
    assert len(sizes) == 1
