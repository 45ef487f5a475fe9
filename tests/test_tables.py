"""Table rendering: one record list as Markdown, LaTeX booktabs and CSV, written atomically."""

import csv
import io
import math

import numpy as np
import pytest

from harness.analysis.stats import compare_paired
from harness.analysis.tables import format_number, render, write_tables

COLUMNS = [("name", "Head set"), ("n", "n"), ("mean_diff", "Mean diff"), ("ci", "95% CI"),
           ("p_wilcoxon", "p"), ("p_holm", "p_Holm")]
RECORDS = [
    {"name": "pcs_top5", "n": 60, "mean_diff": 0.123456, "ci": (0.05, 0.2), "p_wilcoxon": 3.21e-4, "p_holm": 0.042},
    {"name": "retrieval|top5", "n": np.int64(60), "mean_diff": np.float64(-0.5), "ci": (-0.9, -0.1),
     "p_wilcoxon": 2e-7, "p_holm": math.nan},
]


def test_p_values_and_numbers_format_consistently():
    assert format_number(0.0421, p_value=True) == "0.042"
    assert format_number(3.21e-4, p_value=True) == "3.2e-04"
    assert format_number(2e-7, p_value=True) == "<1e-4"
    assert format_number(1e-4, p_value=True) == "1.0e-04"
    assert format_number(0.123456) == "0.123"
    assert format_number(-2e-5) == "-2.00e-05"
    assert format_number(0.0) == "0.000"
    assert format_number(np.int64(12)) == "12"
    assert format_number(math.nan) == "—"


def test_markdown_table_aligns_numbers_and_escapes_pipes():
    md = render(RECORDS, COLUMNS, "md").splitlines()
    assert md[0] == "| Head set | n | Mean diff | 95% CI | p | p_Holm |"
    assert md[1] == "| :--- | ---: | ---: | ---: | ---: | ---: |"
    assert md[2] == "| pcs_top5 | 60 | 0.123 | [0.050, 0.200] | 3.2e-04 | 0.042 |"
    assert md[3] == r"| retrieval\|top5 | 60 | -0.500 | [-0.900, -0.100] | <1e-4 | — |"
    assert render(RECORDS, COLUMNS, "markdown") == render(RECORDS, COLUMNS, "md")


def test_latex_table_uses_booktabs_and_escapes_text():
    tex = render(RECORDS, COLUMNS, "tex").splitlines()
    assert tex[0] == r"\begin{tabular}{lrrrrr}"
    assert tex[1] == r"\toprule" and tex[3] == r"\midrule" and tex[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert tex[2] == r"Head set & n & Mean diff & 95\% CI & p & p\_Holm \\"
    assert tex[4] == r"pcs\_top5 & 60 & 0.123 & [0.050, 0.200] & 3.2e-04 & 0.042 \\"
    assert tex[5] == (r"retrieval\textbar{}top5 & 60 & $-$0.500 & [$-$0.900, $-$0.100] & \textless{}1e-4 & -- \\")


def test_csv_keeps_full_precision_and_field_names():
    rows = list(csv.reader(io.StringIO(render(RECORDS, COLUMNS, "csv"))))
    assert rows[0] == ["name", "n", "mean_diff", "ci", "p_wilcoxon", "p_holm"]
    assert rows[1] == ["pcs_top5", "60", "0.123456", "[0.05, 0.2]", "0.000321", "0.042"]
    assert rows[2] == ["retrieval|top5", "60", "-0.5", "[-0.9, -0.1]", "2e-07", ""]


def test_comparison_records_render_in_every_format():
    rng = np.random.default_rng(0)
    rec = compare_paired(rng.normal(1, 1, 20), rng.normal(0, 1, 20), name="pcs_top3", baseline="random",
                         outcome="nll", n_boot=500, n_perm=500).to_dict()
    cols = [("name", "Head set"), ("mean_diff", "Mean diff"), ("d_z", "d_z"), ("p_permutation", "p"),
            ("null_percentile", "Null pct"), ("seeds", "Seeds")]
    for fmt in ("md", "tex", "csv"):
        assert "pcs" in render([rec], cols, fmt)
    assert '"n_boot": 500' in render([rec], cols, "md")


def test_missing_field_names_record_and_field():
    with pytest.raises(KeyError, match=r"record 1 has no field 'p_holm'"):
        render([RECORDS[0], {k: v for k, v in RECORDS[1].items() if k != "p_holm"}], COLUMNS, "md")


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown table format 'html'"):
        render(RECORDS, COLUMNS, "html")


def test_write_tables_writes_three_files_and_no_temp_files(tmp_path):
    out = tmp_path / "results" / "ablation_comparison"
    paths = write_tables(RECORDS, COLUMNS, out, "comparison")
    assert paths == {"md": out / "comparison.md", "tex": out / "comparison.tex", "csv": out / "comparison.csv"}
    for fmt, path in paths.items():
        assert path.read_text() == render(RECORDS, COLUMNS, fmt)
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "comparison.tex"]
    write_tables(RECORDS[:1], COLUMNS, out, "comparison")  # overwrite in place
    assert "retrieval" not in paths["md"].read_text()


def test_write_tables_leaves_old_tables_when_rendering_fails(tmp_path):
    paths = write_tables(RECORDS, COLUMNS, tmp_path, "t")
    before = {fmt: p.read_text() for fmt, p in paths.items()}
    with pytest.raises(KeyError):
        write_tables([{"name": "broken"}], COLUMNS, tmp_path, "t")
    assert {fmt: p.read_text() for fmt, p in paths.items()} == before
    assert len(list(tmp_path.iterdir())) == 3


def test_a_caption_heads_the_table_in_plain_text_below_any_warning(tmp_path):
    paths = write_tables([{"a": 1.0}], [("a", "A")], tmp_path, "t", note="no signal", caption="what rows are")
    md = paths["md"].read_text()
    assert md.startswith("> **Warning: no signal.**\n\nwhat rows are.\n\n| A |")
    assert "Warning" not in write_tables([{"a": 1.0}], [("a", "A")], tmp_path, "u", caption="x")["md"].read_text()
    assert paths["csv"].read_text() == "a\n1.0\n"  # the CSV stays data only
