"""The figures of a report entry that are read off, not scored (stage ``eval_report``).

  * lm-eval's results reshaped into the report's ``metrics`` (every metric of every task, with
    its standard error and direction) and each extra task's main metric;
  * the tokenizer's tokens per word and per byte on the held-out text;
  * the model's config, parameters (each shared tensor once) and training FLOPs per token, by
    the one formula of :mod:`lmbuild.models.common`.

What it does not do: run lm-eval or a model (:mod:`lmbuild.evaluation.causal`,
:mod:`lmbuild.evaluation.masked`) or round a figure: a non-finite one becomes None.
"""

from __future__ import annotations

from lmbuild.models.common import FLOPS_FORMULA, count_parameters, llama_flops_per_token
from lmbuild.numbers import finite

MODEL_CONFIG_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings",
)


def collect_metrics(results: dict) -> dict:
    """lm-eval's results -> {task: {alias, version, n_samples, metrics: {name: {value, stderr, higher_is_better}}}}.

    A metric's name is lm-eval's, with ``,filter`` appended unless the filter is "none".
    """
    out = {}
    higher = results.get("higher_is_better", {})
    for task, entries in results.get("results", {}).items():
        metrics = {}
        for key, value in entries.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else key
            metrics[name] = {
                "value": finite(value),
                "stderr": finite(entries.get(f"{metric}_stderr,{filt}")),
                "higher_is_better": higher.get(task, {}).get(metric),
            }
        out[task] = {
            "alias": str(entries.get("alias", task)).strip(),
            "version": results.get("versions", {}).get(task),
            "n_samples": results.get("n-samples", {}).get(task),
            "metrics": metrics,
        }
    return out


def main_metric(results: dict, task: str, metrics: dict) -> str | None:
    """The first metric of the task's metric_list (lm-eval's order), else the first reported."""
    reported = metrics.get(task, {}).get("metrics", {})
    for entry in results.get("configs", {}).get(task, {}).get("metric_list", []) or []:
        if entry.get("metric") in reported:
            return entry["metric"]
    return next(iter(reported), None)


def tokenizer_stats(tokenizer, texts: list[str]) -> dict:
    """Vocabulary size and tokens per whitespace word and per UTF-8 byte over ``texts``."""
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    words = sum(len(t.split()) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "vocab_size": len(tokenizer),
        "tokens": tokens,
        "words": words,
        "bytes": nbytes,
        "tokens_per_word": tokens / words if words else None,
        "tokens_per_byte": tokens / nbytes if nbytes else None,
    }


def model_summary(model, seq_len: int) -> dict:
    """Config, parameters (each shared tensor once) and training FLOPs per token (lmbuild.models.common)."""
    config = model.config.to_dict()
    params = count_parameters(model)
    summary = {"config": {k: config[k] for k in MODEL_CONFIG_KEYS if k in config}, "parameters": params, "seq_len": seq_len}
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")
    if all(k in config for k in needed):
        m = {k: config[k] for k in needed}
        summary["flops_per_token"] = llama_flops_per_token(m, config["vocab_size"], seq_len)
        summary["flops_formula"] = FLOPS_FORMULA
    return summary
