"""What every study does first: parse the shared options, load model and data, split, build prompts.

Studies share one discovery/evaluation split (same data, n, seed, eval fraction): heads are ranked on discovery
examples only, and every ablation or decoding measurement is made on evaluation examples.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Any

from .arch import ModelShape
from .data import Example, Prompt, Split, build_prompt, load_examples, split_discovery_evaluation
from .models import DEFAULT_MODEL, load_model, model_shape
from .pcs import TokenizedInput, encode
from .remote import check_deployed, register_harness, require_api_key, resolve_remote, run_with_retry

log = logging.getLogger("harness")

# Presets: "quick" finishes in minutes on 2 CPU cores; "full" is the configuration whose results are committed.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"n": 8, "max_prompt_tokens": 128, "max_target_tokens": 16, "k_profile": 2, "method": "attribution",
              "check_exact": 1, "n_random": 20, "n_random_other": 5, "ks": [1, 3, 5], "max_new_tokens": 12,
              "retrieval_prompts": 2, "induction_sequences": 4},
    "full": {"n": 32, "max_prompt_tokens": 160, "max_target_tokens": 24, "k_profile": 2, "method": "attribution",
             "check_exact": 4, "n_random": 100, "n_random_other": 10, "n_unmatched": 10, "ks": [1, 3, 10],
             "max_new_tokens": 24, "retrieval_prompts": 8, "induction_sequences": 16},
}


def common_args(description: str) -> argparse.ArgumentParser:
    """The options every study takes (a preset fills the defaults; explicit flags win)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="registry name, HF repo id or local folder")
    ap.add_argument("--data", default="conventions2012", help="dataset name or path to a LongLaMP-schema JSON(L)")
    ap.add_argument("--split", default="train", help="dataset split to draw examples from")
    ap.add_argument("--n", type=int, help="examples drawn in total (split into discovery and evaluation)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-fraction", type=float, default=0.5)
    ap.add_argument("--by-user", action="store_true", help="split by user instead of by example")
    ap.add_argument("--k-profile", type=int, help="profile items retrieved into the prompt (BM25)")
    ap.add_argument("--max-prompt-tokens", type=int)
    ap.add_argument("--max-target-tokens", type=int)
    ap.add_argument("--ks", type=int, nargs="+", help="head-set sizes (top-k) used by the studies")
    ap.add_argument("--max-new-tokens", type=int, help="generation length")
    ap.add_argument("--remote", default="false",
                    help="false (local), local (nnsight serialization check), ndif/true (NDIF_HOST), or a host URL")
    ap.add_argument("--results", default="results")
    ap.add_argument("--fresh", action="store_true", help="discard a previous run's checkpoints in the folder")
    return ap


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the preset."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


@dataclass
class Setup:
    """Everything a study needs before its own work starts."""

    model: Any
    shape: ModelShape
    remote: bool | str
    examples: list[Example]
    split: Split
    prompts: dict[str, Prompt] = field(default_factory=dict)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def scored(self, example_id: str, *, profile: bool, max_target_tokens: int) -> TokenizedInput:
        p = self.prompts[example_id]
        return encode(self.tokenizer, p.with_profile if profile else p.without_profile, p.target,
                      max_target_tokens=max_target_tokens)

    def call(self, fn: Any, *args: Any, what: str, **kwargs: Any) -> Any:
        """Run one unit of work (one remote job when remote), retrying transient remote failures."""
        if self.remote and self.remote != "local":
            return run_with_retry(lambda: fn(*args, **kwargs), what=what)
        return fn(*args, **kwargs)

    def split_record(self) -> dict:
        return self.split.manifest()


def prepare(args: argparse.Namespace) -> Setup:
    """Load model and data, draw the shared split, and build every prompt (with and without profile)."""
    remote = resolve_remote(args.remote)
    if remote and remote != "local":
        require_api_key(remote)
    if remote:
        register_harness()
    model = load_model(args.model, remote=bool(remote) and remote != "local")
    if remote and remote != "local":
        check_deployed(model.repo_id, remote)
    shape = model_shape(model, args.model)
    examples = load_examples(args.data, args.split, n=args.n, seed=args.seed)
    split = split_discovery_evaluation(examples, eval_fraction=args.eval_fraction, seed=args.seed,
                                       by_user=args.by_user)
    prompts = {e.example_id: build_prompt(e, model.tokenizer, max_prompt_tokens=args.max_prompt_tokens,
                                          k=args.k_profile, seed=args.seed) for e in examples}
    log.info("%s on %s: %d examples (%d discovery / %d evaluation), %d users", shape, args.data, len(examples),
             len(split.discovery), len(split.evaluation), len({e.user_id for e in examples}))
    return Setup(model, shape, remote, examples, split, prompts)


def config_of(args: argparse.Namespace, *keys: str) -> dict:
    """The options that determine a study's numbers (what resuming must not silently change)."""
    base = ["model", "data", "split", "n", "seed", "eval_fraction", "by_user", "k_profile", "max_prompt_tokens",
            "max_target_tokens"]
    return {k: getattr(args, k) for k in base + list(keys)}
