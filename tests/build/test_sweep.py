"""Sweeps (lmbuild/build/sweep.py): runs as variants, names from values, seeded random search, keys.

The `snakemake -n` tests check that a sweep plans the shared upstream once, and that the
tracking config and an unchanged sweep plan nothing.
"""

from __future__ import annotations

import pytest

from lmbuild.build.config import validate
from lmbuild.errors import UserError
from lmbuild.build.graph import Plan
from lmbuild.build.sweep import expand, value_token

GRID = {"train.learning_rate": [0.001, 0.002, 0.004], "model.num_hidden_layers": [2, 4]}


def plan(sweep: dict, **sections) -> Plan:
    return Plan(validate({"sweep": sweep, **sections}))


def sweep_report_artifact(p: Plan):
    """The sweep report of the build (a row of the stage table, planned for the base), or None."""
    return p.artifacts.get("sweep_report")


def test_a_grid_is_one_variant_per_combination_named_after_its_values():
    p = plan({"grid": GRID})
    assert list(p.sweep_runs) == [
        "num_hidden_layers_2_learning_rate_0p001",
        "num_hidden_layers_2_learning_rate_0p002",
        "num_hidden_layers_2_learning_rate_0p004",
        "num_hidden_layers_4_learning_rate_0p001",
        "num_hidden_layers_4_learning_rate_0p002",
        "num_hidden_layers_4_learning_rate_0p004",
    ]
    run = p.variants["num_hidden_layers_2_learning_rate_0p004"]
    assert run.config["train"]["learning_rate"] == 0.004 and run.config["model"]["num_hidden_layers"] == 2
    keys = {n: {s: a.key for s, a in v.artifacts.items()} for n, v in p.variants.items()}
    # What the runs share upstream has one key: data and tokenizer for all six, one init per depth.
    for stage in ("raw", "cleaned", "deduplicated", "tokenizer", "shards"):
        assert len({k[stage] for k in keys.values()}) == 1
    assert len({k["init_checkpoint"] for k in keys.values()}) == 2
    assert len({k["trained_checkpoint"] for k in keys.values()}) == 6
    # A run whose settings equal the base's shares the base's keys.
    base = p.artifacts["trained_checkpoint"].key
    same = [n for n, k in keys.items() if k["trained_checkpoint"] == base]
    assert same == [n for n, v in p.variants.items() if v.config["train"] == p.config["train"] and v.config["model"] == p.config["model"]]


def test_names_and_keys_do_not_depend_on_key_order_or_number_notation():
    a = plan({"grid": GRID})
    b = plan({"grid": {"model.num_hidden_layers": [2.0, 4], "train.learning_rate": ["1e-3", "2e-3", 0.004]}})
    assert a.sweep_runs == b.sweep_runs
    assert sweep_report_artifact(a).key == sweep_report_artifact(b).key
    assert {n: v.artifacts["eval_report"].key for n, v in a.variants.items()} == {n: v.artifacts["eval_report"].key for n, v in b.variants.items()}


def test_the_base_report_leaves_the_runs_to_the_sweep_report():
    with_sweep, without = plan({"grid": GRID}), Plan(validate({}))
    assert {s: a.key for s, a in with_sweep.artifacts.items() if s != "sweep_report"} == {s: a.key for s, a in without.artifacts.items()}
    report = sweep_report_artifact(with_sweep)
    assert set(report.inputs) == {f"{r}__{s}" for r in with_sweep.sweep_runs for s in ("trained_checkpoint", "eval_report")}
    assert sweep_report_artifact(without) is None
    # The ranking settings enter only the report's key.
    other = plan({"grid": GRID, "metric": "heldout_bits_per_byte"})
    assert sweep_report_artifact(other).key != report.key
    assert {n: v.artifacts["eval_report"].key for n, v in other.variants.items()} == {n: v.artifacts["eval_report"].key for n, v in with_sweep.variants.items()}


