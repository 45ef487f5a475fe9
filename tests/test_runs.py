"""Crash safety of harness.runs.folder: JSONL checkpoints recover a torn tail and refuse corruption; atomic_write never
leaves a half-written file or a temporary behind, whichever step fails; a real SIGKILL at each step of a write (the
HARNESS_CRASH_AT hook) leaves the old or the new file; Run.open refuses another configuration, and --fresh (``fresh=``)
starts over. The studies killed and resumed end to end: tests/test_crash_resume.py."""

import json
import os
import signal
import subprocess
import sys

import pytest

from harness.runs import files, provenance
from harness.errors import ConfigError
from harness.runs.checkpoints import Checkpoint, CorruptCheckpoint
from harness.runs.folder import Run
from harness.runs.files import atomic_write, remove_stale_temporaries


def _lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _leftovers(folder) -> list[str]:
    """Files in ``folder`` other than the ones a test wrote on purpose (atomic_write's temporaries start with '.')."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- Checkpoint ---------------------------------------------------------------------------------------------------


def test_checkpoint_records_survive_a_reopen(tmp_path):
    path = tmp_path / "units.jsonl"
    first = Checkpoint(path)
    first.add("a", loss=1.5)
    first.add("b", loss=[1, 2])
    again = Checkpoint(path)
    assert len(again) == 2 and "a" in again and again.get("b") == {"key": "b", "loss": [1, 2]}


def test_torn_last_line_is_dropped_and_the_file_repaired_so_appending_continues(tmp_path):
    path = tmp_path / "units.jsonl"
    path.write_text(_lines({"key": "a", "v": 1}, {"key": "b", "v": 2}) + '{"key": "c", "v"')  # killed mid-write
    cp = Checkpoint(path)
    assert sorted(cp.records) == ["a", "b"]
    assert path.read_text() == _lines({"key": "a", "v": 1}, {"key": "b", "v": 2})  # torn tail gone on disk
    cp.add("c", v=3)
    assert sorted(Checkpoint(path).records) == ["a", "b", "c"]
    assert path.read_text().endswith('{"key": "c", "v": 3}\n')


def test_a_file_holding_only_a_torn_line_opens_empty(tmp_path):
    path = tmp_path / "units.jsonl"
    path.write_text('{"key": "a"')
    assert len(Checkpoint(path)) == 0 and path.read_text() == ""


def test_corrupt_middle_line_is_an_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "units.jsonl"
    path.write_text(_lines({"key": "a"}) + "{not json}\n" + _lines({"key": "c"}))
    with pytest.raises(CorruptCheckpoint, match=rf"{path}:2: corrupt checkpoint line .*--fresh"):
        Checkpoint(path)
    assert path.read_text().count("\n") == 3  # nothing rewritten or dropped


def test_corrupt_last_complete_line_is_an_error_too(tmp_path):
    path = tmp_path / "units.jsonl"
    path.write_text(_lines({"key": "a"}) + '{"key": "b", "v": 2\n')  # complete (newline-terminated) yet corrupt
    with pytest.raises(CorruptCheckpoint, match=rf"{path}:2:"):
        Checkpoint(path)


def test_line_without_a_key_is_an_error(tmp_path):
    path = tmp_path / "units.jsonl"
    path.write_text(_lines({"key": "a"}, {"loss": 1.0}))
    with pytest.raises(CorruptCheckpoint, match=rf"{path}:2: .*'key'"):
        Checkpoint(path)


def test_corrupt_checkpoint_is_a_value_error(tmp_path):
    assert issubclass(CorruptCheckpoint, ValueError)


# -- atomic_write -------------------------------------------------------------------------------------------------


class Injected(OSError):
    """The failure a test injects into one step of atomic_write."""


def _fail(*args, **kwargs):
    raise Injected("injected failure")


class FailingFile:
    """The file object os.fdopen returns, with a write that dies halfway through (after writing some bytes)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise Injected("disk full halfway through")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _inject(monkeypatch, step: str) -> None:
    if step == "write":
        real = os.fdopen
        monkeypatch.setattr(files.os, "fdopen", lambda *a, **k: FailingFile(real(*a, **k)))
    elif step == "fsync":
        monkeypatch.setattr(files.os, "fsync", _fail)
    elif step == "replace":
        monkeypatch.setattr(files.os, "replace", _fail)
    else:
        raise ValueError(step)


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_failure_at_any_step_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, step):
    path = tmp_path / "table.csv"
    path.write_text("old,content\n")
    _inject(monkeypatch, step)
    with pytest.raises(Injected):
        atomic_write(path, "new,content,that,is,longer\n" * 100)
    assert path.read_text() == "old,content\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_failure_on_a_first_write_leaves_no_file_at_all(tmp_path, monkeypatch, step):
    path = tmp_path / "sub" / "manifest.json"
    _inject(monkeypatch, step)
    with pytest.raises(Injected):
        atomic_write(path, b'{"seed": 0}')
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


