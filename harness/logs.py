"""One place that decides what a run prints: the harness's own log lines, and third-party chatter only on request.

Without ``verbose`` a run shows the harness's messages (and its one progress bar per stage) plus any third-party
*warning*; bm25s's per-index "Building index from tokens", rouge-score's "Using default tokenizer.", transformers'
"Loading weights" bars and nnsight's "was never reached" note at the end of every open generation loop are dropped.
``verbose=True`` lets all of it through again.

A ``ConfigError`` (a bad option, a results folder of another configuration) that ends a command-line run prints as
one ``error: ...`` line, not a traceback; ``verbose=True`` keeps the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Any, Callable, Iterator

from .errors import UserError

# Loggers whose INFO lines are the run's own story; everything else shows only from WARNING up unless verbose.
OWN_LOGGERS = ("harness", "studies", "benchmarks", "__main__")
FORMAT = "%(message)s"
VERBOSE_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
# Repeated warnings that say nothing a user must act on (regexes matched against the start of the message).
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # nnsight: an open `tracer.all()` / `tracer.iter[...]` loop ends this way by design (harness.intervene.ablation).
    (r".*was never reached: the loop asked for a step", UserWarning),
    # tqdm.auto in a notebook without ipywidgets: it falls back to the plain bar, which is what we want.
    (r"IProgress not found", Warning),
)
_HANDLER_NAME = "harness.logs"
_verbose = False  # set by configure(); read by quieted()
_previous_hook = sys.excepthook  # what _user_error_hook hands every other exception to


class OwnOrWarning(logging.Filter):
    """Pass the harness's own records at any level and other libraries' records from WARNING up."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = any(record.name == n or record.name.startswith(n + ".") for n in OWN_LOGGERS)
        return own or record.levelno >= logging.WARNING


def configure(verbose: bool = False) -> logging.Handler:
    """Route logging to one stderr handler with the harness's format; silence third-party chatter unless ``verbose``.

    Idempotent: a second call replaces the handler the first one installed. Returns that handler.
    """
    global _verbose, _previous_hook
    _verbose = verbose
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(VERBOSE_FORMAT if verbose else FORMAT, datefmt="%H:%M:%S"))
    if not verbose:
        handler.addFilter(OwnOrWarning())
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("harness").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in OWN_LOGGERS[1:]:
        logging.getLogger(name).setLevel(logging.INFO)
    for message, category in QUIET_WARNINGS:  # before the imports below, which may warn
        warnings.filterwarnings("default" if verbose else "ignore", message=message, category=category)
    _third_party_progress_bars(enabled=verbose)
    if sys.excepthook is not _user_error_hook:
        _previous_hook, sys.excepthook = sys.excepthook, _user_error_hook
    return handler


def cli(main: Callable[[], Any]) -> None:
    """Run a command's ``main``: a ``UserError`` (an option, data, model, remote setting or results folder the user
    can fix; its message names the fix) prints as one ``error: <message>`` line and exits with status 2, before or
    after logging is configured; ``--verbose`` shows the traceback instead."""
    try:
        main()
    except UserError as err:
        if "--verbose" in sys.argv[1:]:
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _user_error_hook(kind: type[BaseException], value: BaseException, tb) -> None:
    """``sys.excepthook`` of a configured run: a ``UserError`` is the user's to fix, and its message names the
    problem, so it prints as ``error: <message>``; anything else (and everything when verbose) goes to the hook that
    was installed before (Python's own unless an application set one)."""
    if issubclass(kind, UserError) and not _verbose:
        print(f"error: {value}", file=sys.stderr, flush=True)
        return
    _previous_hook(kind, value, tb)


@contextlib.contextmanager
def quieted(logger: str, level: int = logging.WARNING) -> Iterator[None]:
    """Hold ``logger`` at ``level`` for the block unless the run is verbose.

    For libraries that force their own logger to DEBUG at import (bm25s does), so a call stays quiet however the
    application configured logging, and in whichever order the modules were imported.
    """
    if _verbose:
        yield
        return
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


def _third_party_progress_bars(enabled: bool) -> None:
    """Turn the Hugging Face progress bars (transformers' weight loading, hub downloads) on or off."""
    from transformers.utils import logging as hf_logging

    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
