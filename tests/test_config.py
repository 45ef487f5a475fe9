"""Study configs: CLI generated from fields, CLI > preset > defaults, numbers config and its hash, refusals by field."""

import dataclasses
import json

import pytest

from harness.models.arch import ModelShape
from harness.study.config import PRESETS, StudyConfig, option, preset_keys_known
from harness.errors import ConfigError
from harness.runs.provenance import config_diff
from harness.runs.folder import Run
from studies.ablation_comparison import AblationConfig
from studies.dps_decoding import DPSConfig
from studies.pcs_ranking import RankingConfig

STUDY_CONFIGS = (RankingConfig, AblationConfig, DPSConfig)


@dataclasses.dataclass
class ToyConfig(StudyConfig):
    study = "toy"
    gammas: list[float] = option([0.5, 1.0], "a list option")
    limit: int | None = option(None, "an optional int")
    workers: int = option(2, "threads", runtime=True)


def test_every_preset_key_is_an_option_of_some_study():
    assert preset_keys_known(STUDY_CONFIGS) == []


def test_a_preset_key_no_study_declares_is_reported():
    PRESETS["quick"]["n_randm"] = 3
    try:
        assert preset_keys_known(STUDY_CONFIGS) == ["quick.n_randm"]
    finally:
        del PRESETS["quick"]["n_randm"]


def test_explicit_flags_beat_the_preset_which_beats_field_defaults():
    cfg = ToyConfig.from_argv(["--preset", "full", "--n", "5"])
    assert cfg.n == 5  # explicit
    assert cfg.max_prompt_tokens == PRESETS["full"]["max_prompt_tokens"]  # preset
    assert cfg.gammas == [0.5, 1.0] and cfg.limit is None  # field defaults
    assert ToyConfig.from_argv([]).n == PRESETS["quick"]["n"]  # the default preset applies too


def test_cli_types_come_from_the_field_types():
    cfg = ToyConfig.from_argv(["--gammas", "0.25", "2", "--limit", "7", "--by-user", "--k-heads", "1", "4"])
    assert cfg.gammas == [0.25, 2.0] and cfg.limit == 7 and cfg.by_user is True and cfg.k_heads == [1, 4]
    assert ToyConfig.from_argv(["--by-user", "--no-by-user"]).by_user is False
    with pytest.raises(ConfigError, match="invalid int value: 'seven'"):  # one error: line on the command line
        ToyConfig.from_argv(["--limit", "seven"])
    with pytest.raises(ConfigError, match="invalid choice: 'dense'"):
        ToyConfig.from_argv(["--retrieval", "dense"])  # not one of the choices


def test_every_field_has_help_and_appears_in_the_cli():
    for cls in STUDY_CONFIGS:
        text = cls.parser().format_help()
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            assert "--" + f.name.replace("_", "-") in text


def test_numbers_config_leaves_out_runtime_options_only():
    cfg = ToyConfig.from_argv(["--results", "elsewhere", "--fresh", "--workers", "8", "--remote", "local"])
    numbers = cfg.numbers_config()
    assert not {"results", "fresh", "workers", "remote", "preset", "verbose"} & set(numbers)
    assert numbers["study"] == "toy" and numbers["gammas"] == [0.5, 1.0] and "limit" in numbers
    assert cfg.config_hash() == ToyConfig.from_argv([]).config_hash()  # runtime options do not move the hash
    assert cfg.config_hash() != ToyConfig.from_argv(["--limit", "3"]).config_hash()


def test_bad_values_are_refused_naming_the_option():
    for argv, message in [(["--k-heads", "0"], "--k-heads"), (["--n", "1"], "--n must be >= 2"),
                          (["--eval-fraction", "1.5"], "--eval-fraction"), (["--gammas", "1", "1"], "duplicates"),
                          (["--n-boot", "0"], "--n-boot")]:
        with pytest.raises(ConfigError, match=message):
            ToyConfig.from_argv(argv)
    with pytest.raises(ConfigError, match="no option n_randm"):
        ToyConfig.build({"n_randm": 3})
    with pytest.raises(ConfigError, match="--min-new-tokens must be >= 0"):
        ToyConfig.from_argv(["--min-new-tokens", "-1"])