def test_failing_folder_fsync_after_the_rename_still_leaves_the_new_file(tmp_path, monkeypatch):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    calls, real_fsync = [], os.fsync

    def fsync_file_then_fail(fd):
        calls.append(fd)
        if len(calls) > 1:  # the folder's fsync, after os.replace
            raise Injected("folder fsync failed")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync_file_then_fail)
    atomic_write(path, "new\n")
    assert len(calls) == 2
    assert path.read_text() == "new\n" and _leftovers(tmp_path) == []


def test_kill_between_write_and_replace_leaves_the_old_file(tmp_path, monkeypatch):
    """A KeyboardInterrupt (or any BaseException) at the rename is cleaned up like an error."""
    path = tmp_path / "table.csv"
    path.write_text("old\n")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new\n")
    assert path.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_success_replaces_the_content_and_keeps_the_permissions(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    path.chmod(0o640)
    assert atomic_write(path, "new\n") == path
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_a_new_file_is_world_readable_not_mkstemps_private_mode(tmp_path):
    path = atomic_write(tmp_path / "new.json", b"{}")
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("step", ["mkstemp", "fchmod"])
def test_failure_before_any_byte_is_written_keeps_the_old_file(tmp_path, monkeypatch, step):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    monkeypatch.setattr(files.tempfile if step == "mkstemp" else files.os, step, _fail)
    with pytest.raises(Injected):
        atomic_write(path, "new\n")
    assert path.read_text() == "old\n" and _leftovers(tmp_path) == []


# -- real kills (the HARNESS_CRASH_AT hook, in a subprocess that imports only harness.runs.folder) ------------------------


def _killed(tmp_path, code: str, crash_at: str) -> int:
    """Run ``code`` (with ``from harness.runs.folder import *`` and ``folder``) under the hook; its return code."""
    env = {**os.environ, files.CRASH_ENV: crash_at, "PYTHONPATH": str(files.REPO)}
    script = f"from pathlib import Path\nfrom harness.runs.checkpoints import *\nfrom harness.runs.files import *\nfrom harness.runs.folder import *\nfolder = Path({str(tmp_path)!r})\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=env, timeout=60).returncode


@pytest.mark.parametrize("phase, survives", [("torn", "old"), ("unrenamed", "old"), ("done", "new")])
def test_kill_inside_atomic_write_leaves_the_old_or_the_new_file(tmp_path, phase, survives):
    (tmp_path / "table.csv").write_text("old\n")
    code = "atomic_write(folder / 'other.csv', 'x\\n')\natomic_write(folder / 'table.csv', 'new\\n' * 1000)"
    assert _killed(tmp_path, code, f"table.csv:1:{phase}") == -signal.SIGKILL
    assert (tmp_path / "table.csv").read_text() == {"old": "old\n", "new": "new\n" * 1000}[survives]
    assert (tmp_path / "other.csv").read_text() == "x\n"  # the glob counts only the files it names
    temporaries = _leftovers(tmp_path)
    assert len(temporaries) == (phase != "done")  # a kill skips the cleanup: Run.open removes what is left
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == temporaries and _leftovers(tmp_path) == []


@pytest.mark.parametrize("phase, kept", [("torn", ["a"]), ("done", ["a", "b"])])
def test_kill_inside_a_checkpoint_append_loses_at_most_that_line(tmp_path, phase, kept):
    code = "ck = Checkpoint(folder / 'units.jsonl')\n" + "".join(f"ck.add({k!r}, loss=1.0)\n" for k in "abc")
    assert _killed(tmp_path, code, f"*.jsonl:2:{phase}") == -signal.SIGKILL
    text = (tmp_path / "units.jsonl").read_text()
    assert text.endswith("\n") == (phase == "done")  # torn: half of b's line, no newline
    assert sorted(Checkpoint(tmp_path / "units.jsonl").records) == kept


def test_crash_hook_is_inert_when_unset(tmp_path, monkeypatch):
    monkeypatch.delenv(files.CRASH_ENV, raising=False)
    Checkpoint(tmp_path / "units.jsonl").add("a", v=1)
    assert atomic_write(tmp_path / "t.csv", "x\n").read_text() == "x\n"
    assert len(Checkpoint(tmp_path / "units.jsonl")) == 1


# -- Run: a stale folder, another configuration, --fresh ----------------------------------------------------------


def _open(tmp_path, config: dict, **kwargs) -> Run:
    return Run.open(tmp_path, "tiny", "toy", "seed0/study", {"study": "study", **config}, **kwargs)


def test_run_open_removes_temporaries_a_killed_write_left(tmp_path):
    run = _open(tmp_path, {"n": 1})
    stale = [run.root / ".table.csv.abc123.tmp", run.root / "checkpoints" / ".losses.x.jsonl.def456.tmp"]
    for p in stale:
        p.parent.mkdir(exist_ok=True)
        p.write_text("half")
    (run.root / "table.csv").write_text("kept\n")
    _open(tmp_path, {"n": 1})
    assert not any(p.exists() for p in stale) and (run.root / "table.csv").read_text() == "kept\n"


def test_another_configuration_is_refused_without_fresh(tmp_path):
    run = _open(tmp_path, {"n": 1, "seed": 0})
    run.checkpoint("losses").add("ex1", loss=1.0)
    with pytest.raises(ConfigError, match=r"another configuration; changed: n: 1 -> 2.*--fresh"):
        _open(tmp_path, {"n": 2, "seed": 0})
    assert len(_open(tmp_path, {"n": 1, "seed": 0}).checkpoint("losses")) == 1  # the same config resumes


def test_fresh_discards_the_old_run_and_starts_empty(tmp_path):
    run = _open(tmp_path, {"n": 1})
    run.checkpoint("losses").add("ex1", loss=1.0)
    (run.root / "table.csv").write_text("old\n")
    run.manifest(seed=0, model="tiny", data="toy", analysis_hash=None)
    fresh = _open(tmp_path, {"n": 2}, fresh=True)
    assert sorted(p.name for p in fresh.root.iterdir()) == ["config.json"]
    assert json.loads((fresh.root / "config.json").read_text())["n"] == 2
    assert len(fresh.checkpoint("losses")) == 0 and fresh.rows_computed() == 0
    fresh.checkpoint("losses").add("ex1", loss=2.0)
    provenance = json.loads(fresh.manifest(seed=0, model="tiny", data="toy", analysis_hash=None).read_text())["provenance"]
    assert len(provenance) == 1 and provenance[0]["rows_computed"] == 1  # the old run's provenance went with it


def test_fresh_refuses_a_folder_the_harness_did_not_write_and_deletes_nothing(tmp_path):
    foreign = tmp_path / "tiny" / "toy" / "seed0" / "study"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("mine\n")
    with pytest.raises(ConfigError, match=r"--fresh refused: .* no config.json this harness wrote.*nothing was deleted"):
        _open(tmp_path, {"n": 1}, fresh=True)
    (foreign / "config.json").write_text("not json")
    with pytest.raises(ConfigError, match="--fresh refused"):
        _open(tmp_path, {"n": 1}, fresh=True)
    assert (foreign / "thesis.tex").read_text() == "mine\n"


def test_fresh_deletes_an_empty_folder_or_one_holding_the_harness_config(tmp_path):
    (tmp_path / "tiny" / "toy" / "seed0" / "study").mkdir(parents=True)
    _open(tmp_path, {"n": 1}, fresh=True)
    assert files.harness_wrote(_open(tmp_path, {"n": 1}).root)


@pytest.mark.parametrize("name", ["..", ".", "../..", "../../escaped", "/", "a/../../b", "..\\x", "\x00..",
                                  "line\nbreak", ".hidden", "\t"])
def test_model_and_data_names_never_lead_a_run_outside_the_results_root(tmp_path, name):
    results = tmp_path / "results"
    for model, data in [(name, "toy"), ("tiny", name), (name, name)]:
        run = Run.open(results, model, data, "seed0/study", {"study": "study"})
        assert files.inside(run.root, results) and run.root.resolve().is_relative_to(results.resolve())
        slugged = files.slug(name)
        assert slugged not in {"", ".", ".."} and not slugged.startswith(".")
        assert not any(c in slugged for c in "/\\") and slugged.isprintable()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_a_study_folder_outside_the_results_root_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="is not inside --results"):
        Run.open(tmp_path / "results", "m", "d", "../../../escaped", {"study": "study"})
    assert not any(tmp_path.iterdir())


