"""Decontamination from the graph (lmbuild.data.eval_sources): the evaluated tasks' local data
removes the training documents that quote it, counted per task; the data enters the key."""

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lmbuild.build import graph as plan
from lmbuild.build import data_stages
from lmbuild.build.keys import apply_patches
from lmbuild.build.config import validate
from lmbuild.errors import UserError
from lmbuild.evaluation import report_lineage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dedup import read, real_code, run, write_cleaned  # noqa: E402

QUESTIONS = [  # OpenBookQA-like: a stem (10 to 20 words) and four short choices
    {"id": "q1", "question_stem": "A student places a metal spoon in hot soup and the handle soon becomes",
     "choices": {"text": ["cold", "hot", "wet", "soft"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
    {"id": "q2", "question_stem": "Which of these would let the most heat travel through it quickly",
     "choices": {"text": ["a wooden stick", "a steel rod", "a plastic cup", "a wool sock"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
    {"id": "q3", "question_stem": "Frilled sharks and angler fish live far beneath the surface of the ocean, which is why they are known as",
     "choices": {"text": ["Deep sea animals", "fish", "Long Sea Fish", "Far Sea Animals"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
]
HELLA = [{"query": "A man is standing on a ladder outside a house. He carefully paints the wooden window frame with a small brush",
          "choices": ["and climbs down.", "and eats it.", "then flies away.", "and sings."], "label": 0}]


def make_tasks(tmp_path: Path) -> tuple[Path, Path]:
    """An include_path folder with task YAML mini_obqa reading a local test file, and a
    HellaSwag-like file for an eval.tasks entry with data."""
    inc = tmp_path / "tasks"
    inc.mkdir()
    data = inc / "obqa_test.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (inc / "train.jsonl").write_text(json.dumps({"question_stem": "this training split text is not a source of contamination at all ok"}) + "\n")
    (inc / "mini_obqa.yaml").write_text(
        "task: mini_obqa\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n    train: {inc / 'train.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: !function utils.doc_to_text\n"
        'doc_to_choice: "{{choices.text}}"\ndoc_to_target: "{{choices.label.index(answerKey)}}"\n'
    )
    hella = tmp_path / "hella.jsonl"
    hella.write_text("".join(json.dumps(h) + "\n" for h in HELLA))
    return inc, hella


def config(inc: Path, hella: Path, **deco) -> dict:
    return validate({
        "data": {"dedup": {"memory_limit": "512MB", "decontaminate": deco}},
        "eval": {"include_path": str(inc), "tasks": ["mini_obqa", {"task": "hellaswag", "data": str(hella), "preprocessed": True}, "arc_easy"]},
    })


def test_quoting_documents_are_removed_per_task(tmp_path):
    inc, hella = make_tasks(tmp_path)
    code = real_code(6)
    docs = [
        ("t:clean", code[0]),
        ("t:q1", code[1][:1500] + "\nQuiz: " + QUESTIONS[0]["question_stem"].upper() + "?\n" + code[1][1500:3000]),  # 14 words
        ("t:q2", code[2][:800] + "\n" + QUESTIONS[1]["question_stem"] + "\n"),  # 12 words: whole-question match
        ("t:q3", code[3][:800] + "\n" + QUESTIONS[2]["question_stem"] + ".\n"),
        ("t:hella", code[4][:900] + "\n" + HELLA[0]["query"] + " " + HELLA[0]["choices"][0] + "\n"),
        ("t:train", code[5][:900] + "\n" + "this training split text is not a source of contamination at all ok\n"),
    ]
    s = data_stages.dedup_settings(config(inc, hella))
    assert [e["task"] for e in s["eval_tasks"]] == ["mini_obqa", "hellaswag"]
    counts, out = run(tmp_path, write_cleaned(tmp_path / "cleaned", [docs]), settings=s)
    assert set(read(out)["id"].to_pylist()) == {"t:clean", "t:train"}
    assert counts["dropped"] == {"contaminated": 4}
    assert counts["decontamination_removed"] == {"task:hellaswag": 1, "task:mini_obqa": 3}
    dropped = {r["id"]: r["detail"] for r in pq.read_table(out / "dropped.parquet").to_pylist()}
    assert dropped["t:q2"] == "task:mini_obqa"
    # The report's drop-reason table lists the removals per task (from the manifest's counts).
    lineage = {"lineage": {"d": {"stage": "deduplicated", "key": "k", "counts": counts, "inputs": {}}}}
    assert {r for s, r, n in report_lineage.drop_reasons(lineage) if r.startswith("task:")} == {"task:hellaswag", "task:mini_obqa"}
    assert ("deduplicated", "task:mini_obqa", 3) in report_lineage.drop_reasons(lineage)


def test_opt_out_and_explicit_tasks(tmp_path):
    inc, hella = make_tasks(tmp_path)
    assert [e["task"] for e in data_stages.dedup_settings(config(inc, hella, skip_tasks=["mini_obqa"]))["eval_tasks"]] == ["hellaswag"]
    assert "eval_tasks" not in data_stages.dedup_settings(config(inc, hella, eval_tasks=False))
    only = data_stages.dedup_settings(config(inc, hella, eval_tasks=False, tasks=["mini_obqa"]))
    assert [e["task"] for e in only["eval_tasks"]] == ["mini_obqa"]
    with pytest.raises(UserError, match=r"^data\.dedup\.decontaminate\.tasks: task 'arc_easy' has no local data to decontaminate against"):
        data_stages.dedup_settings(config(inc, hella, tasks=["arc_easy"]))
    with pytest.raises(UserError, match=r"^data\.dedup\.decontaminate\.tasks: 'piqa' is not an evaluated task"):
        data_stages.dedup_settings(config(inc, hella, tasks=["piqa"]))


def test_task_data_enters_the_deduplicated_key_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inc, hella = make_tasks(tmp_path)
    keys = lambda cfg: {n: a.key for n, a in plan.Plan(cfg).artifacts.items()}  # noqa: E731
    base = keys(config(inc, hella))
    no_tasks = keys(validate({"data": {"dedup": {"memory_limit": "512MB"}}}))
    assert base["deduplicated"] != no_tasks["deduplicated"] and base["cleaned"] == no_tasks["cleaned"]
    # Opting every task out gives the key of a config that evaluates none: nothing else differs.
    off = keys(config(inc, hella, skip_tasks=["mini_obqa", "hellaswag"]))
    assert off["deduplicated"] == no_tasks["deduplicated"]
    hella.write_text(hella.read_text().replace("ladder", "roof"))
    edited = keys(config(inc, hella))
    assert edited["deduplicated"] != base["deduplicated"] and edited["cleaned"] == base["cleaned"]
    assert {n for n in base if base[n] != edited[n]} >= {"deduplicated", "shards"}
    # The key holds the files' content, not their paths; the job gets the paths back.
    art = plan.Plan(config(inc, hella)).artifacts["deduplicated"]
    assert str(tmp_path) not in json.dumps(art.settings)
    job = apply_patches(art.settings, art.located)
    assert [Path(e["path"]).resolve() for e in job["eval_tasks"]] == [(inc / "obqa_test.jsonl").resolve(), hella.resolve()]
    (inc / "train.jsonl").write_text("{}\n")  # the train split is not a source
    assert keys(config(inc, hella))["deduplicated"] == edited["deduplicated"]
