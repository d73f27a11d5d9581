"""lmbuild.evaluation.eval_report on a tiny real checkpoint: lm-eval held-out perplexity, extra tasks, cache, report.json.

The fixture trains a byte-level BPE on Python standard-library source, saves a seeded tiny
Llama with it, a well-formed manifest and loss curve, and a shards folder of real held-out text.
"""

from __future__ import annotations

import json
import math
import re
import sysconfig
from pathlib import Path

import pytest
import vendored

from lmbuild.evaluation import causal, lm_eval_tasks, report_rows
from lmbuild.evaluation import eval_report as evaluate
from lmbuild.evaluation import report as report_mod
from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext

EOS = "<|endoftext|>"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Real text, stable across Python 3.11+ releases: the tokenizer's training set and the held-out docs.
TRAIN_FILES = ["string.py", "textwrap.py", "shlex.py", "fnmatch.py", "bisect.py", "heapq.py", "colorsys.py", "keyword.py"]
VAL_FILES = ["glob.py", "getopt.py", "this.py", "stat.py", "copy.py", "sched.py"]
HTML_PROMPT = "<script>alert('x')</script> & def"


def stdlib_docs(names: list[str], max_chars: int = 3000) -> list[str]:
    return [(STDLIB / n).read_text(encoding="utf-8")[:max_chars] for n in names]


def make_checkpoint(path: Path, *, hidden: int = 32, layers: int = 2, heads: int = 2, vocab: int = 512, max_pos: int = 128,
                    stage: str = "trained_checkpoint", seed: int = 0) -> Path:
    """Byte-level BPE trained on stdlib text + a seeded random LlamaForCausalLM, saved together."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(stdlib_docs(TRAIN_FILES, 20000), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_pos,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    manifest = {
        "stage": stage, "key": "trainedkey000001" if stage == "trained_checkpoint" else "initkey000000001", "code_hash": "c0de",
        "settings": {"learning_rate": 0.002, "max_steps": 30, "seed": 42},
        "inputs": {"init_checkpoint": {"stage": "init_checkpoint", "key": "initkey000000001", "path": "x"},
                   "shards": {"stage": "shards", "key": "shardskey0000001", "path": "y"}},
        "counts": {"initial_val_loss": 6.3, "final_val_loss": 4.1, "tokens_seen": 61440,
                   "tokens_per_second": 3100.5, "parameters": params},
    }
    if stage != "trained_checkpoint":
        manifest.update(counts={"parameters": params}, settings={"seed": seed}, inputs={})
    (path / "manifest.json").write_text(json.dumps(manifest))
    if stage != "trained_checkpoint":
        return path
    (path / "loss_curve.csv").write_text(
        "step,tokens,train_loss,val_loss,learning_rate,grad_norm\n"
        "0,0,,6.3,,\n10,20480,5.9,,0.002,1.4\n20,40960,5.0,4.6,0.0015,1.1\n30,61440,4.2,4.1,0.0002,0.9\n"
    )
    return path


def make_shards(path: Path) -> Path:
    path.mkdir(parents=True)
    with (path / "val_docs.jsonl").open("w") as f:
        for i, text in enumerate(stdlib_docs(VAL_FILES)):
            f.write(json.dumps({"id": f"stdlib/{VAL_FILES[i]}", "text": text}) + "\n")
    (path / "meta.json").write_text(json.dumps({"seq_len": 64}))
    (path / "manifest.json").write_text(json.dumps({"stage": "shards", "key": "shardskey0000001", "counts": {}}))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    return {"init_checkpoint": make_checkpoint(root / "init", stage="init_checkpoint", seed=1),
            "trained_checkpoint": make_checkpoint(root / "ckpt"), "shards": make_shards(root / "shards")}


def settings(**overrides) -> dict:
    s = {"tasks": [], "include_path": None, "val_docs": 4, "batch_size": 4, "limit": None,
         "prompts": ["def main():", HTML_PROMPT], "max_new_tokens": 12, "seed": 0}
    return {**s, **overrides}


def make_ctx(tmp: Path, inputs: dict, work: Path | None = None, **overrides) -> StageContext:
    out = tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    work = work or tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    return StageContext("eval_report", "evalkey000000001", settings(**overrides), dict(inputs), out, work, threads=2)


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    ctx = make_ctx(tmp_path_factory.mktemp("built"), inputs)
    # Causal checkpoints only, through the causal entry: no encoders' module (lmbuild.evaluation.masked)
    # is handed in, so an encoder's evaluation cannot run.
    return ctx, evaluate.build(ctx)


def by_label(data: dict) -> dict:
    return {c["label"]: c for c in data["checkpoints"]}


def test_report_json_is_in_the_schema(built):
    """One shape: the real report.json passes lmbuild/schemas/report.schema.json (what the report stage
    checks before it renders), with no top-level copy of the headline checkpoint's figures."""
    ctx, _ = built
    data = report_mod.load(ctx.out / "report.json")
    assert set(data) == {"key", "primary", "checkpoints", "settings", "artifacts", "lineage", "lm_eval", "seconds"}
    init, trained = by_label(data)["init_checkpoint"], by_label(data)["trained_checkpoint"]
    # Both belong to the run that starts at the init checkpoint, at 0 and at 61,440 tokens.
    assert (init["run"], init["tokens_seen"]) == ("initkey000000001", 0)
    assert (trained["run"], trained["tokens_seen"]) == ("initkey000000001", 61440)
    assert init["objective"] == trained["objective"] == "causal" and "skipped" not in trained
    assert data["lm_eval"]["evaluated"] == ["init_checkpoint", "trained_checkpoint"]
    assert sorted(p.name for p in ctx.out.iterdir()) == ["report.json"]  # the page is the report stage's


