"""harness.analysis.claims: the claims file, its safe conditions, and the check of the paper's text against them."""

import pytest

from harness.analysis.claims import Claim, ClaimError, Number, check, claims_in_tex, evaluate, load_claims

NUMBERS = {"GainLow": Number(0.065, "0.065"), "GainMean": Number(0.104, "0.104"), "PHolm": Number(0.03, "0.030"),
           "Nan": Number(float("nan"), "--")}


def claim(holds: str, uses=("GainLow", "GainMean", "PHolm"), cid="c") -> Claim:
    return Claim(cid, "a claim", tuple(uses), holds)


@pytest.mark.parametrize("holds, expected", [
    ("GainLow > 0", True),
    ("GainLow > 0.1", False),
    ("PHolm < 0.05 and GainMean > 2 * GainLow - 0.1", True),
    ("not GainLow > 0 or PHolm >= 0.05", False),
    ("0 < GainLow < GainMean", True),
    ("0 < GainMean < GainLow", False),
    ("abs(-GainMean) == GainMean", True),
    ("max(GainLow, PHolm) <= 0.065", True),
    ("GainMean / GainLow > 1.5", True),
])
def test_conditions_evaluate_to_what_they_say(holds, expected):
    assert evaluate(claim(holds), NUMBERS) is expected


def test_plain_floats_are_numbers_too():
    assert evaluate(claim("GainLow > 0"), {"GainLow": 0.01, "GainMean": 0.0, "PHolm": 1.0})
    assert not evaluate(claim("GainLow > 0"), {"GainLow": -0.01, "GainMean": 0.0, "PHolm": 1.0})


@pytest.mark.parametrize("holds, message", [
    ("Other > 0", "not in its uses"),
    ("GainLow.__class__", "not allowed"),
    ("__import__('os')", "not in its uses"),
    ("GainLow", "a number, not a condition"),
    ("GainLow > ", "not an expression"),
    ("[GainLow][0] > 0", "not allowed"),
    ("GainLow ** 2 > 0", "not allowed"),
    ("GainLow in (1, 2)", "not allowed"),
])
def test_conditions_outside_the_language_are_errors_not_verdicts(holds, message):
    with pytest.raises(ClaimError, match=message):
        evaluate(claim(holds), NUMBERS)


def test_a_missing_or_nan_number_is_an_error_naming_it():
    with pytest.raises(ClaimError, match="'Gone' is not generated"):
        evaluate(claim("Gone > 0", uses=("Gone",)), NUMBERS)
    with pytest.raises(ClaimError, match="'Nan' is NaN"):
        evaluate(claim("Nan > 0", uses=("Nan",)), NUMBERS)


