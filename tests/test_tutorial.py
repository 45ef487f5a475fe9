"""docs/tutorial.ipynb is committed with its outputs and still runs: the suite executes it in a fresh kernel."""

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (bash install.sh: it is in the test extra)")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
N_PLOTS = 4  # logits moved, exact vs attribution PCS, random-set null, DPS Δ-logits


def _check_outputs(nb) -> None:
    """Every code cell ran, in order, without an error, and the plots are inline PNGs."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors[0].get("evalue") if errors else None
    images = [out for cell in code for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(images) >= N_PLOTS


def test_committed_tutorial_carries_its_outputs_and_inline_plots():
    _check_outputs(nbformat.read(NOTEBOOK, as_version=4))


@pytest.mark.slow  # loads SmolLM2 in a kernel and runs every cell (minutes)
def test_tutorial_executes_cleanly_in_a_fresh_kernel(tmp_path):
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (bash install.sh: it is in the test "
                                                      "extra)")
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:  # start from a blank notebook so the check below sees this run's outputs only
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    _check_outputs(nb)
