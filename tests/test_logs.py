"""Quiet runs: third-party chatter is silenced by harness.logs.configure and comes back with verbose=True."""

import logging
import sys
import warnings

import pytest

from harness import logs
from harness.errors import ConfigError
from harness.data.records import Example, ProfileItem
from harness.data.retrieval import select_profile

NEVER_REACHED = ("'model.model.layers.0.self_attn.o_proj.input.i4' was never reached: the loop asked for a step "
                 "the run did not make, so it was cut short")


def _example() -> Example:
    profile = tuple(ProfileItem(f"note {i} about taxes, jobs and the economy", {}, i) for i in range(5))
    return Example("ex1", "alice", "Write about the tax plan.", "Taxes will fall.", profile, "t", "train")


@pytest.fixture
def logging_state():
    """Give each test the process's logging, warning filters and progress-bar state back as it found them."""
    from transformers.utils import logging as hf_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    own = {name: logging.getLogger(name).level for name in logs.OWN_LOGGERS}
    bars = hf_logging.is_progress_bar_enabled()
    hook = sys.excepthook
    with warnings.catch_warnings():
        yield
    sys.excepthook = hook
    root.handlers[:], root.level = handlers, level
    for name, lvl in own.items():
        logging.getLogger(name).setLevel(lvl)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    logs._verbose = False


def test_bm25_retrieval_prints_nothing_even_when_the_app_logs_everything(capfd, logging_state):
    root = logging.getLogger()
    root.addHandler(logging.StreamHandler(sys.stderr))  # an application that logs at DEBUG (capfd sees it)
    root.setLevel(logging.DEBUG)
    picked = select_profile(_example(), k=2)
    assert len(picked) == 2
    assert capfd.readouterr() == ("", "")


def test_configure_keeps_harness_lines_and_warnings_and_drops_third_party_info(capfd, logging_state):
    logs.configure()
    logging.getLogger("harness.data").info("harness says hello")
    logging.getLogger("absl").info("Using default tokenizer.")  # rouge-score's line per scorer
    logging.getLogger("bm25s").debug("Building index from tokens")
    logging.getLogger("urllib3").warning("a third-party warning still shows")
    select_profile(_example(), k=2)
    err = capfd.readouterr().err
    assert err.splitlines() == ["harness says hello", "a third-party warning still shows"]
    with warnings.catch_warnings(record=True) as seen:  # keeps the filters configure() installed
        warnings.warn(NEVER_REACHED, UserWarning)
        warnings.warn("an unrelated warning", UserWarning)
    assert [str(w.message) for w in seen] == ["an unrelated warning"]


def test_verbose_brings_the_third_party_detail_back(capfd, logging_state):
    logs.configure(verbose=True)
    select_profile(_example(), k=2)
    logging.getLogger("absl").info("Using default tokenizer.")
    err = capfd.readouterr().err
    assert "bm25s DEBUG: Building index from tokens" in err
    assert "absl INFO: Using default tokenizer." in err
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn(NEVER_REACHED, UserWarning)
    assert [str(w.message) for w in seen] == [NEVER_REACHED]


def test_configure_twice_installs_one_handler(logging_state):
    logs.configure()
    logs.configure(verbose=True)
    logs.configure()
    assert sum(h.get_name() == "harness.logs" for h in logging.getLogger().handlers) == 1


def test_configure_turns_off_transformers_progress_bars(logging_state):
    from transformers.utils import logging as hf_logging

    logs.configure()
    assert not hf_logging.is_progress_bar_enabled()
    logs.configure(verbose=True)
    assert hf_logging.is_progress_bar_enabled()


def _study(*args: str, cwd) -> "subprocess.CompletedProcess[str]":
    import subprocess

    return subprocess.run([sys.executable, "-m", "studies.known_answer", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_a_config_error_ends_a_command_line_run_as_one_error_line(tmp_path):
    """A bad option and a results folder of another configuration print `error: <what>`, not a traceback; the exit
    status is 2 (a user error), and --verbose keeps the traceback."""
    from pathlib import Path

    import harness

    repo = Path(harness.__file__).resolve().parents[1]
    bad = _study("--data", "planted:conventions2012:case", "--results", str(tmp_path), cwd=repo)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == ("error: --data is the base dataset (e.g. conventions2012), not a "
                                                   "planted name: planted:conventions2012:case")
    verbose = _study("--data", "planted:conventions2012:case", "--results", str(tmp_path), "--verbose", cwd=repo)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and "ConfigError" in verbose.stderr

    folder = tmp_path / "smollm2-135m" / "planted-conventions2012" / "seed0" / "known_answer"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"planted": ["case"]}')
    mixed = _study("--data", "conventions2012", "--results", str(tmp_path), "--planted", "signoff", cwd=repo)
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr
    last = mixed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {folder} holds a run with another configuration; changed: ") and "--fresh" in last
    assert (folder / "config.json").read_text() == '{"planted": ["case"]}'  # the old run is left as it was


def test_other_errors_go_to_the_hook_installed_before(logging_state, capsys):
    """Only a ConfigError is shortened; anything else reaches the hook that was there before (here one that records
    it; by default Python's, which prints the traceback), and configuring twice does not chain the hook to itself."""
    seen = []
    sys.excepthook = lambda kind, value, tb: seen.append(kind)
    logs.configure()
    logs.configure()
    for error in (KeyError("not the user's"), ConfigError("--n must be positive")):
        try:
            raise error
        except Exception:
            sys.excepthook(*sys.exc_info())
    assert seen == [KeyError] and capsys.readouterr().err == "error: --n must be positive\n"