def test_negative_seed_is_refused_naming_the_option():
    with pytest.raises(ConfigError, match="--seed must be >= 0, got -1"):
        ToyConfig.from_argv(["--seed", "-1"])
    assert ToyConfig.from_argv(["--seed", "0"]).folder().startswith("seed0/")


def test_k_heads_beyond_the_models_head_count_is_refused_naming_both():
    shape = ModelShape("toy", n_layers=2, n_heads=3, head_dim=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match=r"--k-heads 1000 is more than the model's 6 heads \(toy: 2 layers x 3"):
        ToyConfig.from_argv(["--k-heads", "1", "1000"]).validate_shape(shape)
    ToyConfig.from_argv(["--k-heads", "1", "6"]).validate_shape(shape)  # every head is a legal top-k


def test_profile_positions_are_a_scoring_design_that_dps_refuses():
    assert RankingConfig.from_argv(["--positions", "profile"]).folder() == "seed0/pcs_ranking-mean-profile"
    assert AblationConfig.from_argv(["--positions", "profile", "--mode", "zero"]).folder() == \
        "seed0/ablation_comparison-zero-profile"
    with pytest.raises(ConfigError, match="--positions profile is a scoring design"):
        DPSConfig.from_argv(["--positions", "profile"])


def test_config_diff_names_each_changed_field_old_to_new():
    assert config_diff({"a": 1, "b": [1]}, {"a": 1, "b": [2], "c": True}) == ["b: [1] -> [2]", "c: '<absent>' -> True"]


def test_run_refuses_another_config_naming_fields_and_fresh_discards(tmp_path):
    cfg = ToyConfig.from_argv(["--limit", "3"])
    run = Run.open(tmp_path, "m", "d", "toy", cfg.numbers_config())
    run.checkpoint("rows").add("x", value=1)
    other = ToyConfig.from_argv(["--limit", "4", "--seed", "2"])
    with pytest.raises(RuntimeError, match=r"limit: 3 -> 4; seed: 0 -> 2"):
        Run.open(tmp_path, "m", "d", "toy", other.numbers_config())
    fresh = Run.open(tmp_path, "m", "d", "toy", other.numbers_config(), fresh=True)
    assert len(fresh.checkpoint("rows")) == 0
    assert json.loads((fresh.root / "config.json").read_text())["limit"] == 4


def test_checkpoints_are_keyed_by_the_config_hash(tmp_path):
    run = Run.open(tmp_path, "m", "d", "toy", ToyConfig.from_argv([]).numbers_config())
    ck = run.checkpoint("rows")
    assert ck.path.name == f"rows.{run.config_hash}.jsonl"


def test_artifacts_are_keyed_by_the_settings_they_depend_on(tmp_path):
    run = Run.open(tmp_path, "m", "d", "toy", ToyConfig.from_argv([]).numbers_config())
    calls = []

    def compute(v):
        calls.append(v)
        return {"value": v}
    assert run.artifact("scores", {"prompts": 1}, lambda: compute(1)) == {"value": 1}
    assert run.artifact("scores", {"prompts": 1}, lambda: compute(99)) == {"value": 1}  # same settings: reused
    assert run.artifact("scores", {"prompts": 2}, lambda: compute(2)) == {"value": 2}  # other settings: computed
    assert calls == [1, 2]