def test_random_search_is_seeded_deterministic_and_distinct():
    space = {"train.learning_rate": {"min": 1e-4, "max": 1e-2, "log": True}, "model.num_hidden_layers": {"values": [2, 4]}, "train.warmup_steps": {"min": 10, "max": 40, "integer": True}}
    runs = expand(validate({"sweep": {"random": {"runs": 5, "seed": 3, "space": space}}}))
    again = expand(validate({"sweep": {"random": {"runs": 5, "seed": 3, "space": dict(reversed(list(space.items())))}}}))
    assert runs == again and len(runs) == 5
    for values in runs.values():
        assert 1e-4 <= values["train.learning_rate"] <= 1e-2 and len(f"{values['train.learning_rate']:.10g}".lstrip("0.").rstrip("0")) <= 3
        assert values["model.num_hidden_layers"] in (2, 4) and isinstance(values["train.warmup_steps"], int)
    assert expand(validate({"sweep": {"random": {"runs": 5, "seed": 4, "space": space}}})) != runs


def test_grid_and_random_runs_together():
    runs = expand(validate({"sweep": {"grid": {"train.seed": [1, 2]}, "random": {"runs": 2, "seed": 0, "space": {"train.seed": {"min": 10, "max": 1000, "integer": True}}}}}))
    assert list(runs)[:2] == ["seed_1", "seed_2"] and len(runs) == 4


def test_value_tokens():
    assert [value_token(v) for v in (0.002, 1e-05, -3, 3.0, True, None, "wsd", "a-b")] == ["0p002", "1em05", "m3", "3", "true", "null", "wsd", "ab"]
    assert value_token([1, 2]).startswith("h") and value_token([1, 2]) != value_token([2, 1])


def test_keys_with_the_same_last_part_are_named_by_their_whole_path():
    runs = expand(validate({"sweep": {"grid": {"train.seed": [1], "eval.seed": [2]}}}))
    assert list(runs) == ["eval_seed_2_train_seed_1"]


@pytest.mark.parametrize(
    "sweep,message",
    [
        ({"grid": {"train.learning_rate": ["fast"]}}, r"^config: sweep.grid \(train.learning_rate=\"fast\"\): train.learning_rate: 'fast' is not of type 'number'$"),
        ({"grid": {"train.learning_rat": [0.1]}}, r"^config: sweep.grid \(train.learning_rat=0.1\): train.learning_rat: unknown key$"),
        ({"grid": {"resources.default.threads": [1]}}, r"^config: sweep: resources.default.threads: resources is the same for every run$"),
        ({"grid": {"train.learning_rate": [0.001, "1e-3"]}}, r"^config: sweep.grid: two runs have the same values after validation \(learning_rate_0p001\)$"),
        ({"grid": {"train.learning_rate": []}}, r"^config: sweep.grid.train.learning_rate: \[\] should be non-empty$"),
        ({"random": {"runs": 3}}, r"^config: sweep.random.space: no keys to draw"),
        ({"random": {"space": {"train.seed": {"values": [1]}}}}, r"^config: sweep.random.runs: a random space needs a number of runs$"),
        ({"random": {"runs": 3, "space": {"train.seed": {"values": [1, 2]}}}}, r"^config: sweep.random.runs: 3 distinct runs asked, but the space gave only 2$"),
        ({"random": {"runs": 1, "space": {"train.seed": {"min": 1}}}}, r"^config: sweep.random.space.train.seed: give either values or min and max$"),
        ({"random": {"runs": 1, "space": {"train.learning_rate": {"min": 0, "max": 1, "log": True}}}}, r"^config: sweep.random.space.train.learning_rate: log needs min > 0"),
        ({"random": {"runs": 1, "space": {"train.seed": {"min": 5, "max": 1}}}}, r"^config: sweep.random.space.train.seed: min \(5\) must be smaller than max \(1\)$"),
        ({"goal": "lowest"}, r"^config: sweep.goal: 'lowest' is not one of \['min', 'max'\]$"),
        ({"grid": {"train.seed": [1]}, "metric": "val_loss"}, r"^config: sweep.metric: 'val_loss' is not a metric of the runs \(one of: final_val_loss, "),
        ({"grid": {"train.seed": [1]}, "metric": "arc_easy/acc"}, r"^config: sweep.metric: 'arc_easy/acc' is not a metric of the runs"),
    ],
)
def test_bad_sweeps_stop_with_one_line_naming_the_key(sweep, message):
    with pytest.raises(UserError, match=message) as err:
        plan(sweep)
    assert "\n" not in str(err.value)