def test_slug_keeps_ordinary_model_and_data_names():
    assert files.slug("meta-llama/Llama-3.1-8B") == "meta-llama--Llama-3.1-8B"
    assert files.slug("sotu") == "sotu" and files.slug("smollm2-135m") == "smollm2-135m"


def test_fresh_with_the_same_configuration_recomputes_everything(tmp_path):
    run = _open(tmp_path, {"n": 1})
    run.checkpoint("losses").add("ex1", loss=1.0)
    assert len(_open(tmp_path, {"n": 1}, fresh=True).checkpoint("losses")) == 0


# -- Run: sibling studies of one seed lend clean losses and artefacts ---------------------------------------------


def _study(tmp_path, study: str, **config) -> Run:
    return Run.open(tmp_path, "tiny", "toy", f"seed0/{study}", {"study": study, "n": 4, "seed": 0, **config})


def test_a_resume_that_measures_a_key_again_counts_it_as_computed(tmp_path):
    """A record extended under its old key (new head sets, a new outcome) is work this run did: its provenance says
    so; a resume that finds everything done adds no provenance entry."""
    first = _study(tmp_path, "ablation_comparison")
    first.checkpoint("losses").add("ex1|own", losses={"L0H0": 1.0})
    first.manifest(seed=0, model="tiny", data="toy", analysis_hash=None)
    again = _study(tmp_path, "ablation_comparison")
    assert again.rows_computed() == 0
    again.checkpoint("losses").add("ex1|own", losses={"L0H0": 1.0, "L1H0": 2.0})
    assert len(again.checkpoint("losses")) == 1 and again.rows_computed() == 1
    provenance = json.loads(again.manifest(seed=0, model="tiny", data="toy", analysis_hash=None).read_text())["provenance"]
    assert [p["rows_computed"] for p in provenance] == [1, 1]
    done = _study(tmp_path, "ablation_comparison")
    done.checkpoint("losses")
    assert len(json.loads(done.manifest(seed=0, model="tiny", data="toy", analysis_hash=None).read_text())["provenance"]) == 2