def test_manifest_provenance_is_appended_by_runs_that_computed_rows_and_never_erased(tmp_path):
    numbers = ToyConfig.from_argv([]).numbers_config()
    run = Run.open(tmp_path, "m", "d", "toy", numbers, command="python -m studies.toy --first")
    run.checkpoint("rows").add("a", v=1)
    run.manifest(seed=0, model="m", data="d", analysis_hash=None)
    resumed = Run.open(tmp_path, "m", "d", "toy", numbers, command="python -m studies.toy --render")
    resumed.checkpoint("rows")
    resumed.manifest(seed=0, model="m", data="d", analysis_hash=None)
    third = Run.open(tmp_path, "m", "d", "toy", numbers, command="python -m studies.toy --more")
    third.checkpoint("rows").add("b", v=2)
    man = json.loads(third.manifest(seed=0, model="m", data="d", analysis_hash=None).read_text())
    assert [p["command"] for p in man["provenance"]] == ["python -m studies.toy --first", "python -m studies.toy --more"]
    assert [p["rows_computed"] for p in man["provenance"]] == [1, 1]
    assert man["rendered_by"]["command"] == "python -m studies.toy --more"


def test_a_v1_manifest_becomes_the_first_provenance_entry(tmp_path):
    numbers = ToyConfig.from_argv([]).numbers_config()
    run = Run.open(tmp_path, "m", "d", "toy", numbers)
    (run.root / "manifest.json").write_text(json.dumps({"commit": "d10cd56", "dirty": False, "seconds": 2860.0,
                                                        "command": "python -m studies.ablation_comparison"}))
    man = json.loads(run.manifest(seed=0, model="m", data="d", analysis_hash=None).read_text())
    assert man["provenance"][0]["commit"] == "d10cd56" and man["provenance"][0]["seconds"] == 2860.0
    assert len(man["provenance"]) == 1  # this run computed nothing


def test_commands_record_repository_paths_relative(tmp_path):
    from harness.runs.files import REPO, relative_path

    assert relative_path(str(REPO / "results" / "x")) == "results/x"
    assert relative_path(str(tmp_path)) == str(tmp_path)  # outside the repository: kept
    cfg = ToyConfig.from_argv(["--results", str(REPO / "results")])
    assert cfg.command().endswith("--results results")


def test_remote_without_a_key_fails_before_anything_is_written(tmp_path, monkeypatch, restore_nnsight_config):
    from harness.models.remote import RemoteSetupError
    from studies import pcs_ranking

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    with pytest.raises(RemoteSetupError, match="NDIF_API_KEY"):
        pcs_ranking.main(["--remote", "http://127.0.0.1:9", "--results", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("start", [["-m", "studies.known_answer"],  # a runner that executes the file has no spec:
                                   ["-c", "import runpy, sys; sys.argv[0] = 'x'; "
                                          "runpy.run_path('studies/known_answer.py', run_name='__main__')"]],
                         ids=["dash-m", "run-path"])
def test_a_study_run_records_its_module_not_main(tmp_path, start):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, *start, "--model", "tiny", "--data", "conventions2012",
                    "--planted", "case", "--results", str(tmp_path)], cwd=repo, check=True, capture_output=True)
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert manifest["provenance"][-1]["command"].startswith("python -m studies.known_answer --model tiny")
    from harness.analysis import declared

    assert manifest["analysis_hash"] == declared.current_hash()  # a study's manifest names its declared analysis


def test_help_shows_the_value_each_preset_gives_an_option_not_a_field_default_that_never_applies():
    text = " ".join(ToyConfig.parser().format_help().split())
    quick, full = PRESETS["quick"]["k_profile"], PRESETS["full"]["k_profile"]
    assert f"default: {quick!r} under --preset quick (the default preset); {full!r} under --preset full" in text
    assert "(default: 'sotu')" in text  # an option no preset sets shows its field default


def test_a_quick_run_writes_to_results_quick_unless_told_otherwise():
    assert ToyConfig.from_argv([]).results == "results-quick"
    assert ToyConfig.from_argv(["--preset", "full"]).results == "results"
    assert ToyConfig.from_argv(["--results", "mine"]).results == "mine"