def test_report_json_has_heldout_perplexity(built):
    ctx, counts = built
    data = by_label(json.loads((ctx.out / "report.json").read_text()))["trained_checkpoint"]
    held = data["metrics"]["lmbuild_heldout"]
    for m in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert math.isfinite(held["metrics"][m]["value"]), m
    assert held["metrics"]["word_perplexity"]["value"] > 1
    assert held["metrics"]["byte_perplexity"]["value"] > 1
    assert held["n_samples"]["effective"] == 4
    # A random model over a 512-token vocabulary: about ln(512) = 6.2 nats per token.
    assert 4.5 < data["headline"]["heldout_token_loss"] < 8.0
    assert data["headline"]["heldout_docs"] == 4
    assert data["training"]["summary"]["final_val_loss"] == 4.1
    assert len(data["training"]["loss_curve"]) == 4
    top = json.loads((ctx.out / "report.json").read_text())
    assert top["artifacts"] == {"eval_report": "evalkey000000001", "trained_checkpoint": "trainedkey000001",
                                "init_checkpoint": "initkey000000001", "shards": "shardskey0000001"}
    assert top["lm_eval"]["batch_size"] == 4 and top["lm_eval"]["versions"]["lm_eval"]
    assert counts["heldout_word_perplexity"] == held["metrics"]["word_perplexity"]["value"]
    assert counts["generations"] == 2
    assert counts["checkpoints"] == ["init_checkpoint", "trained_checkpoint"] and top["primary"] == "trained_checkpoint"
    json.dumps(counts, allow_nan=False)
    json.loads((ctx.out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert not (ctx.out / "manifest.json").exists()


def test_a_variants_model_sits_beside_the_builds_own(inputs, tmp_path):
    """The base's report gets each variant's trained model as ``<variant>__trained_checkpoint``
    (lmbuild.build.graph); the build's own trained model stays the headline."""
    other = make_checkpoint(tmp_path / "variant", hidden=48, seed=3)
    ins = {**inputs, "small__trained_checkpoint": other}
    ctx = make_ctx(tmp_path, ins, val_docs=2, prompts=["def f():"], max_new_tokens=4)
    counts = evaluate.build(ctx)
    data = json.loads((ctx.out / "report.json").read_text())
    assert counts["checkpoints"] == ["init_checkpoint", "trained_checkpoint", "small__trained_checkpoint"]
    assert data["primary"] == "trained_checkpoint"
    assert by_label(data)["small__trained_checkpoint"]["model"]["config"]["hidden_size"] == 48
    assert counts["small__trained_checkpoint/heldout_bits_per_byte"] != counts["trained_checkpoint/heldout_bits_per_byte"]
    assert "small__trained_checkpoint" in report_mod.render_html(report_mod.load(ctx.out / "report.json"))


def test_generations_for_each_prompt(built):
    ctx, _ = built
    gens = by_label(json.loads((ctx.out / "report.json").read_text()))["trained_checkpoint"]["generations"]
    assert [g["prompt"] for g in gens] == ["def main():", HTML_PROMPT]
    for g in gens:
        assert 1 <= g["new_tokens"] <= 12 and g["completion"]


def test_generations_are_greedy(built, inputs):
    """The report's completion equals a hand-written argmax loop from end-of-text + prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx, _ = built
    gens = by_label(json.loads((ctx.out / "report.json").read_text()))["trained_checkpoint"]["generations"]
    model = AutoModelForCausalLM.from_pretrained(inputs["trained_checkpoint"]).eval()
    tok = AutoTokenizer.from_pretrained(inputs["trained_checkpoint"])
    ids = [tok.eos_token_id] + tok("def main():", add_special_tokens=False)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(12):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt == tok.eos_token_id:
                break
    assert gens[0]["completion"] == tok.decode(new) and gens[0]["new_tokens"] == len(new)


def test_the_page_renders_the_real_report_json(built):
    """The report stage's renderer over this report.json: every metric, the training charts and
    the metrics against tokens seen (init at 0, trained at 61,440), text escaped."""
    ctx, _ = built
    data = report_mod.load(ctx.out / "report.json")
    page = report_mod.render_html(data)
    assert page.count("<svg") >= 4 and "Against tokens seen" in page
    assert "lmbuild_heldout" in page and "word_perplexity" in page and "bits_per_byte" in page
    value = by_label(data)["trained_checkpoint"]["metrics"]["lmbuild_heldout"]["metrics"]["word_perplexity"]["value"]
    assert report_rows.fmt(value) in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; def" in page
    # No address but the SVG namespaces (names, never fetched).
    assert set(re.findall(r"https?://[^\"\s<]*", page)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert "<link" not in page


def test_unknown_task_is_a_user_error(inputs, tmp_path):
    with pytest.raises(UserError, match=r"eval\.tasks.*no_such_task_xyz"):
        evaluate.build(make_ctx(tmp_path, inputs, tasks=["no_such_task_xyz"]))


def test_missing_include_path_is_a_user_error(inputs, tmp_path):
    with pytest.raises(UserError, match=r"eval\.include_path"):
        evaluate.build(make_ctx(tmp_path, inputs, include_path=str(tmp_path / "nope")))


_ORIGINAL_ROLLING = causal.HFLM.loglikelihood_rolling


class SimulatedCrash(Exception):
    pass


class _Counter:
    """Counts rolling documents that reach the model (past lm-eval's request cache)."""

    def __init__(self, monkeypatch, fail_after: int | None = None):
        from lm_eval.models.huggingface import HFLM

        self.docs = 0
        original = _ORIGINAL_ROLLING

        def counted(lm, requests, disable_tqdm=False):
            if fail_after is not None and self.docs >= fail_after:
                raise SimulatedCrash("after %d documents" % self.docs)
            self.docs += len(requests)
            return original(lm, requests, disable_tqdm=disable_tqdm)

        monkeypatch.setattr(HFLM, "loglikelihood_rolling", counted)


def test_second_run_reuses_the_request_cache(inputs, tmp_path, monkeypatch):
    work = tmp_path / "work"
    first = _Counter(monkeypatch)
    a = evaluate.build(make_ctx(tmp_path / "a", inputs, work=work))
    assert first.docs == 8  # 4 held-out documents x 2 checkpoints
    assert (work / "lm_eval_cache_trained_checkpoint_rank0.db").stat().st_size > 0
    assert (work / "lm_eval_cache_init_checkpoint_rank0.db").stat().st_size > 0  # one cache per checkpoint
    second = _Counter(monkeypatch)
    b = evaluate.build(make_ctx(tmp_path / "b", inputs, work=work))
    assert second.docs == 0  # every held-out document came from the cache
    assert b["heldout_word_perplexity"] == a["heldout_word_perplexity"]


def test_interrupted_run_resumes_from_the_cache(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(causal, "ROLLING_CHUNK", 2)
    work = tmp_path / "work"
    crashing = _Counter(monkeypatch, fail_after=2)  # the second chunk of 2 documents crashes
    with pytest.raises(SimulatedCrash):
        evaluate.build(make_ctx(tmp_path / "a", inputs, work=work))
    assert crashing.docs == 2
    resumed = _Counter(monkeypatch)
    evaluate.build(make_ctx(tmp_path / "b", inputs, work=work))
    assert resumed.docs == 2 + 4  # the documents the crash lost, then the second checkpoint


def test_local_multiple_choice_task(inputs, tmp_path):
    items = [json.loads(line) for line in HELLASWAG_FIXTURE.read_text().splitlines()[:12]]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "items.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    (tasks / "mini_hellaswag.yaml").write_text(
        "task: mini_hellaswag\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {tmp_path / 'hf_datasets'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{query}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        "metadata:\n  version: 1.0\n"
    )
    ctx = make_ctx(tmp_path, inputs, tasks=["mini_hellaswag"], include_path=str(tasks), limit=8, prompts=[])
    counts = evaluate.build(ctx)
    report = json.loads((ctx.out / "report.json").read_text())
    trained = by_label(report)["trained_checkpoint"]
    acc = trained["metrics"]["mini_hellaswag"]["metrics"]["acc"]
    assert 0 <= acc["value"] <= 1 and acc["stderr"] is not None and acc["stderr"] > 0
    assert trained["metrics"]["mini_hellaswag"]["n_samples"]["effective"] == 8  # eval.limit
    assert trained["metrics"]["lmbuild_heldout"]["n_samples"]["effective"] == 4  # not limited
    assert counts["mini_hellaswag/acc"] == acc["value"]
    assert report["lm_eval"]["include_path_digest"]
    assert "mini_hellaswag" in report_mod.render_html(report_mod.load(ctx.out / "report.json"))


def test_builtin_task_names_are_found(tmp_path):
    """The quick text check lets real built-in names through to the full index and rejects typos."""
    assert lm_eval_tasks._absent_from_builtin_yaml(["hellaswag", "wikitext", "no_such_task_xyz"]) == ["no_such_task_xyz"]


HELLASWAG_DOCS = 40  # of the 60 vendored: enough for a stderr, ~10 s per checkpoint on 2 cores


def test_hellaswag_from_the_local_file(inputs, tmp_path):
    """lm-eval's own hellaswag task (prompts, metrics) scored on the local preprocessed copy."""
    data = HELLASWAG_FIXTURE
    spec = {"task": "hellaswag", "data": str(data), "preprocessed": True}
    ctx = make_ctx(tmp_path, inputs, tasks=[spec], limit=HELLASWAG_DOCS, prompts=[])
    counts = evaluate.build(ctx)
    report = json.loads((ctx.out / "report.json").read_text())
    for ck in report["checkpoints"]:
        hs = ck["metrics"]["hellaswag"]
        assert hs["n_samples"] == {"original": 60, "effective": HELLASWAG_DOCS}
        for m in ("acc", "acc_norm"):
            value, stderr = hs["metrics"][m]["value"], hs["metrics"][m]["stderr"]
            # A random tiny model: near chance (1/4); the binomial stderr of a mean over 40 items.
            assert 0 <= value <= 0.6, (ck["label"], m, value)
            assert stderr == pytest.approx(math.sqrt(value * (1 - value) / (HELLASWAG_DOCS - 1)), rel=1e-6)
        assert ck["metrics"]["lmbuild_heldout"]["n_samples"]["effective"] == 4  # eval.limit is for extra tasks only
    assert counts["trained_checkpoint/hellaswag/acc"] == report["checkpoints"][1]["metrics"]["hellaswag"]["metrics"]["acc"]["value"]
    # The task YAML includes lm-eval's own and switches the hub data set for the file.
    local = yaml_load(Path(report["lm_eval"]["local_data_tasks"]["hellaswag"]))
    assert local["include"].endswith("hellaswag/hellaswag.yaml") and local["process_docs"] is None
    assert local["dataset_kwargs"]["data_files"] == {"validation": str(data.resolve())}
    assert report["lm_eval"]["local_files"]["data"]["hellaswag"]
    page = report_mod.render_html(report_mod.load(ctx.out / "report.json"))
    assert "hellaswag" in page and "acc_norm" in page


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_local_data_errors_name_the_entry(inputs, tmp_path):
    bad = tmp_path / "items.csv"
    bad.write_text("a,b\n")
    with pytest.raises(UserError, match=r"eval\.tasks\[0\]\.data: .*expected a"):
        evaluate.build(make_ctx(tmp_path, inputs, tasks=[{"task": "hellaswag", "data": str(bad), "preprocessed": True}]))
    with pytest.raises(UserError, match=r"eval\.tasks\[0\]\.task: no lm-eval task named 'no_such_task_xyz'"):
        evaluate.build(make_ctx(tmp_path, inputs, tasks=[{"task": "no_such_task_xyz", "data": str(tmp_path)}]))


def test_local_task_files_enter_the_eval_report_key(tmp_path):
    """Editing a task YAML in include_path, or a task's data file, gives a new eval_report key
    and leaves every other key alone."""
    from lmbuild.build.config import validate
    from lmbuild.build.graph import Plan

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: t\n")
    data = tmp_path / "items.jsonl"
    data.write_text('{"query": "a", "choices": ["b", "c"], "label": 0}\n')
    cfg = {"eval": {"include_path": str(tasks), "tasks": [{"task": "hellaswag", "data": str(data), "preprocessed": True}]}}

    def keys():
        return {s: a.key for s, a in Plan(validate(cfg)).artifacts.items()}

    base = keys()
    (tasks / "t.yaml").write_text("task: t\nmetadata: {version: 2}\n")
    after_yaml = keys()
    data.write_text('{"query": "a", "choices": ["b", "c"], "label": 1}\n')
    after_data = keys()
    assert {s for s in base if base[s] != after_yaml[s]} == {"eval_report", "report", "export"}  # the page shows the new figures
    assert after_data["eval_report"] not in (base["eval_report"], after_yaml["eval_report"])
    # The task's data is also a decontamination source (data.dedup.decontaminate.eval_tasks, on by
    # default): deduplicated and what follows re-key, the stages before it keep their keys.
    assert after_data["deduplicated"] != after_yaml["deduplicated"]
    assert {s for s in ("raw", "cleaned") if base[s] != after_data[s]} == set()
    cfg["data"] = {"dedup": {"decontaminate": {"eval_tasks": False}}}
    off = keys()
    data.write_text('{"query": "a", "choices": ["b", "c"], "label": 0}\n')
    assert {s for s in off if off[s] != keys()[s]} == {"eval_report", "report", "export"}
    with pytest.raises(UserError, match=r"eval\.tasks\[0\]\.data: .*no such file"):
        validate_and_plan({"eval": {"tasks": [{"task": "hellaswag", "data": str(tmp_path / "missing.jsonl")}]}})


def validate_and_plan(cfg: dict):
    from lmbuild.build.config import validate
    from lmbuild.build.graph import Plan

    return Plan(validate(cfg))


def test_wikitext_from_the_local_release(inputs, tmp_path):
    """lm-eval's wikitext task (its detokenizer and word counts come through `include`) on the
    vendored head of the WikiText-2 release, split into articles as the hub's document-level copy is."""
    from lmbuild.evaluation import tasks as evaltasks

    release = vendored.unpack("wikitext2_valid_head.txt.gz", tmp_path / "release")
    pages = evaltasks.wikitext_pages(release)
    # The excerpt holds the validation split's first 23 articles, whole, each under its title.
    assert len(pages) == 23 and pages[0].startswith(" = Homarus gammarus = \n")
    assert all(p.startswith(" = ") for p in pages) and "".join(pages) == release.read_text().split("\n", 1)[1]
    folder = tmp_path / "wikitext"
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(json.dumps({"page": p}) + "\n" for p in pages[:1]))
    ctx = make_ctx(tmp_path, inputs, tasks=[{"task": "wikitext", "data": str(folder)}], prompts=[])
    evaluate.build(ctx)
    report = json.loads((ctx.out / "report.json").read_text())
    for ck in report["checkpoints"]:
        wt = ck["metrics"]["wikitext"]
        assert wt["n_samples"]["effective"] == 1
        # Bits per byte of a random 512-token model: about log2(512) bits per token, < 1 token per byte.
        assert 1 < wt["metrics"]["bits_per_byte"]["value"] < 9
        assert wt["metrics"]["word_perplexity"]["value"] > wt["metrics"]["byte_perplexity"]["value"] > 1


HELLASWAG_FIXTURE = vendored.FIXTURES / "hellaswag_val_60.jsonl"


def test_bf16_scores_stay_within_the_standard_error_of_fp32(inputs, tmp_path):
    """eval.dtype bfloat16 (bf16 autocast over the fp32 weights; native on a CPU with avx512_bf16,
    emulated elsewhere) against float32 on one checkpoint: HellaSwag acc and acc_norm within
    lm-eval's standard error of the fp32 figures, held-out bits/byte within 1%, and the dtype
    recorded in report.json and the counts."""
    spec = {"task": "hellaswag", "data": str(HELLASWAG_FIXTURE), "preprocessed": True}
    one = {k: v for k, v in inputs.items() if k != "init_checkpoint"}
    reports = {}
    for dtype in ("float32", "bfloat16"):
        ctx = make_ctx(tmp_path / dtype, one, tasks=[spec], prompts=["def main():"], dtype=dtype)
        counts = evaluate.build(ctx)
        reports[dtype] = json.loads((ctx.out / "report.json").read_text())
        run = reports[dtype]["checkpoints"][0]["lm_eval"]
        assert counts["dtype"] == run["dtype"] == dtype
        assert run["model_args"]["mixed_precision_dtype"] == (None if dtype == "float32" else dtype)
    fp32, bf16 = (reports[d]["checkpoints"][0]["metrics"] for d in ("float32", "bfloat16"))
    assert fp32["hellaswag"]["n_samples"]["effective"] == 60
    for m in ("acc", "acc_norm"):
        ref = fp32["hellaswag"]["metrics"][m]
        assert abs(bf16["hellaswag"]["metrics"][m]["value"] - ref["value"]) <= ref["stderr"], m
    ref = fp32["lmbuild_heldout"]["metrics"]["bits_per_byte"]["value"]
    assert bf16["lmbuild_heldout"]["metrics"]["bits_per_byte"]["value"] == pytest.approx(ref, rel=0.01)
    assert bf16["lmbuild_heldout"]["metrics"]["bits_per_byte"]["value"] != ref  # bf16 did run


def test_eval_dtype_auto_is_fp32_on_a_cpu(built):
    ctx, counts = built
    report = json.loads((ctx.out / "report.json").read_text())
    import torch

    expected = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    assert counts["dtype"] == by_label(report)["trained_checkpoint"]["lm_eval"]["dtype"] == expected


def test_local_data_reads_the_include_chain_with_lm_evals_loader(tmp_path):
    """A task in eval.include_path whose splits come from a YAML it includes (and a `!function`
    helper lm-eval must not import here): the local-data task scores the split the chain names."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "_base.yaml").write_text("dataset_path: somewhere/on_the_hub\nvalidation_split: dev\ntest_split: null\noutput_type: multiple_choice\n")
    (tasks / "mine.yaml").write_text("include: _base.yaml\ntask: my_task\nprocess_docs: !function utils.process_docs\n")
    data = tmp_path / "dev.jsonl"
    data.write_text('{"query": "q", "choices": ["a", "b"], "label": 0}\n')
    out = lm_eval_tasks.write_local_data_task({"task": "my_task", "data": str(data), "preprocessed": False}, 0, tmp_path / "work", tasks)
    cfg = yaml_load(out)
    assert cfg["include"] == str(tasks / "mine.yaml") and cfg["dataset_path"] == "json"
    assert cfg["validation_split"] == "dev" and cfg["test_split"] is None
    assert cfg["dataset_kwargs"]["data_files"] == {"dev": str(data)}
    (tasks / "mine.yaml").write_text("include: _missing.yaml\ntask: my_task\n")
    with pytest.raises(UserError, match=r"^eval.tasks\[0\].task: lm-eval could not read .*mine.yaml"):
        lm_eval_tasks.write_local_data_task({"task": "my_task", "data": str(data), "preprocessed": False}, 0, tmp_path / "work", tasks)


def test_kept_checkpoints_are_evaluated_with_their_tokens_seen(inputs, tmp_path):
    """A trained checkpoint's kept steps (train.keep_steps, counts.kept) each get an entry in
    report.json, in the order of tokens seen, with its ``tokens_seen``; with eval.average_last the
    mean of the last kept steps too, on the same run (lmbuild.training.average)."""
    trained = make_checkpoint(tmp_path / "trained")
    for step, seed in ((10, 5), (20, 6)):
        make_checkpoint(trained / "steps" / str(step), seed=seed)
    manifest = json.loads((trained / "manifest.json").read_text())
    manifest["counts"]["kept"] = [{"step": s, "tokens_seen": s * 2048, "path": f"steps/{s}"} for s in (10, 20)]
    (trained / "manifest.json").write_text(json.dumps(manifest))
    ctx = make_ctx(tmp_path, {**inputs, "trained_checkpoint": trained}, val_docs=2, prompts=["def f():"], max_new_tokens=4, average_last=2)
    counts = evaluate.build(ctx)
    data = report_mod.load(ctx.out / "report.json")  # in the schema
    assert counts["checkpoints"] == ["init_checkpoint", "trained_checkpoint@step-10", "trained_checkpoint@step-20", "trained_checkpoint@average-2",
                                     "trained_checkpoint"]
    assert [e["tokens_seen"] for e in data["checkpoints"]] == [0, 20480, 40960, 40960, 61440]
    assert by_label(data)["trained_checkpoint@average-2"]["averaged"] == {"steps": [10, 20]}
    assert data["primary"] == "trained_checkpoint"
    assert len({e["run"] for e in data["checkpoints"]}) == 1  # one training run: one line per metric in the report
    figures = [counts[f"{label}/heldout_bits_per_byte"] for label in counts["checkpoints"]]
    assert len(set(figures)) == 5  # five different models, each evaluated