def test_load_claims_reads_toml_and_names_each_problem(tmp_path):
    good = tmp_path / "claims.toml"
    good.write_text('[signal-up]\nsays = "up"\nuses = ["GainLow"]\nholds = "GainLow > 0"\n')
    assert load_claims(good) == {"signal-up": Claim("signal-up", "up", ("GainLow",), "GainLow > 0")}
    cases = {
        '[Bad_Id]\nsays = "x"\nuses = ["A"]\nholds = "A > 0"\n': "lowercase",
        '[a]\nsays = "x"\nuses = ["A"]\n': "missing ['holds']",
        '[a]\nsays = "x"\nuses = ["A"]\nholds = "A > 0"\nwhy = 1\n': "unknown keys ['why']",
        '[a]\nsays = "x"\nuses = []\nholds = "1 > 0"\n': "non-empty list",
        '[a]\nsays = "x"\nuses = ["A"]\nholds = "B > 0"\n': "'B', which is not in its uses",
        '[a\n': "not valid TOML",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ClaimError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_claims(bad)


def test_claims_in_tex_reads_nested_braces_and_skips_comments():
    tex = (r"We find \claim{gain-up}{a gain of \GainMean{} [\GainLow, \textbf{x}]} here. "
           "% \\claim{commented}{not stated}\n"
           r"And \claim{p-small}{Holm $p = \PHolm$ \{literal\}}.")
    assert claims_in_tex(tex) == [("gain-up", r"a gain of \GainMean{} [\GainLow, \textbf{x}]"),
                                  ("p-small", r"Holm $p = \PHolm$ \{literal\}")]
    with pytest.raises(ClaimError, match="unbalanced"):
        claims_in_tex(r"\claim{a}{never closed")


def test_check_reports_every_kind_of_problem_and_nothing_when_all_hold():
    claims = {"gain-up": claim("GainLow > 0", uses=("GainLow", "GainMean"), cid="gain-up"),
              "p-small": claim("PHolm < 0.05", uses=("PHolm",), cid="p-small")}
    tex = r"\claim{gain-up}{gain \GainMean{} [\GainLow]} and \claim{p-small}{$p=\PHolm$}"
    assert check(claims, NUMBERS, tex) == []

    problems = check(claims, {**NUMBERS, "GainLow": Number(-0.01, "-0.010")}, tex)
    assert problems == ["claim 'gain-up' no longer holds: GainLow > 0 is false (GainLow=-0.01, GainMean=0.104): "
                        "a claim"]
    assert "which the claims file does not hold" in check(claims, NUMBERS, tex + r" \claim{new}{unchecked}")[0]
    assert check(claims, NUMBERS, r"\claim{gain-up}{gain \GainMean{} [\GainLow]}") == [
        "claim 'p-small' is in the claims file but not stated in the text"]
    quoted = check(claims, NUMBERS, r"\claim{gain-up}{gain \GainMean{} with $p=\PHolm$} \claim{p-small}{\PHolm}")
    assert quoted == ["claim 'gain-up' quotes ['PHolm'], which its uses do not declare"]
    twice = check(claims, NUMBERS, tex + r" \claim{p-small}{another wording}")
    assert twice == ["claim 'p-small' is stated twice with different text"]
    missing = check({"gone": claim("Gone > 0", uses=("Gone",), cid="gone")}, NUMBERS, r"\claim{gone}{x}")
    assert missing == ["claim 'gone': macro 'Gone' is not generated from results/ (is the run committed?)"]


def test_report_lists_each_claim_with_its_verdict_and_printed_numbers():
    from harness.analysis.claims import report

    claims = {"up": Claim("up", "Gain above 0.", ("GainLow", "GainMean"), "GainLow > 0"),
              "down": Claim("down", "Loss below 0.", ("LossHigh",), "LossHigh < 0"),
              "gone": Claim("gone", "Uses a number not generated.", ("Gone",), "Gone > 0")}
    numbers = {"GainLow": Number(0.012, "0.012"), "GainMean": Number(0.0456, "0.046"), "LossHigh": Number(0.3, "0.300")}
    p_values = {"tiny": Claim("tiny", "Below the floor.", ("P",), "P < 0.05"),
                "small": Claim("small", "Small.", ("Q",), "Q < 0.05")}
    printed = report(p_values, {"P": Number(1e-6, r"\ensuremath{<10^{-4}}"),
                                "Q": Number(5e-4, r"\ensuremath{=5.0\times10^{-4}}")}).splitlines()
    assert printed[0].endswith("Numbers: P <1e-4.") and printed[1].endswith("Numbers: Q =5.0e-4."), printed
    lines = report(claims, numbers).splitlines()
    assert lines[0] == ("- **up** (holds): Gain above 0. Condition: `GainLow > 0`. Numbers: GainLow 0.012, "
                        "GainMean 0.046.")
    assert lines[1].startswith("- **down** (DOES NOT HOLD): ") and "LossHigh 0.300" in lines[1]
    assert lines[2].startswith("- **gone** (cannot be evaluated (") and "Gone <missing>" in lines[2]
