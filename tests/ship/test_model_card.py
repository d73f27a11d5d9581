"""The model card: YAML metadata that huggingface_hub.ModelCard parses, with the results, the
lineage keys, the sources and their licences, and a data card."""

from __future__ import annotations

from huggingface_hub import ModelCard

from lmbuild.ship import model_card

LINEAGE = {
    "raw/r1": {"stage": "raw", "key": "r1", "settings": {"sources": [
        {"type": "embedded", "name": "shakespeare", "parts": ["shakespeare"]},
        {"type": "jsonl", "name": "web", "path": "web/*.jsonl"},
        {"type": "hf", "name": "wiki", "path": "org/wiki"},
    ]}, "counts": {"documents": 30, "bytes": 9000}, "inputs": {}},
    "cleaned/c1": {"stage": "cleaned", "key": "c1", "counts": {"documents_in": 30, "documents_out": 20, "bytes_in": 9000, "bytes_out": 7000},
                   "inputs": {"raw": {"stage": "raw", "key": "r1"}}},
    "shards/s1": {"stage": "shards", "key": "s1", "counts": {"tokens_per_source": {"shakespeare": 500, "web": 700, "wiki": 90}, "train_tokens": 1200},
                  "inputs": {"cleaned": {"stage": "cleaned", "key": "c1"}}},
    "trained_checkpoint/t1": {"stage": "trained_checkpoint", "key": "t1", "settings": {"learning_rate": 0.003, "max_steps": 40},
                              "inputs": {"shards": {"stage": "shards", "key": "s1"}}},
}
ENTRY = {"label": "trained_checkpoint", "headline": {"heldout_bits_per_byte": 2.5, "heldout_word_perplexity": 120.0},
         "extra_tasks": {"hellaswag": {"metric": "acc_norm", "value": 0.27}}}
SETTINGS = {"checkpoint": "final", "gguf": True, "gguf_type": "f16", "license": "apache-2.0", "name": "tiny", "licenses": [None, "cc-by-4.0", None]}


def card(entry=ENTRY):
    return model_card.card_text(name="tiny", settings=SETTINGS, lineage=LINEAGE, entry=entry, entry_note="the final checkpoint",
                                 keys={"export": "e1", "trained_checkpoint": "t1", "raw": "r1"},
                                 gguf={"file": "tiny-f16.gguf", "gguf_type": "f16", "agreement": 0.995, "positions": 200},
                                 files=["README.md", "config.json", "model.safetensors", "tiny-f16.gguf"],
                                 data_card="# Data card: shards s1\n\n## Summary\n\n| documents | 20 |\n")


def test_huggingface_hub_parses_the_card_with_its_results():
    parsed = ModelCard(card())
    data = parsed.data.to_dict()
    assert data["license"] == "apache-2.0" and data["pipeline_tag"] == "text-generation" and "gguf" in data["tags"]
    results = data["model-index"][0]["results"]
    assert data["model-index"][0]["name"] == "tiny"
    assert results[0]["metrics"] == [
        {"type": "bits_per_byte", "name": "held-out bits per byte", "value": 2.5},
        {"type": "perplexity", "name": "held-out word perplexity", "value": 120.0},
    ]
    assert results[1]["dataset"]["type"] == "hellaswag" and results[1]["metrics"][0] == {"type": "acc_norm", "name": "acc_norm", "value": 0.27}
    # huggingface_hub's own reading of model-index: one EvalResult per metric.
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in parsed.data.eval_results] == [
        ("lmbuild-heldout", "bits_per_byte", 2.5), ("lmbuild-heldout", "perplexity", 120.0), ("hellaswag", "acc_norm", 0.27)]
    assert data["datasets"] == ["org/wiki"]
    lm = data["lmbuild"]
    assert lm["keys"] == {"export": "e1", "trained_checkpoint": "t1", "raw": "r1"} and lm["training"]["learning_rate"] == 0.003
    # Licences: the config's, the embedded corpus's own, else unknown.
    assert [(s["name"], s["license"]) for s in lm["sources"]] == [("shakespeare", "public-domain"), ("web", "cc-by-4.0"), ("wiki", "unknown")]


def test_the_body_has_the_data_card_and_the_gguf_check():
    text = ModelCard(card()).text
    assert "| web | jsonl | cc-by-4.0 | 700 |" in text
    # The shards artifact's data card, embedded under the card's own heading (its sections below it).
    assert "### Data card\n\n#### Summary\n\n| documents | 20 |" in text and "Data card: shards" not in text
    assert "99.50% of 200 positions" in text and "`tiny-f16.gguf`" in text


def test_a_checkpoint_not_evaluated_has_no_results():
    data = ModelCard(card(entry=None)).data.to_dict()
    assert data["model-index"] == [{"name": "tiny", "results": []}]
