"""A study's first and last steps: ``begin`` (logging; ``--plan`` prints the plan and exits), ``start`` (run folder,
model, data, split, prompts and the signal, before the study's own work) and ``finish`` (manifest and summary)."""

from __future__ import annotations

import logging
from typing import Any

from ..analysis import declared, tables
from ..intervene.ablation import Ablation
from ..runs.files import write_csv
from ..runs.folder import Run
from ..logs import configure as configure_logging
from . import signal
from .config import StudyConfig
from .plan import print_plan
from .experiment import Setup, build_prompts, checked_backend, choose_framing, mean_reference, prepare

log = logging.getLogger("harness")


def begin(cfg: StudyConfig) -> None:
    """The first step of every study: logging (the harness's own lines; third-party chatter only with --verbose),
    and with ``--plan`` the plan, then exit, before the key check, the run folder and any remote work: a plan spends
    and writes nothing."""
    configure_logging(cfg.verbose)
    if cfg.plan:
        print_plan(cfg)
        raise SystemExit(0)


def start(cfg: StudyConfig, *, ablates: bool = True) -> tuple[Setup, Run]:
    """Everything before a study's own work: logging, its run folder (a folder holding another numbers config is
    refused, field by field, before the model is loaded; the folder is made once model and data have loaded, so a
    failed start leaves nothing that blocks the next try), model, data, split, prompts, and the signal: the clean
    losses of every prompt variant and the gains they give (``signal.csv``; a loud note where there is none)."""
    begin(cfg)
    backend = checked_backend(cfg)  # chosen once; a missing key or host is an error before anything is written
    root, numbers = Run.folder(cfg.results, cfg.model, cfg.data, cfg.folder()), cfg.numbers_config()
    Run.check(root, numbers, fresh=cfg.fresh)  # another config is refused before the model loads
    setup = prepare(cfg, backend)  # an unknown model, a missing data file: refused before the run folder exists
    run = Run.open_folder(root, numbers, fresh=cfg.fresh, command=cfg.command())
    run.borrow = backend.runs_here  # sibling runs lend clean losses and artefacts to local runs only
    if setup.framing == "auto":
        setup.framing = choose_framing(setup, run, cfg)
        build_prompts(setup, cfg)
    if ablates:
        setup.ablation = Ablation(cfg.mode, mean_reference(setup, run, cfg) if cfg.mode == "mean" else None,
                                  cfg.positions)
    losses = signal.clean_losses(setup, run, [*cfg.conditions, *(["same_doc"] if cfg.same_doc else [])])
    setup.signal = signal.signal_rows(losses, n_boot=cfg.n_boot, seed=cfg.seed)
    run.note = signal.signal_note(setup.signal) if "other" in cfg.conditions else ""
    write_csv(run.path("signal_losses.csv"), losses)
    tables.write_tables(setup.signal, signal.columns(setup.signal), run.root, "signal", note=run.note)
    log.info(signal.summary_line(setup.signal))
    if run.note:
        log.warning("WARNING: %s", run.note)
    return setup, run


def finish(run: Run, setup: Setup, cfg: StudyConfig, **extra: Any) -> Run:
    """Write the manifest (data hash, split, config, the chat and framing ``auto`` resolved to, signal, provenance),
    then rewrite and print the results' summary (``harness.analysis.summary``: ``<results>/summary.md``, read from the files
    written), and return the run."""
    from ..analysis.summary import report

    run.manifest(seed=cfg.seed, model=cfg.model, data=cfg.data, split=setup.split.manifest(),
                 analysis_hash=declared.current_hash(),
                 examples=setup.examples, extra={"signal": setup.signal, "signal_note": run.note,
                                                 "prompting": {"chat": setup.chat, "framing": setup.framing},
                                                 "prompt_tokens": setup.prompt_tokens(), **extra})
    report(cfg.results, cfg.model, cfg.data)
    return run
