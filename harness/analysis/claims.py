"""The paper's claims, held to the committed results.

A claims file (TOML) names each claim the paper makes, the generated number macros it rests on, and the condition
that must hold for it to be stated::

    [signal-conv-specific]
    says = "On conventions2012 the user-specific gain is above zero on the evaluation users."
    uses = ["SmolConvSignalEvaluationGainSpecificMean", "SmolConvSignalEvaluationGainSpecificLow"]
    holds = "SmolConvSignalEvaluationGainSpecificLow > 0"

The paper marks the text of each claim with ``\\claim{id}{text}`` (typeset as the text alone). :func:`check` fails
when a claim's condition is false for the numbers generated from ``results/``, when the text states a claim the file
does not hold, when a claim's text quotes a macro it does not declare, or when a condition names anything but its
declared macros. Conditions are a small safe expression language: numbers, declared macro names, ``+ - * /``,
comparisons, ``and``/``or``/``not``, and ``abs``/``min``/``max``.
"""

from __future__ import annotations

import ast
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple

__all__ = ["Claim", "ClaimError", "Number", "check", "claims_in_tex", "evaluate", "load_claims", "report"]


class ClaimError(ValueError):
    """A claims file or a claim's condition that cannot be evaluated (a defect of the file, not a false claim)."""


class Number(NamedTuple):
    """A generated number: its value for claims, its text for the paper."""
    value: float
    text: str


@dataclass(frozen=True)
class Claim:
    """One entry of the claims file: what it says, the macros it rests on, the condition that must hold."""
    id: str
    says: str
    uses: tuple[str, ...]
    holds: str


_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_FUNCS = {"abs": abs, "min": min, "max": max}
_CMP = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
        ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}
_BIN = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