def test_a_sibling_with_the_same_prompt_settings_lends_its_rows_and_they_count_as_not_computed(tmp_path):
    ranking = _study(tmp_path, "pcs_ranking", k_profile=2, estimator="exact")
    ranking.checkpoint("clean_losses").add("ex1|own", loss=1.0)
    ranking.checkpoint("clean_losses").add("ex1|none", loss=2.0)
    ablation = _study(tmp_path, "ablation_comparison", k_profile=2, n_random=5)  # other study fields: not compared
    ablation.checkpoint("clean_losses").add("ex1|own", loss=9.0)  # its own row is kept, not overwritten
    assert ablation.adopt("clean_losses", ("n", "seed", "k_profile")) == 1
    ck = ablation.checkpoint("clean_losses")
    assert ck.get("ex1|own")["loss"] == 9.0 and ck.get("ex1|none")["loss"] == 2.0
    assert ablation.rows_computed() == 1  # the row it computed, not the lent one
    manifest = json.loads(ablation.manifest(seed=0, model="tiny", data="toy", analysis_hash=None).read_text())
    assert manifest["reused"] == {f"checkpoints/{ck.path.name}": "pcs_ranking"}
    assert len(Checkpoint(ck.path)) == 2  # written to its own folder: the run stands alone
    resumed = _study(tmp_path, "ablation_comparison", k_profile=2, n_random=5)  # a later attempt still knows the loan
    resumed.checkpoint("clean_losses")
    assert resumed.reused() == manifest["reused"]


def test_a_sibling_that_differs_on_a_prompt_setting_lends_nothing(tmp_path):
    ranking = _study(tmp_path, "pcs_ranking", k_profile=2)
    ranking.checkpoint("clean_losses").add("ex1|own", loss=1.0)
    other = _study(tmp_path, "ablation_comparison", k_profile=4)
    assert other.adopt("clean_losses", ("n", "seed", "k_profile")) == 0 and not other.reused()
    assert len(other.checkpoint("clean_losses")) == 0


def test_a_siblings_torn_last_line_is_skipped_and_its_file_left_untouched(tmp_path):
    ranking = _study(tmp_path, "pcs_ranking")
    ranking.checkpoint("clean_losses").add("ex1|own", loss=1.0)
    path = ranking.checkpoint("clean_losses").path
    with open(path, "a") as f:
        f.write('{"key": "ex2|own", "loss": 1.')  # the sibling is being killed (or still writing)
    before = path.read_text()
    other = _study(tmp_path, "dps_decoding")
    assert other.adopt("clean_losses", ("n", "seed")) == 1 and path.read_text() == before


