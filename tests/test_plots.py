"""The figures' arithmetic: what :func:`harness.analysis.plots.share_panels` draws is :func:`harness.analysis.plots.share_points`."""

import math

import pytest

from harness.analysis import plots


def _row(family, outcome, name, mean, ci, gain, p=float("nan")):
    return {"family": family, "outcome": outcome, "set": name, "mean": mean, "ci": ci, "gain": gain, "p_null": p}


ROWS = [
    _row("signoff", "specific_gain_lost", "retrieval", 0.2, (0.1, 0.3), 0.4, 0.001),
    _row("signoff", "specific_gain_lost", "specific_pcs", -0.04, (-0.08, 0.0), 0.4, 0.2),
    _row("signoff", "specific_gain_lost", "random:retrieval", 0.02, (0.0, 0.04), 0.4),
    _row("signoff", "gain_lost", "retrieval", 9.0, (8.0, 10.0), 0.5, 0.001),  # another outcome: not drawn
    _row("case", "gain_lost", "contrast_pcs", 0.1, (0.05, 0.15), 0.2, 0.02),
    _row("case", "specific_gain_lost", "contrast_pcs", 0.1, (0.05, 0.15), -0.01, 0.001),
    _row("lexicon", "specific_gain_lost", "retrieval", 0.01, (-0.02, 0.03), -0.3, 0.001),  # a loss, not a gain
]
OUTCOME = {"signoff": "specific_gain_lost", "case": "gain_lost", "lexicon": "specific_gain_lost"}


def test_share_points_divide_by_the_panels_gain_and_pair_each_set_with_its_random_sets():
    panels = plots.share_points(ROWS, panel="family", outcome_of=OUTCOME)
    gain, points = panels["signoff"]
    assert gain == 0.4 and [p.head_set for p in points] == ["retrieval", "specific_pcs"]
    retrieval, specific = points
    assert (retrieval.share, retrieval.low, retrieval.high) == pytest.approx((0.5, 0.25, 0.75))
    assert retrieval.random_share == pytest.approx(0.05) and math.isnan(specific.random_share)
    assert retrieval.above_null and not specific.above_null  # Holm over the 3 drawn points: 0.003, 0.2
    assert specific.share == pytest.approx(-0.1)


def test_share_points_show_each_panels_own_outcome_and_leave_out_a_panel_without_a_gain():
    panels = plots.share_points(ROWS, panel="family", outcome_of=OUTCOME)
    assert list(panels) == ["signoff", "case"]  # lexicon's planted "gain" is a loss: no share of it is drawn
    gain, (contrast,) = panels["case"]
    assert gain == 0.2 and contrast.share == pytest.approx(0.5) and contrast.above_null  # 0.02 * 2 after Holm
    no_null = [_row("signoff", "specific_gain_lost", "pcs", 0.1, (0.0, 0.2), 0.4)]
    assert not plots.share_points(no_null, panel="family", outcome_of=OUTCOME)["signoff"][1][0].above_null


def test_a_point_at_the_top_of_a_small_null_is_not_filled_once_holm_counts_the_figure():
    top_of_20 = [_row("signoff", "specific_gain_lost", s, 0.1, (0.0, 0.2), 0.4, 1 / 21) for s in ("pcs", "retrieval")]
    _, points = plots.share_points(top_of_20, panel="family", outcome_of=OUTCOME)["signoff"]
    assert not any(p.above_null for p in points)  # each p 0.048 alone; 0.095 after Holm over two


def test_share_panels_draw_a_png_or_nothing_when_no_panel_has_a_gain(tmp_path):
    path = plots.share_panels(ROWS, tmp_path / "shares.png", panel="family", outcome_of=OUTCOME, title="t\nlegend",
                              ylabel="share")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lexicon = [r for r in ROWS if r["family"] == "lexicon"]
    assert plots.share_panels(lexicon, tmp_path / "none.png", panel="family", outcome_of=OUTCOME, title="t",
                              ylabel="share") is None
    assert not (tmp_path / "none.png").exists()
