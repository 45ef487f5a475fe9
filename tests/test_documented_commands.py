"""Every ``python -m studies.<name> ...`` command README.md, docs/, benchmarks/README.md and scripts/reproduce.sh give
their reader parses and validates: its flags exist, its values are accepted and, for the pipeline, every stage it would
start gets a valid configuration. Nothing runs: no model is loaded and nothing is written."""

import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest

from harness.errors import ConfigError
from studies import (ablation_comparison, cross_model, dps_decoding, known_answer, paper_tables, pcs_ranking, pipeline,
                     seeds, signal)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
        ROOT / "scripts" / "reproduce.sh"]
CONFIGS = {"signal": signal.SignalConfig, "pcs_ranking": pcs_ranking.RankingConfig,
           "ablation_comparison": ablation_comparison.AblationConfig, "dps_decoding": dps_decoding.DPSConfig,
           "known_answer": known_answer.KnownAnswerConfig, "seeds": seeds.SeedsConfig,
           "cross_model": cross_model.CrossModelConfig}
COMMAND = re.compile(r"python -m studies\.([\w$]+)((?:[^;&#`|)\n]|&(?!&))*)")  # up to ; && # ` | ) or the line's end
LOOP = re.compile(r"for (\w+) in ([^;]+);")


def documented_commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(line, module, argv) for each command in ``text``; a shell loop's variable gives one command per value, and a
    usage pattern (``[--k K]``, ``<name>``) is not a command."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        loops = {var: values.split() for var, values in LOOP.findall(line)}
        for m in COMMAND.finditer(line):
            command = (m.group(1) + m.group(2)).strip()
            if re.search(r"[\[<]", command):
                continue
            names = [v for v in loops if re.search(rf"\${v}\b", command)]
            for values in itertools.product(*(loops[v] for v in names)):
                expanded = command
                for name, value in zip(names, values):
                    expanded = re.sub(rf"\${name}\b", value, expanded)
                module, *argv = shlex.split(expanded)
                found.append((n, module, argv))
    return found


def check_command(module: str, argv: list[str], monkeypatch) -> None:
    """Parse and validate one command as its module would, without running it."""
    if module in CONFIGS:
        CONFIGS[module].from_argv(argv)
    elif module == "pipeline":  # every stage's argv as the pipeline builds it, validated by that stage's config
        stages = []
        monkeypatch.setattr(pipeline, "STAGES", {s: (lambda a, s=s: stages.append(pipeline.CONFIGS[s].from_argv(a)))
                                                 for s in pipeline.STAGES})
        monkeypatch.setattr(pipeline.seeds, "main", lambda a: stages.append(seeds.SeedsConfig.from_argv(a)))
        monkeypatch.setattr(pipeline.paper_tables, "main", lambda a: None)
        monkeypatch.setattr(pipeline.summary, "report", lambda *a, **k: None)
        monkeypatch.setattr(pipeline, "print_plan", lambda *configs: stages.extend(configs))
        pipeline.main(argv)
        assert stages, "the pipeline would start no stage"
    elif module == "paper_tables":  # its options, read off its own --help
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            paper_tables.main(["--help"])
        unknown = [a for a in argv if a.startswith("--") and a.split("=")[0] not in out.getvalue()]
        assert not unknown, f"paper_tables has no option {unknown}"
    else:
        raise AssertionError(f"the docs run studies.{module}, which is not a study module")


COMMANDS = [(f"{doc.relative_to(ROOT)}:{n}", module, argv) for doc in DOCS
            for n, module, argv in documented_commands(doc.read_text())]


def test_the_docs_give_commands_for_every_study():
    assert len(COMMANDS) >= 30 and {m for _, m, _ in COMMANDS} >= {*CONFIGS, "pipeline", "paper_tables"}
    assert {where.split("/")[0] for where, _, _ in COMMANDS} >= {"docs", "scripts"}


@pytest.mark.parametrize("where, module, argv", COMMANDS, ids=[f"{w}:{m}" for w, m, _ in COMMANDS])
def test_a_documented_command_parses_and_validates(where, module, argv, monkeypatch):
    check_command(module, argv, monkeypatch)


def test_a_misspelled_flag_or_a_bad_value_in_a_documented_command_fails(monkeypatch):
    """The check above can fail: a flag no study has, a value its config refuses, a stage flag after the pipeline's
    ``--`` that the stage does not know."""
    [(_, module, argv)] = documented_commands("python -m studies.ablation_comparison --preset full --n-randm 2  # typo")
    with pytest.raises(ConfigError, match="unrecognized arguments: --n-randm"):
        check_command(module, argv, monkeypatch)
    [(_, module, argv)] = documented_commands("for s in 1; do python -m studies.seeds --seeds 0 $s $s; done")
    with pytest.raises(ConfigError, match="duplicates"):
        check_command(module, argv, monkeypatch)
    [(_, module, argv)] = documented_commands("`python -m studies.pipeline --preset quick -- --max-target-tokens 0`")
    with pytest.raises(ConfigError, match="max-target-tokens"):
        check_command(module, argv, monkeypatch)


def test_the_readme_is_a_front_door_of_at_most_200_lines_of_at_most_120_characters():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    long = [f"{i}: {len(line)}" for i, line in enumerate(lines, start=1) if len(line) > 120]
    assert not long, f"README.md lines over 120 characters: {long}"
