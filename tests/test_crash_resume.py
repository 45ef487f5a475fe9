"""Crash safety end to end: each study, SIGKILLed in a subprocess at seeded points and rerun, ends with the results of
a run that was never interrupted.

The kills use the test hook of ``harness.runs.folder`` (``HARNESS_CRASH_AT=<glob>:<n>:<phase>``), three per study, each
attempt resuming from what the previous one left: halfway through a seeded checkpoint line; halfway through, or between
the write and the rename of, a seeded table or plot (during the resumed attempt); between the manifest's write and its
rename (everything else done). A last rerun finishes the study. The uninterrupted run is made in process first, its
writes logged, so each kill point is one its attempt reaches. 9 subprocesses: 3.3 min on 2 busy cores (2 min CPU).

Compared with the uninterrupted run (same results path, so absolute paths inside files agree): every file under the
results root byte for byte (checkpoints, artefacts, config.json, ranking.json, CSV / Markdown / LaTeX tables, PNG
plots, JSON outputs, summary.md), and no file more or less (a killed write's temporary included), except
``manifest.json``, which is compared without ``provenance`` and ``rendered_by``: when each attempt ran, for how long and
how many rows it computed, which record the interruption by design.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

from harness.runs import files
from harness.runs.files import CRASH_ENV, REPO, slug
from studies import ablation_comparison, dps_decoding, pcs_ranking

STUDIES = {"pcs_ranking": (pcs_ranking, ["--retrieval-prompts", "1", "--induction-sequences", "2", "--families",
                                         "specific_pcs", "retrieval", "--check-exact", "1"]),
           "ablation_comparison": (ablation_comparison, ["--n-random", "3", "--n-random-other", "1", "--n-unmatched",
                                                         "1", "--max-new-tokens", "2", "--n-damage", "6"]),
           "dps_decoding": (dps_decoding, ["--max-new-tokens", "2", "--gammas", "1.0", "--style-alphas", "1.0",
                                           "--style-layers", "1"])}
TABLE_KINDS = ("*.csv", "*.md", "*.tex", "*.png")
UNSTABLE_MANIFEST_KEYS = ("provenance", "rendered_by")  # when and how long each attempt ran, rows it computed


def common(model: str, results: Path) -> list[str]:
    return ["--preset", "quick", "--model", model, "--data", "conventions2012", "--profile-docs", "any", "--n", "6", "--results", str(results),
            "--max-prompt-tokens", "96", "--max-target-tokens", "4", "--k-heads", "2", "--n-boot", "50",
            "--n-perm", "50"]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path; manifests without their per-attempt fields."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "manifest.json":
            manifest = json.loads(data)
            for key in UNSTABLE_MANIFEST_KEYS:
                manifest.pop(key)
            data = json.dumps(manifest, indent=1).encode()
        out[str(path.relative_to(root))] = data
    return out


def assert_same(got: Path, want: Path, what: str) -> None:
    a, b = snapshot(got), snapshot(want)
    assert sorted(a) == sorted(b), f"{what}: files differ: extra {sorted(set(a) - set(b))}, " \
                                   f"missing {sorted(set(b) - set(a))}"
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"{what}: not byte-identical to the uninterrupted run: {differ}"


def kill_points(study: str, writes: list[str]) -> list[str]:
    """Seeded kill points for one study, from the file names of its uninterrupted run's durable writes, in order
    (each point is reached by its attempt: every attempt writes every table, plot and the manifest again)."""
    rng = random.Random(f"crash-resume:{study}")
    count = lambda glob: sum(fnmatch(name, glob) for name in writes)  # noqa: E731
    kind = rng.choice(TABLE_KINDS)
    return [f"*.jsonl:{rng.randint(1, count('*.jsonl'))}:torn",  # the first attempt: a checkpoint line half on disk
            f"{kind}:{rng.randint(1, count(kind))}:{rng.choice(['torn', 'unrenamed'])}",
            "manifest.json:1:unrenamed"]  # the last write of a study: everything else is on disk


def attempt(study: str, args: list[str], crash_at: str) -> int:
    """Run ``study`` in a subprocess that SIGKILLs itself at ``crash_at``; its return code."""
    env = {**os.environ, CRASH_ENV: crash_at, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", f"studies.{study}", *args], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode in (-signal.SIGKILL, 0), f"{study} at {crash_at}: {done.stderr[-3000:]}"
    return done.returncode


def test_studies_killed_at_seeded_points_resume_to_byte_identical_results(tiny_model_dir, tmp_path, monkeypatch):
    results, reference = tmp_path / "results", tmp_path / "reference"
    args = common(tiny_model_dir, results)
    writes, durable_write = {}, files.durable_write
    for study, (module, extra) in STUDIES.items():  # the uninterrupted run, in process, its writes logged
        names = writes[study] = []
        monkeypatch.setattr(files, "durable_write", lambda f, data, name, names=names: (
            names.append(name), durable_write(f, data, name)))
        module.main(args + extra)
    monkeypatch.setattr(files, "durable_write", durable_write)
    shutil.move(results, reference)
    seed_dir = Path(slug(tiny_model_dir), "conventions2012", "seed0")

    killed = {}
    for study, (module, extra) in STUDIES.items():
        killed[study] = [point for point in kill_points(study, writes[study])
                         if attempt(study, args + extra, point) == -signal.SIGKILL]
        module.main(args + extra)  # the rerun that finishes it
        assert_same(results / seed_dir / study, reference / seed_dir / study, study)
    assert_same(results, reference, "results root")
    print("killed at:", json.dumps(killed, indent=1))
    assert all(len(points) == 3 for points in killed.values()), f"a kill point was never reached: {killed}"
