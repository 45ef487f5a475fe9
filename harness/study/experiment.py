"""What every study does first and last: open its run folder, load model and data, split, build prompts; the manifest.

Studies share one discovery/evaluation split (same data, n, seed, eval fraction): heads are ranked on discovery
examples only, and every ablation or decoding measurement is made on evaluation examples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ..intervene.ablation import Ablation, Reference, head_means
from ..models.arch import ModelShape
from .config import PROMPT_FIELDS, StudyConfig
from ..errors import ConfigError
from ..data import (Example, Prompt, Split, assert_not_used_for_ranking, build_prompt, load_examples,
                   split_discovery_evaluation, with_other_user,
                   with_same_document)
from ..data.prompts import FRAMINGS
from ..generation.decoding import Sampling
from ..generation.methods import Generation, generate
from ..analysis.metrics import continues_text
from ..models.registry import load_model, model_shape
from ..data.tokens import TokenizedInput, encode
from ..models.remote import Backend, check_deployed, choose_backend, require_api_key
from ..runs.folder import Run

log = logging.getLogger("harness")
FRAMING_TOKENS = 24  # the framing choice's greedy probe length

@dataclass
class Setup:
    """Everything a study needs before its own work starts."""

    model: Any
    shape: ModelShape
    backend: Backend  # where every trace runs, chosen once from --remote (checked_backend)
    examples: list[Example]
    split: Split
    prompts: dict[str, Prompt] = field(default_factory=dict)
    max_target_tokens: int = 64
    signal: list[dict] = field(default_factory=list)  # harness.study.signal rows, measured by start()
    ablation: Ablation = Ablation()  # the design (mode, reference, positions) every measurement and DPS row uses
    chat: bool = True  # prompts rendered with the tokenizer's chat template
    framing: str = "prefill"  # prefill: the answer starts with the text's lead; instruction: it starts empty
    sampling: Sampling = field(default_factory=Sampling)  # every generation's decoding settings (min_new_tokens)

    def prompt_tokens(self) -> dict[str, dict]:
        """Per example, the token counts of its prompt variants (and of the own and other profile blocks)."""
        return {i: p.n_tokens for i, p in self.prompts.items() if p.n_tokens}

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def tokenized(self, example_id: str, condition: str) -> TokenizedInput:
        """The example's prompt in ``condition`` (``own``: the user's profile; ``none``: no profile) and its gold
        target, tokenized for scoring."""
        p = self.prompts[example_id]
        return encode(self.tokenizer, p.text(condition), p.target, max_target_tokens=self.max_target_tokens,
                      profile_span=p.span(condition))

    def call(self, fn: Any, *args: Any, what: str, **kwargs: Any) -> Any:
        """Run one unit of work on the backend (one job on NDIF), retrying NDIF's transient failures."""
        return self.backend.call(fn, *args, what=what, **kwargs)


def resolve_chat(setting: str, tokenizer: Any) -> bool:
    """``on`` / ``off``, or for ``auto`` whether the tokenizer has a chat template (base models such as Gemma-3-270M
    and the hosted base Llamas have none: their prompts are plain text)."""
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"--chat {setting!r}: choose auto, on or off")
    has = getattr(tokenizer, "chat_template", None) is not None
    if setting == "on" and not has:
        raise ConfigError("--chat on, but the tokenizer has no chat template; use --chat auto or off")
    return has if setting == "auto" else setting == "on"


def checked_backend(cfg: StudyConfig) -> Backend:
    """The backend ``--remote`` names, chosen once per run, with its API key checked (an error before anything is
    loaded or written)."""
    backend = choose_backend(cfg.remote)
    require_api_key(backend)
    return backend


def prepare(cfg: StudyConfig, backend: Backend, framing: str | None = None) -> Setup:
    """Load model and data on ``backend``, draw the shared split, and build every prompt variant (``framing``:
    default the config's; ``auto`` is resolved by ``start``, which then calls ``build_prompts``)."""
    model = load_model(cfg.model, backend=backend)
    check_deployed(model.repo_id, backend)
    shape = model_shape(model, cfg.model)
    cfg.validate_shape(shape)
    examples = load_examples(cfg.data, cfg.split, n=cfg.n, seed=cfg.seed, profile_docs=cfg.profile_docs)
    if cfg.n is not None and len(examples) < cfg.n:
        raise ConfigError(f"--n {cfg.n} is larger than {cfg.data} ({len(examples)} examples)")
    split = split_discovery_evaluation(examples, eval_fraction=cfg.eval_fraction, seed=cfg.seed, by_user=cfg.by_user)
    setup = Setup(model, shape, backend, examples, split, {}, cfg.max_target_tokens,
                  chat=resolve_chat(cfg.chat, model.tokenizer), framing=framing or cfg.framing,
                  sampling=Sampling(min_new_tokens=cfg.min_new_tokens))
    if setup.framing != "auto":  # auto: start() chooses the framing on discovery data, then builds the prompts
        build_prompts(setup, cfg)
    return setup


def build_prompts(setup: Setup, cfg: StudyConfig) -> None:
    """Every example's prompt variants (own, other user, none; same_doc with ``--same-doc``) under ``setup``'s chat
    and framing settings."""
    split, tokenizer = setup.split, setup.tokenizer
    prompts = {e.example_id: build_prompt(e, tokenizer, max_prompt_tokens=cfg.max_prompt_tokens, k=cfg.k_profile,
                                          retrieval=cfg.retrieval, seed=cfg.seed, chat=setup.chat,
                                          framing=setup.framing) for e in setup.examples}
    if "other" in cfg.conditions:  # donors from the same side of the split: no user crosses it through a twin
        for name, side in (("discovery", split.discovery), ("evaluation", split.evaluation)):
            if len({e.user_id for e in side}) < 2:
                raise ConfigError(f"the {name} split holds {len({e.user_id for e in side})} user(s): the other-user "
                                  "prompt needs two; use --no-by-user, more --n, or --conditions own none")
            for e in side:
                prompts[e.example_id] = with_other_user(prompts[e.example_id], e, side, tokenizer,
                                                        retrieval=cfg.retrieval, seed=cfg.seed, donor=cfg.donor)
    if cfg.same_doc:
        for e in setup.examples:
            prompts[e.example_id] = with_same_document(prompts[e.example_id], e, tokenizer, retrieval=cfg.retrieval,
                                                       seed=cfg.seed)
    log.info("%s on %s: %d examples (%d discovery / %d evaluation), %d users; %s prompts, %s framing", setup.shape,
             cfg.data, len(setup.examples), len(split.discovery), len(split.evaluation),
             len({e.user_id for e in setup.examples}), "chat" if setup.chat else "plain", setup.framing)
    setup.prompts = prompts


def framing_depends(cfg: StudyConfig) -> dict:
    """The settings the framing choice depends on (its artefact's key)."""
    return cfg.subset(*PROMPT_FIELDS, "min_new_tokens")


def reference_depends(cfg: StudyConfig, framing: str) -> dict:
    """The settings the mean reference depends on (its artefact's key), with the framing ``auto`` resolved to."""
    return cfg.subset(*PROMPT_FIELDS, "max_target_tokens") | {"framing": framing}


def choose_framing(setup: Setup, run: Run, cfg: StudyConfig) -> str:
    """The framing under which the model continues the text most often: greedy no-profile generations on the
    discovery examples under each framing, scored by ``metrics.continues_text`` (an artefact; the shares are kept)."""
    def compute() -> dict:
        shares = {}
        for framing in FRAMINGS:
            prompts = [build_prompt(e, setup.tokenizer, max_prompt_tokens=cfg.max_prompt_tokens, k=cfg.k_profile,
                                    retrieval=cfg.retrieval, seed=cfg.seed, chat=setup.chat, framing=framing)
                       for e in setup.split.discovery]
            texts = generate(setup.model, prompts, Generation("no_profile"), max_new_tokens=FRAMING_TOKENS,
                             sampling=setup.sampling, backend=setup.backend)
            shares[framing] = sum(continues_text(t, e.lead) for t, e in zip(texts, setup.split.discovery)) / len(texts)
        return {"shares": shares, "chosen": max(FRAMINGS, key=lambda f: shares[f])}  # ties: the first (prefill)
    saved = run.artifact("framing_choice", framing_depends(cfg), compute)
    log.info("framing: %s (share of discovery generations that continue the text: %s)", saved["chosen"],
             ", ".join(f"{f} {v:.2f}" for f, v in saved["shares"].items()))
    return saved["chosen"]


def mean_reference(setup: Setup, run: Run, cfg: StudyConfig) -> Reference:
    """Each head's mean activation over the discovery examples' own-profile prompts and gold texts (never evaluation
    data); an artefact keyed by the settings it depends on, recording which examples it averaged."""
    ids = [e.example_id for e in setup.split.discovery]

    def compute() -> dict:
        ref = head_means(setup.model, [setup.tokenized(i, "own").ids[None] for i in ids], backend=setup.backend)
        return {"values": {str(k): v for k, v in ref.values.items()}, "n_tokens": ref.n_tokens, "example_ids": ids}
    saved = run.artifact("mean_reference", reference_depends(cfg, setup.framing), compute)
    assert_not_used_for_ranking(saved["example_ids"], [e.example_id for e in setup.split.evaluation])
    return Reference("mean", {int(k): torch.tensor(v) for k, v in saved["values"].items()}, saved["n_tokens"],
                     source=f"mean over {len(ids)} discovery examples", meta={"example_ids": saved["example_ids"]})


