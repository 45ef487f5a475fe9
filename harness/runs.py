"""Study runs: result folders, atomic writes, manifests and resumable checkpoints.

Every study writes to ``results/<model>/<data>/<study>/``. Files are written to a temporary name and renamed, so a
killed run never leaves a half-written table. Per-unit work (an example, a head set) is appended to a JSONL
checkpoint as soon as it finishes; a rerun with the same configuration skips what is there.

Test hook (``tests/test_crash_resume.py``), inert unless the variable is set: ``HARNESS_CRASH_AT=<glob>:<n>:<phase>``
SIGKILLs the process at the ``n``-th durable write (``atomic_write`` or a checkpoint append) to a file whose name
matches ``<glob>``: ``torn`` halfway through its bytes, ``unrenamed`` when ``atomic_write``'s temporary is complete but
not yet renamed (for a checkpoint append: the line is complete), ``done`` once the write is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .analysis import current_hash

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "nnsight", "numpy", "scipy", "statsmodels", "datasets", "bm25s", "rouge-score",
            "preference-heads-harness")


def slug(text: str) -> str:
    """A folder-safe name: ``meta-llama/Llama-3.1-8B`` -> ``meta-llama--Llama-3.1-8B``; a path -> its stem. Only
    letters, digits, ``.``, ``_`` and ``-`` survive and leading dots go, so no name is ``..`` or a hidden folder."""
    if os.path.sep in text and os.path.exists(text):
        text = Path(text).stem
    return re.sub(r"^[.-]+|-+$", "", re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--"))) or "unnamed"


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` lies strictly below ``root``, judged on the absolute, normalised paths (``..`` resolved)."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return path != root and path.is_relative_to(root)


def harness_wrote(folder: Path) -> bool:
    """Whether ``folder`` is empty or a run folder this harness wrote (its ``config.json`` a JSON object): the only
    folders ``--fresh`` may delete."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    if not any(folder.iterdir()):
        return True
    try:
        return isinstance(json.loads((folder / "config.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and ``os.replace``.

    Whatever fails (the write, the fsync, the rename, a kill), ``path`` holds either its old or its new content; the
    temporary (``.<name>.<random>.tmp``) is removed, except after a kill, which leaves it for ``Run.open`` to remove.
    The new file keeps the old one's permissions (0o644 when there was none).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp creates 0o600
            _durable_write(f, data.encode() if isinstance(data, str) else data, path.name)
        _crash_point("unrenamed")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the rename itself durable; best effort (not every OS opens folders)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    _crash_point("done")
    return path


TEMP_SUFFIX = ".tmp"  # atomic_write's temporaries: ``.<name>.<random>.tmp``


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries a killed ``atomic_write`` left below ``folder`` (never a finished file)."""
    stale = sorted(Path(folder).rglob(f".*{TEMP_SUFFIX}"))
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


CRASH_ENV = "HARNESS_CRASH_AT"  # the test hook of the module docstring
_crash = {"writes": 0, "armed": False}  # durable writes that matched the hook's glob, and whether the n-th is running


def _durable_write(f: Any, data: bytes, name: str) -> None:
    """``f.write(data)``, flush and fsync: the write every file of a run goes through (and the test hook's counter)."""
    spec = os.environ.get(CRASH_ENV)
    if spec:
        glob, n, _ = spec.rsplit(":", 2)
        _crash["writes"] += fnmatch(name, glob)
        _crash["armed"] = fnmatch(name, glob) and _crash["writes"] == int(n)
        if _crash["armed"] and spec.endswith(":torn"):
            data = data[: len(data) // 2]
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
    _crash_point("torn")


def _crash_point(*phases: str) -> None:
    """SIGKILL this process when the test hook's write is the one running and ``phases`` holds its phase."""
    if _crash["armed"] and os.environ.get(CRASH_ENV, "").rsplit(":", 1)[-1] in phases:
        os.kill(os.getpid(), signal.SIGKILL)


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, sort_keys=False, default=_jsonable) + "\n")


def write_csv(path: Path, frame: Any) -> Path:
    """Write a pandas DataFrame atomically."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return atomic_write(path, buf.getvalue())


def save_figure(path: Path, fig: Any) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


OUTPUT_PATHS = ("results", "paper/generated", "paper/main.pdf")  # what studies write into the checkout: not code


def git_commit() -> dict:
    """Commit hash of the harness checkout and whether the tree had uncommitted changes to anything but the outputs
    studies write into it (``OUTPUT_PATHS``: a study that rewrote ``results/summary.md`` leaves the code as
    committed, so the next study of a chain still runs from a clean commit)."""
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": run("rev-parse", "HEAD") or "unknown",
            "dirty": bool(run("status", "--porcelain", "--untracked-files=no", "--", ".",
                              *(f":(exclude){p}" for p in OUTPUT_PATHS)))}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def data_hash(examples: Iterable[Any]) -> str:
    """sha256 over the examples' ids, inputs, outputs and profiles: identifies the exact data a run used."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.example_id, ex.user_id, ex.input, ex.output, [p.text for p in ex.profile]]).encode())
    return h.hexdigest()


def source_data(folders: Iterable[Path]) -> dict[str, str]:
    """Each finished run folder's data hash, read off its manifest: what a run that reads other runs rather than data
    (a summary across seeds or planted families) records as its data."""
    return {str(p): json.loads((Path(p) / "manifest.json").read_text()).get("data_sha256") for p in folders}


def hash_of(hashes: dict[str, str]) -> str:
    """One hash over named data hashes (order-free): such a summary's ``data_sha256``."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


@dataclass
class Run:
    """One study's output folder and its resumable state, keyed by the study's numbers config."""

    root: Path
    config: dict  # the numbers config (what determines the numbers)
    started: float = field(default_factory=time.time)
    code: dict = field(default_factory=git_commit)  # the checkout when the run started (the code that ran)
    _opened: dict = field(default_factory=dict)  # checkpoint name -> (Checkpoint, rows it appended but did not compute)
    borrow: bool = True  # may take units from sibling runs (start() turns it off for a remote backend)
    command: str = ""  # the study command (default: this process's command line)
    note: str = ""  # a warning every table of the run carries (e.g. no measured user-specific signal)

    @property
    def config_hash(self) -> str:
        from .config import config_hash

        return config_hash(self.config)

    @classmethod
    def open(cls, results: str | Path, model: str, data: str, study: str, config: dict, *,
             fresh: bool = False, command: str = "") -> "Run":
        """Open ``results/<model>/<data>/<study>``. A previous run with another numbers config is refused, naming
        every changed field (``fresh=True`` discards the old folder), so resumed work is never mixed across settings."""
        from .config import ConfigError

        root = Path(results) / slug(model) / slug(data) / study  # study may hold a subfolder: seed0/pcs_ranking
        if not inside(root, results):
            raise ConfigError(f"the run folder {root} is not inside --results {results}; nothing was written")
        return cls.open_folder(root, config, fresh=fresh, command=command)

    @classmethod
    def open_folder(cls, root: str | Path, config: dict, *, fresh: bool = False, command: str = "") -> "Run":
        """Open the run folder ``root`` as :meth:`open` does (another numbers config refused field by field,
        ``fresh=True`` discards it, a killed write's temporaries removed): for studies whose folder is not
        ``results/<model>/<data>/<study>`` (one that reads every model's results)."""
        from .config import ConfigError, RunMismatch, config_diff

        root = Path(root)
        if fresh and (root.exists() or root.is_symlink()):
            if not harness_wrote(root):
                raise ConfigError(f"--fresh refused: {root} is not empty and holds no config.json this harness wrote, "
                                  "so it is no run folder of ours; nothing was deleted")
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(root)  # a run killed inside atomic_write leaves its temporary
        config = json.loads(json.dumps(config, default=_jsonable))
        run = cls(root, config, command=command)
        previous = root / "config.json"
        if previous.exists():
            old = json.loads(previous.read_text())
            changed = config_diff(old, config)
            if changed:
                raise RunMismatch(f"{root} holds a run with another configuration; changed: {'; '.join(changed)}. "
                                  "Rerun with --fresh to discard it, or use another --results folder")
        write_json(previous, config)
        return run

    def path(self, name: str) -> Path:
        return self.root / name

    def checkpoint(self, name: str) -> "Checkpoint":
        """The JSONL checkpoint ``checkpoints/<name>.<config hash>.jsonl``: rows of another config are never read."""
        if name not in self._opened:
            ck = Checkpoint(self.root / "checkpoints" / f"{name}.{self.config_hash}.jsonl")
            self._opened[name] = (ck, 0)
        return self._opened[name][0]

    def rows_computed(self) -> int:
        """Checkpoint rows this run wrote, new keys and keys it measured again (a record extended with new head sets
        or outcomes); 0 when a resume found everything done. Rows adopted from sibling runs are not counted."""
        return sum(ck.appended - lent for ck, lent in self._opened.values())

    def artifact(self, name: str, depends: dict, compute: Any) -> Any:
        """A derived artefact (baseline scores, style vectors, reference means) keyed by the settings it depends on:
        ``artifacts/<name>.<hash(depends)>.json`` holds ``compute()``'s JSON value; other settings, another file.
        A sibling run (:meth:`siblings`) that already holds the same file lends it: it is copied here, not recomputed,
        and the file (and the manifest's ``reused``) says from where."""
        from .config import config_hash

        path = self.root / "artifacts" / f"{name}.{config_hash(depends)}.json"
        if not path.exists():
            lent = sibling_artifact(self.siblings(), name, depends)
            if lent is not None:  # the loan is recorded in the file
                write_json(path, {**json.loads(lent.read_text()), "lent_by": lent.parent.parent.name})
        if path.exists():
            return json.loads(path.read_text())["value"]
        value = json.loads(json.dumps(compute(), default=_jsonable))
        write_json(path, {"depends": depends, "value": value})
        return value

    def reused(self) -> dict[str, str]:
        """What this run took from sibling runs instead of computing it: artefact file or checkpoint -> the lending
        folder(s), read from the loans recorded in the files (``lent_by``)."""
        out = {}
        for path in sorted((self.root / "artifacts").glob("*.json")):
            lender = json.loads(path.read_text()).get("lent_by")
            if lender:
                out[f"artifacts/{path.name}"] = lender
        for ck, _ in self._opened.values():
            lenders = sorted({r["lent_by"] for r in ck.values() if "lent_by" in r})
            if lenders:
                out[f"checkpoints/{ck.path.name}"] = ", ".join(lenders)
        return out

    def siblings(self) -> list[Path]:
        """The other run folders beside this one (same model, data and seed: ``seed0/pcs_ranking`` beside
        ``seed0/ablation_comparison``) whose units this run may take instead of recomputing them. A folder whose
        manifest records a remote run is left out, and a remote run (``borrow`` off) has none: one backend's numbers
        are never mixed into another's."""
        return sibling_folders(self.root) if self.borrow else []

    def adopt(self, name: str, fields: Sequence[str]) -> int:
        """Copy into checkpoint ``name`` the rows that sibling runs lend (:func:`sibling_rows`); rows this run
        already has are kept. Each adopted row records ``lent_by`` (the sibling's folder), so a resumed or killed run
        still knows what it did not compute. Returns the rows adopted."""
        ck, adopted = self.checkpoint(name), 0
        for key, (rec, lender) in sibling_rows(self.siblings(), name, self.config, fields).items():
            if key not in ck:
                ck.add(key, **{k: v for k, v in rec.items() if k not in ("key", "lent_by")}, lent_by=lender)
                adopted += 1
        self._opened[name] = (ck, self._opened[name][1] + adopted)  # adopted rows are not rows this run computed
        return adopted

    def manifest(self, *, seed: int, model: str, data: str, split: dict | None = None, extra: dict | None = None,
                 examples: Iterable[Any] = (), data_sha256: str | None = None) -> Path:
        """Write ``manifest.json``: data and its hash, split, config and its hash, versions, and the provenance list.

        The data hash is over ``examples``; a run that reads other runs instead passes ``data_sha256`` (e.g.
        :func:`hash_of` over :func:`source_data`), never the hash of no examples.

        ``analysis_hash`` is the content hash of the declared analysis (``analysis.toml``) the run was made under.

        ``provenance`` gets one entry per run that computed rows (commit, dirty flag, command, start, end, rows);
        a resume appends to it and never erases it. ``rendered_by`` is the run that last wrote the tables.
        """
        path = self.root / "manifest.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        provenance = old.get("provenance") or ([_legacy_entry(old)] if old.get("commit") else [])
        now = time.time()
        this = {"commit": self.code["commit"], "dirty": self.code["dirty"], "command": self.command or command_line(),
                "started": _iso(self.started), "finished": _iso(now), "seconds": round(now - self.started, 1),
                "rows_computed": self.rows_computed()}
        if this["rows_computed"] or not provenance:
            provenance.append(this)
        info = {
            "command": provenance[-1]["command"],  # the run that computed the latest rows
            "seed": seed,
            "model": model,
            "data": data,
            "data_sha256": data_hash(examples) if data_sha256 is None else data_sha256,
            "split": split or {},
            "config": self.config,
            "config_hash": self.config_hash,
            "analysis_hash": current_hash(),
            "versions": versions(),
            "platform": platform.platform(),
            "provenance": provenance,
            "rendered_by": {**this, "commit_at_finish": git_commit()["commit"]},
            **({"reused": reused} if (reused := self.reused()) else {}),
            **(extra or {}),
        }
        return write_json(path, info)


def sibling_folders(root: Path) -> list[Path]:
    """The run folders beside ``root`` (which need not exist yet) that may lend it units: each holds a
    ``config.json`` and no manifest of a remote run."""
    parent = Path(root).parent
    if not parent.is_dir():
        return []
    return [folder for folder in sorted(p for p in parent.iterdir() if p.is_dir() and p != Path(root))
            if (folder / "config.json").exists() and not _ran_remotely(folder)]


def sibling_artifact(siblings: Iterable[Path], name: str, depends: dict) -> Path | None:
    """The first sibling's file of artefact ``name`` computed under ``depends`` (:meth:`Run.artifact`), or None."""
    from .config import config_hash

    want = json.loads(json.dumps(depends, default=_jsonable))
    for sibling in siblings:
        lent = sibling / "artifacts" / f"{name}.{config_hash(depends)}.json"
        if lent.exists() and json.loads(lent.read_text()).get("depends") == want:
            return lent
    return None


def sibling_rows(siblings: Iterable[Path], name: str, config: dict, fields: Sequence[str]) -> dict[str, tuple]:
    """The rows of checkpoint ``name`` held by the ``siblings`` (run folders, :meth:`Run.siblings`) whose numbers
    config agrees with ``config`` on ``fields`` (the settings those rows depend on, e.g. the clean losses' model,
    data, split and prompt settings): key -> (record, the lending folder's name), the first lender's row for each
    key. The files are only read: a torn last line (a run killed, or still writing) is left out, not repaired."""
    from .config import config_hash

    absent = object()  # a field a config leaves out (an option at its ``added_as`` value) matches only its absence
    mine, out = {f: config.get(f, absent) for f in fields}, {}
    for sibling in siblings:
        theirs = json.loads((sibling / "config.json").read_text())
        if {f: theirs.get(f, absent) for f in fields} != mine:
            continue
        lent = sibling / "checkpoints" / f"{name}.{config_hash(theirs)}.jsonl"
        if not lent.exists():
            continue
        for line in lent.read_text().split("\n")[:-1]:  # a torn last line has no newline: left out
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if isinstance(rec, dict) and "key" in rec and rec["key"] not in out:
                    out[rec["key"]] = (rec, sibling.name)
    return out


def _ran_remotely(folder: Path) -> bool:
    """Whether a run folder's manifest records a command sent to a remote backend (a ``--remote`` value that does
    not run here, ``remote.runs_here``)."""
    from .remote import RemoteSetupError, runs_here

    path = folder / "manifest.json"
    if not path.exists():
        return False
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return True  # unreadable: not lent
    for entry in manifest.get("provenance") or [manifest]:
        words = str(entry.get("command") or "").split()
        for i, word in enumerate(words):
            value = word.split("=", 1)[1] if word.startswith("--remote=") else \
                words[i + 1] if word == "--remote" and i + 1 < len(words) else None
            if value is None:
                continue
            try:
                if not runs_here(value):
                    return True
            except RemoteSetupError:  # a value this harness cannot read: not lent
                return True
    return False


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _legacy_entry(old: dict) -> dict:
    """The provenance entry of a manifest written before provenance lists existed."""
    return {k: old.get(k) for k in ("commit", "dirty", "command", "started", "finished", "seconds")} | {
        "rows_computed": None}


def relative_path(text: str) -> str:
    """``text`` relative to the repository when it is a path inside it (manifests hold no machine's absolute paths)."""
    try:
        p = Path(text)
        if p.is_absolute() and p.resolve().is_relative_to(REPO):
            return str(p.resolve().relative_to(REPO)) or "."
    except (OSError, ValueError):
        pass
    return text


def command_line() -> str:
    """The command that is running, as ``python -m <module> <args>`` with repository paths made relative."""
    args = [relative_path(a) for a in sys.argv[1:]]
    return " ".join(["python -m", _module_name(), *args])


def _module_name() -> str:
    return module_name(sys.modules.get("__main__"), fallback=sys.argv[0] if sys.argv else "?")


def module_name(module: Any, fallback: str = "?") -> str:
    """What ``python -m`` needs to run ``module``: its import name, also when it was started as a file path.

    ``python -m studies.x`` leaves the import name on ``__main__.__spec__``; ``python studies/x.py`` (or a runner that
    executes the file) leaves no spec, so the name comes from the file's path in the repository (``studies.x``), never
    the ``__main__`` that would not rerun.
    """
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name
    file = getattr(module, "__file__", None)
    if file:
        path = Path(file).resolve()
        if path.suffix == ".py" and path.is_relative_to(REPO):
            return ".".join(path.relative_to(REPO).with_suffix("").parts)
        return str(path)
    return fallback


class CorruptCheckpoint(ValueError):
    """A complete checkpoint line that is not a record: skipping it would silently drop finished work."""


class Checkpoint:
    """Append-only JSONL of finished units keyed by ``key``.

    A torn last line (killed mid-write: no closing newline) is dropped and the file repaired, so appending continues
    cleanly; that unit is simply redone. Any complete line that does not parse is a ``CorruptCheckpoint`` naming the
    file and line, never skipped.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.appended = 0  # rows this object wrote (a key written again counts again)
        if self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):  # killed mid-write: drop the torn tail before appending again
                text = text[: text.rfind("\n") + 1]
                atomic_write(self.path, text)
            for number, line in enumerate(text.split("\n")[:-1], start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorruptCheckpoint(
                        f"{self.path}:{number}: corrupt checkpoint line ({e.msg}): {line[:80]!r}; "
                        "repair or delete that line, or rerun with --fresh") from None
                if not isinstance(rec, dict) or "key" not in rec:
                    raise CorruptCheckpoint(f"{self.path}:{number}: checkpoint line is not a record with a 'key': "
                                            f"{line[:80]!r}; repair or delete the line, or rerun with --fresh")
                self.records[rec["key"]] = rec

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict:
        return self.records[key]

    def add(self, key: str, **values: Any) -> dict:
        rec = {"key": key, **json.loads(json.dumps(values, default=_jsonable))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            _durable_write(f, (json.dumps(rec) + "\n").encode(), self.path.name)
        _crash_point("unrenamed", "done")  # an append has no rename: its line is complete
        self.records[key] = rec
        self.appended += 1
        return rec

    def values(self) -> Iterator[dict]:
        return iter(self.records.values())
