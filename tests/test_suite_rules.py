"""The suite's own rules (tests/conftest.py): a skip for a missing install fails under CI=true and is one loud line
locally; tests using a model fixture are marked slow; a test not marked slow cannot load a model."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
HINT = "redis-server is not installed (run scripts/install_ndif.sh)"
INNER = f'''
import pytest

pytestmark = pytest.mark.slow  # keeps the inner run from importing transformers for the load guard


@pytest.fixture
def stack():
    pytest.skip("python package for 'ndif' is not installed (run scripts/install_ndif.sh)")


@pytest.mark.skipif(True, reason="{HINT}")
def test_remote_by_mark():
    pass


def test_remote_by_fixture(stack):
    pass


@pytest.mark.skip(reason="only meaningful on a GPU")
def test_skipped_for_another_reason():
    pass


def test_plain():
    pass
'''


def _run_inner(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """Run a small suite that uses this repository's conftest, with or without CI set."""
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::pytest.PytestUnknownMarkWarning", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_install_skips_fail_the_run_under_ci(tmp_path):
    run = _run_inner(tmp_path, ci="true")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed, 1 skipped, 2 errors" in run.stdout, run.stdout
    assert "ERROR test_inner.py::test_remote_by_mark - skipped for a missing install" in run.stdout
    assert "install it with: bash scripts/install_ndif.sh" in run.stdout
    assert "FAILED: 2 tests need a missing install" in run.stdout


def test_missing_install_skips_print_one_loud_line_locally(tmp_path):
    run = _run_inner(tmp_path, ci=None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 3 skipped" in run.stdout
    loud = [line for line in run.stdout.splitlines() if "need a missing install" in line]
    assert loud == [f"SKIPPED: 2 tests need a missing install ({HINT}); run `bash scripts/install_ndif.sh` to run them"]


def test_model_fixtures_mark_a_test_slow(request):
    from conftest import MODEL_FIXTURES

    assert {"smollm", "tokenizer", "tiny_models", "ndif_stack"} <= MODEL_FIXTURES
    assert request.node.get_closest_marker("slow") is None  # this test uses none of them


def test_a_fast_test_that_loads_a_model_fails_saying_to_mark_it_slow(tmp_path):
    from transformers import AutoTokenizer

    with pytest.raises(RuntimeError, match=r"test_a_fast_test_that_loads_a_model.* is not marked slow"):
        AutoTokenizer.from_pretrained(tmp_path)
