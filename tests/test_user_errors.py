"""Every user error on the command line is one ``error: …`` line naming the problem, exit status 2, and nothing
written: bad options, data, model names, remote settings and results folders, each run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # ~20 subprocesses, each importing torch and nnsight


def write_inputs(folder: Path) -> dict[str, str]:
    """The bad files the table names: invalid JSON, a one-user corpus, a plain file where a folder should be."""
    (folder / "bad.jsonl").write_text('{"bad json\n')
    rows = [{"id": f"u1-{i}", "user_id": "u1", "input": "Write about the economy today, please.",
             "output": "The economy grew strongly this year, and jobs followed it.", "doc_id": f"d{i}",
             "profile": [{"text": "Taxes should be lower for the working families of the country.", "doc_id": "d9"}]}
            for i in range(4)]
    (folder / "one_user.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "a_file").write_text("not a folder\n")
    (folder / "empty_dir").mkdir()
    return {"bad": str(folder / "bad.jsonl"), "one_user": str(folder / "one_user.jsonl"),
            "file": str(folder / "a_file"), "empty_dir": str(folder / "empty_dir")}


# (case id, study flags, what the one line must say); {tiny}, {bad}, ... are filled per run
CASES = [
    ("unknown flag", ["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    ("unknown preset", ["--preset", "nope"], "invalid choice: 'nope'"),
    ("not a number", ["--n-boot", "abc"], "invalid int value: 'abc'"),
    ("negative seed", ["--seed", "-1"], "--seed must be >= 0"),
    ("one example", ["--n", "1"], "--n must be >= 2"),
    ("zero heads", ["--k-heads", "0"], "--k-heads must be positive"),
    ("eval fraction", ["--eval-fraction", "1.5"], "--eval-fraction must be in (0, 1)"),
    ("unknown model", ["--model", "no-such-model"], "unknown model 'no-such-model'"),
    ("folder is no model", ["--model", "{empty_dir}"], "no model folder"),
    ("remote scheme", ["--remote", "ftp://host"], "must start with https://"),
    ("remote credentials", ["--remote", "https://user:secret@example.org"], "credentials"),
    ("remote key", ["--remote", "ndif"], "NDIF_API_KEY"),
    ("missing data", ["--model", "{tiny}", "--data", "{missing}"], "no such file"),
    ("invalid json", ["--model", "{tiny}", "--data", "{bad}"], "invalid JSON"),
    ("one user", ["--model", "{tiny}", "--data", "{one_user}", "--n", "4"], "at least 2 users"),
    ("unknown corpus", ["--model", "{tiny}", "--data", "nosuchcorpus"], "unknown dataset 'nosuchcorpus'"),
    ("planted family", ["--model", "{tiny}", "--data", "planted:sotu:nofamily"], "unknown planted family"),
    ("too many heads", ["--model", "{tiny}", "--k-heads", "100"], "more than the model's 12 heads"),
    ("results is a file", ["--results", "{file}"], "cannot make the run folder"),
]


def run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    env.pop("NDIF_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "studies.signal", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def assert_one_error_line(done: subprocess.CompletedProcess, says: str) -> None:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and says in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("case,flags,says", CASES, ids=[c[0] for c in CASES])
def test_a_user_error_is_one_line_exit_2_and_writes_nothing(case, flags, says, tmp_path, tiny_model_dir):
    paths = write_inputs(tmp_path) | {"tiny": tiny_model_dir, "missing": str(tmp_path / "missing.jsonl")}
    results = tmp_path / "results"
    flags = [f.format(**paths) for f in flags]
    if "--results" not in flags:
        flags += ["--results", str(results)]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_one_error_line(run(flags), says)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no results folder, nothing else
    assert Path(paths["file"]).read_text() == "not a folder\n"


@pytest.mark.parametrize("fresh", [False, True], ids=["another config", "fresh on a folder not ours"])
def test_a_refused_results_folder_is_one_line_and_left_as_it_was(fresh, tmp_path):
    folder = tmp_path / "results" / "smollm2-135m" / "debates2016" / "seed0" / "signal"
    folder.mkdir(parents=True)
    kept = folder / ("config.json" if not fresh else "notes.txt")
    kept.write_text(json.dumps({"study": "signal", "n": 7}) if not fresh else "mine\n")
    done = run(["--model", "smollm2-135m", "--data", "debates2016", "--results", str(tmp_path / "results"),
                *(["--fresh"] if fresh else [])])
    assert_one_error_line(done, "--fresh refused" if fresh else "holds a run with another configuration")
    assert sorted(p.name for p in folder.iterdir()) == [kept.name] and kept.read_text() in ("mine\n",
                                                                                           json.dumps({"study": "signal", "n": 7}))


def test_verbose_shows_the_traceback_instead(tmp_path):
    done = run(["--seed", "-1", "--verbose", "--results", str(tmp_path / "r")])
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr
