"""The data stages' rows of the stage table (lmbuild.build.stages): raw, quality_model, cleaned,
deduplicated and tokenizer, their settings and the hooks that split raw, cleaned and deduplicated
into parts keyed by what they read (lmbuild.build.graph.Part).

Engine code, like the table: it enters no key. What it does not do: read any data (the groups of
input files come from lmbuild.data.groups, by name and size) or compute a key.
"""

from __future__ import annotations

import json

from lmbuild.build import locate
from lmbuild.data import eval_sources
from lmbuild.data.groups import layout as raw_layout, part_settings as raw_part_settings
from lmbuild.errors import UserError

# Keys of a data.sources entry that only the export's model card reads (in its key, not raw's).
CARD_ONLY = ("license",)


def sources_for_keys(sources: list[dict]) -> list[dict]:
    return [{k: v for k, v in src.items() if k not in CARD_ONLY} for src in sources]


def raw_settings(c: dict) -> dict:
    """data.sources, shards, files_per_job. A synthetic source's teacher variant is named by its
    artifact (the input teacher_<i>, :func:`teachers`), not by the variant's name."""
    d = c["data"]
    sources = [
        {**s, "model": {"stage": s["model"].get("stage", "trained_checkpoint")}} if s["type"] == "synthetic" and "variant" in s["model"] else s
        for s in sources_for_keys(d["sources"])
    ]
    return {"sources": sources, "shards": d["shards"], "files_per_job": d["files_per_job"]}


def teachers(plan) -> dict:
    """raw's ``teacher_<i>`` inputs: the artifact that ``data.sources[i]`` of type synthetic takes
    its documents from (``model: {variant: ...}``); so it is built first, and its key is in raw's."""
    return {
        f"teacher_{i}": plan.variant(s["model"]["variant"]).artifacts[s["model"].get("stage", "trained_checkpoint")]
        for i, s in enumerate(plan.config["data"]["sources"])
        if s["type"] == "synthetic" and "variant" in s["model"]
    }


def raw_parts(a) -> list[dict]:
    """One part per group of input files (lmbuild.data.groups): its own files by content, its
    source's settings (and the embedded corpus's versions), data.shards; not its position."""
    env = locate.embedded_corpus("sources")(a.settings)["sources"]
    out = []
    for g in raw_layout(a.settings):
        settings = raw_part_settings(a.settings, g)
        settings["environment"] = env[g.source]
        # Where the part's files are now, and which source it is in this config (its messages
        # name data.sources[i]): put back for the job like a path, in no key.
        located = [[["source", *w[2:]], f, path] for w, f, path in a.located if w[:2] == ["sources", g.source]] + [[[], "index", g.source]]
        # A synthetic source's teacher artifact is an input of its part (its key in the part's).
        teacher = {n: i for n, i in a.inputs.items() if n == f"teacher_{g.source}"}
        out.append({"settings": settings, "located": located, "inputs": teacher, "info": {"source": g.source, "first_shard": g.first_shard, "shards": g.shards}})
    return out


def cleaned_parts(a) -> list[dict]:
    """One part per raw shard: the raw part's key and the shard's number in it, the cleaning
    settings (and the classifier's key): a raw part that is reused keeps its cleaned parts."""
    more = {n: i for n, i in a.inputs.items() if n != "raw"}
    return [
        {"settings": {**a.settings, "shard": j}, "inputs": {"raw": rp, **more}, "info": {"shard": rp.info["first_shard"] + j}}
        for rp in a.inputs["raw"].parts
        for j in range(rp.info["shards"])
    ]


def dedup_maps(a) -> list[dict]:
    """Deduplication's map, one per cleaned part: its hash keys per bucket and contaminated ids
    depend on that part and the dedup settings only, so a reused cleaned part keeps its map."""
    return [{"settings": a.settings, "located": a.located, "inputs": {"cleaned": cp}} for cp in a.inputs["cleaned"].parts]


def cleaned_inputs(c: dict) -> tuple[str, ...]:
    """The trained classifiers are an input only when cleaning scores with one."""
    d = c["data"]
    legacy = d["clean"]["quality"]["enabled"]
    if legacy:
        q = d["quality_model"]
        if not q["positives"] or not q["negatives"]:
            raise UserError("config: data.clean.quality.enabled needs data.quality_model.positives and data.quality_model.negatives")
        if "quality" in d["classifiers"]:
            raise UserError("config: data.classifiers.quality: the name of data.quality_model's classifier, which data.clean.quality.enabled uses; rename one")
    if "lang" in d["classifiers"]:
        raise UserError("config: data.classifiers.lang: its column would be lang_score, which cleaning writes already; rename it")
    for name, s in d["classifiers"].items():
        for side in ("positives", "negatives"):
            if not s[side]:
                raise UserError(f"config: data.classifiers.{name}.{side}: no sources (a classifier needs positives and negatives)")
    return ("raw", "quality_model") if legacy or d["classifiers"] else ("raw",)


def labelled(q: dict) -> dict:
    """A classifier's settings without its sources' card-only keys (a licence)."""
    return {**q, "positives": sources_for_keys(q["positives"]), "negatives": sources_for_keys(q["negatives"])}


def classifier_settings(c: dict) -> dict:
    """What the quality_model stage trains: data.quality_model when cleaning uses it (as the
    classifier ``quality``), and data.classifiers without their keep rules, which cleaning
    applies (editing one re-cleans and trains nothing)."""
    d = c["data"]
    out = {"quality_model": labelled(d["quality_model"])} if d["clean"]["quality"]["enabled"] else {}
    named = {n: labelled({k: v for k, v in s.items() if k != "keep"}) for n, s in d["classifiers"].items()}
    return {**out, "classifiers": named} if named else out


def cleaned_settings(c: dict) -> dict:
    """data.clean, and the named classifiers' keep rules when there are any (absent otherwise, so
    that a build without them keeps its keys)."""
    keep = {n: {"keep": s["keep"]} for n, s in c["data"]["classifiers"].items()}
    return {**c["data"]["clean"], "classifiers": keep} if keep else c["data"]["clean"]


def tokenizer_inputs(c: dict) -> tuple[str, ...]:
    """A pretrained tokenizer reads no data; a trained one reads the deduplicated corpus."""
    return ("deduplicated",) if c["tokenizer"]["type"] == "bpe" else ()


def dedup_settings(c: dict) -> dict:
    """data.dedup without what is off (paragraph and substring dedup's keys, the task choices), plus
    ``eval_tasks``: the evaluated tasks' local data files that it decontaminates against
    (lmbuild.data.eval_sources), so that a config without them keeps its key."""
    s = json.loads(json.dumps(c["data"]["dedup"]))
    if not s.get("substrings"):
        s.pop("substrings", None)
        s.pop("substring_min_bytes", None)
    if not s.get("paragraphs"):
        s.pop("paragraphs", None)
    if not (s.get("paragraphs") or s.get("substrings")):
        s.pop("edited_min_words", None)
    deco = s.get("decontaminate", {})
    sources = eval_sources.task_sources(c["eval"], deco)
    for k in ("eval_tasks", "skip_tasks", "tasks"):
        deco.pop(k, None)
    if sources:
        s["eval_tasks"] = sources
    return s


CLEANING_LISTS = tuple(
    f"lmbuild/data/resources/{f}"
    for f in ("refinedweb/banned_words.txt", "refinedweb/banned_subwords.txt", "refinedweb/soft_banned_words.txt",
              "ldnoobw/en", "ldnoobw/ja", "ldnoobw/ko", "ldnoobw/th", "ldnoobw/zh")
)
