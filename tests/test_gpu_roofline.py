"""benchmarks/gpu_roofline.py runs its every row on a tiny CPU model (the script is run on a GPU only when one is lent,
so this is what keeps it working in between)."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_roofline


@pytest.mark.slow  # reads SmolLM2's tokenizer for the harness decode row
def test_tiny_run_reports_every_shape(tmp_path, capsys):
    out = tmp_path / "roofline.json"
    gpu_roofline.main(["--tiny", "--repeats", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    shapes = [row["shape"] for row in report["rows"]]
    assert shapes == ["prefill", "target", "target+ablate", "decode", "harness target+ablate", "harness decode step"]
    assert all(row["seconds"] > 0 and row["tokens_per_s"] > 0 for row in report["rows"])
    assert report["peaks"] is None and report["device"] == "cpu"  # no roofline without a known accelerator
    printed = capsys.readouterr().out
    assert all(shape in printed for shape in shapes)