def load_claims(path: str | Path) -> dict[str, Claim]:
    """Read and validate a claims file; every problem is a :class:`ClaimError` naming the file and the claim."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ClaimError(f"{path}: not valid TOML ({err})") from None
    claims = {}
    for cid, body in raw.items():
        where = f"{path}: claim {cid!r}"
        if not _ID.match(cid):
            raise ClaimError(f"{where}: ids are lowercase letters, digits and dashes")
        if not isinstance(body, dict):
            raise ClaimError(f"{where}: expected a table with says, uses, holds")
        missing = {"says", "uses", "holds"} - set(body)
        extra = set(body) - {"says", "uses", "holds"}
        if missing or extra:
            raise ClaimError(f"{where}: " + "; ".join(
                ([f"missing {sorted(missing)}"] if missing else []) + ([f"unknown keys {sorted(extra)}"] if extra else [])))
        uses = body["uses"]
        if not (isinstance(uses, list) and uses and all(isinstance(u, str) for u in uses)):
            raise ClaimError(f"{where}: uses must be a non-empty list of macro names")
        claim = Claim(cid, str(body["says"]), tuple(uses), str(body["holds"]))
        _compile(claim, where)  # syntax and names checked now, values at check time
        claims[cid] = claim
    return claims


def _compile(claim: Claim, where: str) -> ast.Expression:
    try:
        tree = ast.parse(claim.holds, mode="eval")
    except SyntaxError as err:
        raise ClaimError(f"{where}: holds {claim.holds!r} is not an expression ({err.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in claim.uses and node.id not in _FUNCS:
            raise ClaimError(f"{where}: holds names {node.id!r}, which is not in its uses {list(claim.uses)}")
    return tree


def evaluate(claim: Claim, numbers: Mapping[str, Number | float]) -> bool:
    """Whether ``claim`` holds for ``numbers`` (macro name -> :class:`Number` or float). A missing macro or a NaN
    operand is a :class:`ClaimError`: the result the claim rests on is not there."""
    where = f"claim {claim.id!r}"
    tree = _compile(claim, where)
    values = {}
    for name in claim.uses:
        if name not in numbers:
            raise ClaimError(f"{where}: macro {name!r} is not generated from results/ (is the run committed?)")
        v = numbers[name]
        values[name] = float(v.value if isinstance(v, Number) else v)

    def ev(node: ast.AST):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in values:
            x = values[node.id]
            if math.isnan(x):
                raise ClaimError(f"{where}: macro {node.id!r} is NaN")
            return x
        if isinstance(node, ast.BoolOp):
            parts = [ev(v) for v in node.values]
            return all(parts) if isinstance(node.op, ast.And) else any(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            return _BIN[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                if type(op) not in _CMP:
                    raise ClaimError(f"{where}: comparison {type(op).__name__} is not allowed")
                right = ev(right_node)
                if not _CMP[type(op)](left, right):
                    return False
                left = right
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise ClaimError(f"{where}: {ast.unparse(node)!r} is not allowed in a condition")

    result = ev(tree)
    if not isinstance(result, bool):
        raise ClaimError(f"{where}: holds {claim.holds!r} is a number, not a condition")
    return result


_CLAIM_TEX = re.compile(r"\\claim\{([^{}]*)\}\{")


def claims_in_tex(text: str) -> list[tuple[str, str]]:
    """Every ``\\claim{id}{body}`` in LaTeX source, with its body (braces balanced; comments ignored)."""
    text = re.sub(r"(?<!\\)%.*", "", text)
    found = []
    for m in _CLAIM_TEX.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0) if text[i - 1] != "\\" else 0
            i += 1
        if depth:
            raise ClaimError(f"\\claim{{{m.group(1)}}}: unbalanced braces in its text")
        found.append((m.group(1), text[m.end():i - 1]))
    return found


def check(claims: Mapping[str, Claim], numbers: Mapping[str, Number | float], tex: str,
          macros_defined: set[str] | None = None) -> list[str]:
    """Every problem of the paper's claims against ``numbers``, one line each (empty: all hold).

    ``tex`` is the paper's source. A claim in the text that the file does not hold, a claim stated twice with
    different text, a file claim the text never states, a macro quoted in a claim's text but not in its ``uses``,
    and a claim whose condition is false or cannot be evaluated are all problems. ``macros_defined`` (the generated
    macro names) lets a quoted macro that is neither generated nor declared be reported by name.
    """
    problems = []
    stated = claims_in_tex(tex)
    seen: dict[str, str] = {}
    for cid, body in stated:
        if cid not in claims:
            problems.append(f"the text states claim {cid!r}, which the claims file does not hold")
            continue
        if cid in seen and seen[cid] != body:
            problems.append(f"claim {cid!r} is stated twice with different text")
        seen[cid] = body
        quoted = set(re.findall(r"\\([A-Za-z]+)", body))
        generated = set(numbers) | (macros_defined or set())
        undeclared = sorted(q for q in quoted if q in generated and q not in claims[cid].uses)
        if undeclared:
            problems.append(f"claim {cid!r} quotes {undeclared}, which its uses do not declare")
    for cid in sorted(set(claims) - set(seen)):
        problems.append(f"claim {cid!r} is in the claims file but not stated in the text")
    for cid, claim in sorted(claims.items()):
        try:
            if not evaluate(claim, numbers):
                shown = ", ".join(f"{u}={_show(numbers[u])}" for u in claim.uses)
                problems.append(f"claim {cid!r} no longer holds: {claim.holds} is false ({shown}): {claim.says}")
        except ClaimError as err:
            problems.append(str(err))
    return problems


def _show(v: Number | float) -> str:
    return f"{(v.value if isinstance(v, Number) else float(v)):.4g}"


def report(claims: Mapping[str, Claim], numbers: Mapping[str, Number | float]) -> str:
    """Every claim as Markdown: its id, whether it holds, what it says, its condition and each number it rests on
    as the paper prints it (``python -m studies.paper_tables --claims``)."""
    lines = []
    for cid, claim in claims.items():
        try:
            state = "holds" if evaluate(claim, numbers) else "DOES NOT HOLD"
        except ClaimError as err:
            state = f"cannot be evaluated ({err})"
        shown = ", ".join(f"{u} {_text(numbers[u]) if u in numbers else '<missing>'}" for u in claim.uses)
        lines.append(f"- **{cid}** ({state}): {claim.says} Condition: `{claim.holds}`. Numbers: {shown}.")
    return "\n".join(lines)


def _text(v: Number | float) -> str:
    """A number as the report prints it: the paper's text, with a p-value macro's math (``\\ensuremath{<10^{-4}}``,
    ``\\ensuremath{=5.0\\times10^{-4}}``) read back as plain text (``<1e-4``, ``=5.0e-4``)."""
    if not isinstance(v, Number):
        return _show(v)
    in_math = re.fullmatch(r"\\ensuremath\{(.*)\}", v.text)
    if in_math is None:
        return v.text
    return re.sub(r"(\\times)?10\^\{(-?\d+)\}", lambda m: ("e" if m.group(1) else "1e") + m.group(2),
                  in_math.group(1))