def test_a_remote_sibling_lends_nothing_and_a_remote_run_borrows_nothing(tmp_path):
    ranking = _study(tmp_path, "pcs_ranking")
    ranking.checkpoint("clean_losses").add("ex1|own", loss=1.0)
    ranking.command = "python -m studies.pcs_ranking --remote ndif"
    ranking.manifest(seed=0, model="tiny", data="toy", analysis_hash=None)
    assert _study(tmp_path, "ablation_comparison").adopt("clean_losses", ("n", "seed")) == 0
    ranking.command = "python -m studies.pcs_ranking --remote local"  # a resume here: the folder still holds
    ranking.manifest(seed=0, model="tiny", data="toy", analysis_hash=None)                  # rows the remote run computed
    assert _study(tmp_path, "ablation_comparison").adopt("clean_losses", ("n", "seed")) == 0
    local = _study(tmp_path / "b", "pcs_ranking")
    local.checkpoint("clean_losses").add("ex1|own", loss=1.0)
    local.command = "python -m studies.pcs_ranking --remote local"  # nnsight's serialization check: runs here
    local.manifest(seed=0, model="tiny", data="toy", analysis_hash=None)
    assert _study(tmp_path / "b", "ablation_comparison").adopt("clean_losses", ("n", "seed")) == 1
    remote = _study(tmp_path, "dps_decoding")
    remote.borrow = False
    assert remote.adopt("clean_losses", ("n", "seed")) == 0 and remote.siblings() == []


def test_a_sibling_lends_an_artefact_with_the_same_settings_and_it_is_not_recomputed(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"mean": 0.5}
    first = _study(tmp_path, "pcs_ranking")
    assert first.artifact("mean_reference", {"seed": 0, "k": 2}, compute) == {"mean": 0.5}
    second = _study(tmp_path, "ablation_comparison")
    assert second.artifact("mean_reference", {"seed": 0, "k": 2}, compute) == {"mean": 0.5} and len(calls) == 1
    assert list(second.reused()) == [f"artifacts/{next((first.root / 'artifacts').iterdir()).name}"]
    assert second.artifact("mean_reference", {"seed": 0, "k": 3}, compute) == {"mean": 0.5} and len(calls) == 2


def test_a_checkout_is_dirty_for_changed_code_not_for_the_outputs_studies_write(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "harness.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    assert provenance.git_commit()["dirty"] is False
    (tmp_path / "results" / "summary.md").write_text("rewritten by a study\n")
    assert provenance.git_commit()["dirty"] is False
    (tmp_path / "harness.py").write_text("x = 2\n")
    assert provenance.git_commit()["dirty"] is True


def test_a_start_that_fails_on_its_data_leaves_no_folder_and_the_corrected_try_runs(tiny_model_dir, tmp_path):
    """Model and data load before the run folder exists: a missing data file leaves nothing under --results, so the
    corrected command is not refused as "another configuration" (it used to find the failed try's config.json)."""
    from harness.data import DataError
    from harness.study.lifecycle import start
    from studies.signal import SignalConfig

    results = tmp_path / "results"
    common = ["--model", tiny_model_dir, "--results", str(results), "--n", "6", "--max-prompt-tokens", "96",
              "--max-target-tokens", "8", "--n-boot", "50", "--n-perm", "50", "--framing", "prefill"]
    with pytest.raises((DataError, FileNotFoundError, ConfigError)):
        start(SignalConfig.from_argv([*common, "--data", str(tmp_path / "missing.jsonl")]), ablates=False)
    assert not results.exists()
    setup, run = start(SignalConfig.from_argv([*common, "--data", "debates2016", "--no-by-user"]), ablates=False)
    assert (run.root / "config.json").exists() and setup.signal


def test_check_refuses_another_config_and_writes_nothing(tmp_path):
    root = Run.folder(tmp_path, "m", "d", "seed0/study")
    Run.check(root, {"n": 1})  # no folder yet: nothing to refuse
    assert not root.exists()
    Run.open_folder(root, {"n": 1})
    with pytest.raises(ConfigError, match="n: 1 -> 2"):
        Run.check(root, {"n": 2})
    assert json.loads((root / "config.json").read_text()) == {"n": 1}
