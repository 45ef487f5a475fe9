"""Durable files: atomic writes (a killed run never leaves a half-written file), JSON/CSV/figure writers, and
safe folder names.

Test hook (``tests/test_crash_resume.py``), inert unless the variable is set: ``HARNESS_CRASH_AT=<glob>:<n>:<phase>``
SIGKILLs the process at the ``n``-th durable write (``atomic_write`` or a checkpoint append) to a file whose name
matches ``<glob>``: ``torn`` halfway through its bytes, ``unrenamed`` when ``atomic_write``'s temporary is complete but
not yet renamed (for a checkpoint append: the line is complete), ``done`` once the write is complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Any



REPO = Path(__file__).resolve().parents[2]


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
            durable_write(f, data.encode() if isinstance(data, str) else data, path.name)
        crash_point("unrenamed")
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
    crash_point("done")
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


def durable_write(f: Any, data: bytes, name: str) -> None:
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
    crash_point("torn")


def crash_point(*phases: str) -> None:
    """SIGKILL this process when the test hook's write is the one running and ``phases`` holds its phase."""
    if _crash["armed"] and os.environ.get(CRASH_ENV, "").rsplit(":", 1)[-1] in phases:
        os.kill(os.getpid(), signal.SIGKILL)


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, sort_keys=False, default=jsonable) + "\n")


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


def jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def relative_path(text: str) -> str:
    """``text`` relative to the repository when it is a path inside it (manifests hold no machine's absolute paths)."""
    try:
        p = Path(text)
        if p.is_absolute() and p.resolve().is_relative_to(REPO):
            return str(p.resolve().relative_to(REPO)) or "."
    except (OSError, ValueError):
        pass
    return text
