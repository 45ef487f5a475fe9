"""Study run folders: ``results/<model>/<data>/<study>/`` keyed by the study's numbers config (another config is
refused), their checkpoints and artefacts, units lent by sibling runs, and the manifest."""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError, RunMismatch
from ..models.remote import RemoteSetupError, runs_here
from .checkpoints import Checkpoint
from .files import (harness_wrote, inside, jsonable, remove_stale_temporaries, slug,
                    write_json)
from .provenance import command_line, config_diff, config_hash, data_hash, git_commit, iso, legacy_entry, versions


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
        return config_hash(self.config)

    @staticmethod
    def folder(results: str | Path, model: str, data: str, study: str) -> Path:
        """``results/<model>/<data>/<study>`` (study may hold a subfolder: seed0/pcs_ranking), refused unless it is
        inside ``results``."""
        root = Path(results) / slug(model) / slug(data) / study
        if not inside(root, results):
            raise ConfigError(f"the run folder {root} is not inside --results {results}; nothing was written")
        return root

    @staticmethod
    def check(root: str | Path, config: dict, *, fresh: bool = False) -> None:
        """Refuse, writing nothing, what :meth:`open_folder` would refuse: a folder holding another numbers config
        (each changed field named) unless ``fresh``, and ``fresh`` on a folder this harness did not write. A study
        checks before it loads model and data, and opens the folder after, so a failed start leaves nothing."""
        root = Path(root)
        if fresh:
            if (root.exists() or root.is_symlink()) and not harness_wrote(root):
                raise ConfigError(f"--fresh refused: {root} is not empty and holds no config.json this harness "
                                  "wrote, so it is no run folder of ours; nothing was deleted")
            return
        previous = root / "config.json"
        if previous.exists():
            changed = config_diff(json.loads(previous.read_text()), json.loads(json.dumps(config, default=jsonable)))
            if changed:
                raise RunMismatch(f"{root} holds a run with another configuration; changed: {'; '.join(changed)}. "
                                  "Rerun with --fresh to discard it, or use another --results folder")

    @classmethod
    def open(cls, results: str | Path, model: str, data: str, study: str, config: dict, *,
             fresh: bool = False, command: str = "") -> "Run":
        """Open ``results/<model>/<data>/<study>``. A previous run with another numbers config is refused, naming
        every changed field (``fresh=True`` discards the old folder), so resumed work is never mixed across settings."""
        return cls.open_folder(cls.folder(results, model, data, study), config, fresh=fresh, command=command)

    @classmethod
    def open_folder(cls, root: str | Path, config: dict, *, fresh: bool = False, command: str = "") -> "Run":
        """Open the run folder ``root`` as :meth:`open` does (another numbers config refused field by field,
        ``fresh=True`` discards it, a killed write's temporaries removed): for studies whose folder is not
        ``results/<model>/<data>/<study>`` (one that reads every model's results)."""
        root = Path(root)
        cls.check(root, config, fresh=fresh)
        if fresh and (root.exists() or root.is_symlink()):
            shutil.rmtree(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file where a folder should be, no permission, a read-only disk
            raise ConfigError(f"cannot make the run folder {root}: {err.strerror or err}; choose another --results") \
                from None
        remove_stale_temporaries(root)  # a run killed inside atomic_write leaves its temporary
        config = json.loads(json.dumps(config, default=jsonable))
        write_json(root / "config.json", config)
        return cls(root, config, command=command)

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

        path = self.root / "artifacts" / f"{name}.{config_hash(depends)}.json"
        if not path.exists():
            lent = sibling_artifact(self.siblings(), name, depends)
            if lent is not None:  # the loan is recorded in the file
                write_json(path, {**json.loads(lent.read_text()), "lent_by": lent.parent.parent.name})
        if path.exists():
            return json.loads(path.read_text())["value"]
        value = json.loads(json.dumps(compute(), default=jsonable))
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
                 examples: Iterable[Any] = (), data_sha256: str | None = None,
                 analysis_hash: str | None) -> Path:
        """Write ``manifest.json``: data and its hash, split, config and its hash, versions, and the provenance list.

        The data hash is over ``examples``; a run that reads other runs instead passes ``data_sha256`` (e.g.
        :func:`hash_of` over ``harness.analysis.results.source_data``), never the hash of no examples.

        ``analysis_hash`` is the content hash of the declared analysis (``analysis.toml``) the run was made under
        (``harness.analysis.declared.current_hash()``): required, so no manifest leaves it out.

        ``provenance`` gets one entry per run that computed rows (commit, dirty flag, command, start, end, rows);
        a resume appends to it and never erases it. ``rendered_by`` is the run that last wrote the tables.
        """
        path = self.root / "manifest.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        provenance = old.get("provenance") or ([legacy_entry(old)] if old.get("commit") else [])
        now = time.time()
        this = {"commit": self.code["commit"], "dirty": self.code["dirty"], "command": self.command or command_line(),
                "started": iso(self.started), "finished": iso(now), "seconds": round(now - self.started, 1),
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
            "analysis_hash": analysis_hash,
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

    want = json.loads(json.dumps(depends, default=jsonable))
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