def test_an_eval_task_metric_ranks():
    assert plan({"grid": {"train.seed": [1]}, "metric": "arc_easy/acc", "goal": "max"}, eval={"tasks": ["arc_easy"]}).sweep_runs == {"seed_1": {"train.seed": 1}}


def test_a_sweep_run_may_not_take_a_variants_name():
    with pytest.raises(UserError, match=r"^config: variants.seed_1: a variant has the name of a sweep run$"):
        plan({"grid": {"train.seed": [1]}}, variants={"seed_1": {"train.seed": 5}})


def test_the_report_code_set_is_what_its_script_runs():
    """Keyed like every stage: its code set is the import walk from its script (no hand list), and
    the report module imports only plumbing and the shared readers (lmbuild/numbers.py, lmbuild/training/curve.py),
    so its script, module, template and those leaves are all its code."""
    from lmbuild.build.graph import code_files

    assert set(code_files("sweep_report")) == {
        "scripts/sweep_report.py", "lmbuild/evaluation/sweep_report.py", "lmbuild/evaluation/templates/sweep_report.html.j2",
        "lmbuild/__init__.py", "lmbuild/evaluation/__init__.py", "lmbuild/numbers.py",
        "lmbuild/training/__init__.py", "lmbuild/training/curve.py",
    }


# --------------------------------------------------------------------------- snakemake -n


@pytest.mark.e2e
def test_a_3x2_sweep_plans_the_shared_upstream_once(tmp_path):
    from conftest import jobs_of_dry_run, smoke_config, snakemake

    (tmp_path / "sweep").mkdir()
    (tmp_path / "one").mkdir()
    sweep = jobs_of_dry_run(snakemake(tmp_path / "sweep", smoke_config(**{"sweep.grid": {"train.learning_rate": [0.001, 0.003, 0.01], "model.num_hidden_layers": [1, 2]}}), "sweep", "-n"))
    one = jobs_of_dry_run(snakemake(tmp_path / "one", smoke_config(), "-n"))
    # One build of the smoke config: every data job once, one init, one training, one evaluation.
    assert one["build_raw"] == 1 and one["build_trained_checkpoint"] == 1 and one["all"] == 1
    data = {r: n for r, n in one.items() if r not in ("build_init_checkpoint", "build_trained_checkpoint", "build_eval_report", "build_report", "all")}
    assert {r: sweep[r] for r in data} == data  # the data stages and the tokenizer: once for six runs
    assert sweep["build_init_checkpoint"] == 2  # one per depth: the learning rate is no init setting
    assert sweep["build_trained_checkpoint"] == 6 and sweep["build_eval_report"] == 6
    assert sweep["build_sweep_report"] == 1 and sweep["sweep"] == 1
    separate = 6 * (sum(one.values()) - 1)
    assert sum(sweep.values()) - 1 == sum(data.values()) + 2 + 6 + 6 + 1 < separate


@pytest.mark.e2e
def test_the_sweep_target_without_a_sweep_is_one_line(tmp_path):
    from conftest import snakemake, smoke_config

    for args in (("sweep", "-n"), ("sweep",)):
        proc = snakemake(tmp_path, smoke_config(), *args)
        out = proc.stdout + proc.stderr
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert proc.returncode != 0 and errors == ["error: config: sweep: no runs (set sweep.grid or sweep.random)"], out[-3000:]
        assert "Traceback" not in out and "Exception" not in out, out[-3000:]  # it was an InputFunctionException
    assert not list((tmp_path / "artifacts").glob("*/*/manifest.json"))  # nothing was built
