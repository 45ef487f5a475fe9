"""Render one list of result records as Markdown, LaTeX (booktabs) and CSV, and write all three atomically.

Markdown and LaTeX format numbers for reading: floats with 3 decimals (scientific when tiny or huge),
p-values (fields named `p` or `p_*`) as 0.042 / 3.2e-04 / <1e-4, (low, high) pairs as [low, high], nan as a dash.
CSV keeps full precision (repr of floats, empty for nan) with field names as its header, for machines.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Sequence

from ..runs.files import atomic_write

FORMATS = {"md": "md", "markdown": "md", "tex": "tex", "latex": "tex", "csv": "csv"}
MISSING = "—"  # nan / None in Markdown
P_FLOOR, P_FLOOR_TEXT = 1e-4, "<1e-4"  # p-values below P_FLOOR print as "<1e-4"


def _is_p_field(name: str) -> bool:
    """Whether a field holds a p-value (named `p` or `p_something`)."""
    return name == "p" or name.startswith("p_")


def _is_number(v: Any) -> bool:
    """Real numbers, numpy scalars included, but not bools."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    """Integers, numpy integers included, but not bools."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def format_number(v: float, *, p_value: bool = False) -> str:
    """Human-readable number: ints as is, floats to 3 decimals or 2 significant digits in sci notation."""
    if _is_int(v):
        return str(int(v))
    x = float(v)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if p_value:
        if x < P_FLOOR:
            return P_FLOOR_TEXT
        return f"{x:.1e}" if x < 1e-3 else f"{x:.3f}"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2e}"
    return f"{x:.3f}"


def _cell(v: Any, field: str) -> str:
    """Readable text of one cell (before escaping)."""
    if v is None:
        return MISSING
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_number(u) for u in v):
        return "[" + ", ".join(format_number(u, p_value=_is_p_field(field)) for u in v) + "]"
    if _is_number(v):
        return format_number(v, p_value=_is_p_field(field))
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _raw(v: Any) -> str:
    """Full-precision CSV text of one cell."""
    if v is None:
        return ""
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_raw(u) for u in v) + "]"
    if _is_int(v):
        return str(int(v))
    if _is_number(v):
        return "" if math.isnan(float(v)) else repr(float(v))
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}",
}
_NUMBER_MINUS = re.compile(r"(?<![\w.])-(?=\d)")  # a number's sign, not an exponent's


def escape_latex(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def tex_cell(text: str) -> str:
    """Escaped LaTeX cell; a number's minus sign becomes a math minus, the missing-value dash an en dash."""
    if text == MISSING:
        return "--"
    return _NUMBER_MINUS.sub("$-$", escape_latex(text))


def _table(records: Sequence[dict], columns: Sequence[tuple[str, str]]) -> list[list[Any]]:
    """Rows of raw values in column order; a missing field names the record and field."""
    if not columns:
        raise ValueError("columns is empty")
    rows = []
    for i, rec in enumerate(records):
        missing = [f for f, _ in columns if f not in rec]
        if missing:
            raise KeyError(f"record {i} has no field {missing[0]!r} (fields: {sorted(rec)})")
        rows.append([rec[f] for f, _ in columns])
    return rows


def _numeric_columns(rows: list[list[Any]], n_cols: int) -> list[bool]:
    """Columns whose non-missing values are all numbers (or number pairs): right-aligned."""
    def numeric(v: Any) -> bool:
        return v is None or _is_number(v) or isinstance(v, (tuple, list)) and all(_is_number(u) for u in v)
    return [bool(rows) and all(numeric(r[j]) for r in rows) for j in range(n_cols)]


def render(records: Sequence[dict], columns: Sequence[tuple[str, str]], fmt: str) -> str:
    """One table as Markdown ('md'), LaTeX booktabs tabular ('tex') or CSV ('csv'); columns = (field, header)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; use one of {sorted(FORMATS)}")
    fmt = FORMATS[fmt]
    rows = _table(records, columns)
    fields, headers = [f for f, _ in columns], [h for _, h in columns]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(fields)
        w.writerows([_raw(v) for v in r] for r in rows)
        return buf.getvalue()
    numeric = _numeric_columns(rows, len(columns))
    text = [[_cell(v, f) for v, f in zip(r, fields)] for r in rows]
    if fmt == "md":
        esc = lambda s: s.replace("|", r"\|")  # noqa: E731
        lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
                 "| " + " | ".join("---:" if num else ":---" for num in numeric) + " |"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in text]
        return "\n".join(lines) + "\n"
    spec = "".join("r" if num else "l" for num in numeric)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(escape_latex(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_cell(c) for c in r) + r" \\" for r in text]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(
    records: Sequence[dict], columns: Sequence[tuple[str, str]], out_dir: str | os.PathLike, stem: str, *,
    note: str = "", caption: str = "",
) -> dict[str, Path]:
    """Write out_dir/stem.md, .tex and .csv of one table; returns {'md': path, 'tex': path, 'csv': path}.

    ``note`` (a warning, e.g. "no measured user-specific signal") heads the Markdown and LaTeX versions in bold;
    ``caption`` (what the rows are) heads them in plain text, below the warning.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {fmt: render(records, columns, fmt) for fmt in ("md", "tex", "csv")}  # render all before writing
    if caption:
        texts["md"] = f"{caption}.\n\n" + texts["md"]
        texts["tex"] = f"{escape_latex(caption)}.\\\\[2pt]\n" + texts["tex"]
    if note:
        texts["md"] = f"> **Warning: {note}.**\n\n" + texts["md"]
        texts["tex"] = f"\\textbf{{Warning: {escape_latex(note)}.}}\\\\[2pt]\n" + texts["tex"]
    paths = {}
    for fmt, text in texts.items():
        paths[fmt] = out / f"{stem}.{fmt}"
        atomic_write(paths[fmt], text)
    return paths
