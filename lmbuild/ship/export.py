"""Stage ``export``: the trained model shipped, as one folder a hub repository can hold.

What it does:
  * picks the checkpoint (``export.checkpoint``): the trained model, a kept step
    (``step-<n>``, ``steps/<n>/``), or the mean of the last ``export.average_last`` kept steps
    (:mod:`lmbuild.training.average`);
  * copies its HF files (config, safetensors, tokenizer; not the loss curve, TensorBoard events
    or kept steps) into the artifact, so ``from_pretrained(<artifact>)`` loads it;
  * writes ``<name>-<type>.gguf`` (f16 or q8_0, :mod:`lmbuild.ship.gguf_file`) and reads it back
    with transformers' GGUF loader, an independent reader: on the first ``export.check_docs``
    held-out documents (the shards' ``val_docs.jsonl``) it must choose the HF model's next token
    at ``export.min_agreement`` of the positions or the export fails; the agreement is a count;
  * writes the model card, README.md (:mod:`lmbuild.ship.model_card`), from the evaluation's
    ``report.json``: the exported checkpoint's figures where the evaluation has them.

What it does not do: evaluate the model (the eval_report stage does; an average is evaluated
there with ``eval.average_last``), upload (``snakemake push``, :mod:`lmbuild.ship.push`), run
llama.cpp, or export an encoder's GGUF (one line says so; ``export.gguf: false`` ships its HF
folder).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from lmbuild.errors import UserError
from lmbuild.evaluation.lineage import walk_lineage
from lmbuild.ship.gguf_file import check_model, write_gguf
from lmbuild.ship.model_card import card_text
from lmbuild.store.artifact import read_manifest
from lmbuild.training.average import average_kept, last_kept

log = logging.getLogger(__name__)

# The files of a from_pretrained folder that ship; anything else (loss_curve.csv, tensorboard/,
# steps/, checkpoint.json, average.json, manifest.json) stays behind.
MODEL_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def choose(s: dict, trained: Path, manifest: dict, work: Path) -> tuple[Path, str, dict]:
    """(folder, report label, what it is) of the checkpoint ``export.checkpoint`` names."""
    which = s["checkpoint"]
    if which == "final":
        return trained, "trained_checkpoint", {"checkpoint": "final", "tokens_seen": (manifest.get("counts") or {}).get("tokens_seen")}
    if which == "average":
        n = s["average_last"]
        last_kept(manifest, n, "export.average_last")  # the one line before any work
        folder = work / "average"
        shutil.rmtree(folder, ignore_errors=True)
        info = average_kept(trained, manifest, n, folder, "export.average_last")
        return folder, f"trained_checkpoint@average-{n}", {"checkpoint": "average", **info}
    step = int(which.removeprefix("step-"))
    kept = {k["step"]: k for k in (manifest.get("counts") or {}).get("kept") or []}
    if step not in kept:
        raise UserError(f"export.checkpoint: {which}: {trained} kept no step {step} (kept: {sorted(kept) or 'none'})")
    return trained / kept[step]["path"], f"trained_checkpoint@step-{step}", {"checkpoint": which, "tokens_seen": kept[step]["tokens_seen"]}


def copy_model(folder: Path, trained: Path, out: Path) -> list[str]:
    """The HF files of ``folder`` (the tokenizer's from the trained model where a kept step has none)."""
    names = [f.name for f in sorted(folder.glob("*.safetensors"))] + [n for n in (*MODEL_FILES, "model.safetensors.index.json") if (folder / n).is_file()]
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise UserError(f"export: {folder} is not a Hugging Face model folder (config.json and safetensors weights)")
    for n in names:
        shutil.copyfile(folder / n, out / n)
    tok_src = folder if (folder / "tokenizer_config.json").is_file() else trained
    toks = [n for n in TOKENIZER_FILES if (tok_src / n).is_file()]
    if not toks:
        raise UserError(f"export: {trained} has no tokenizer files")
    for n in toks:
        shutil.copyfile(tok_src / n, out / n)
    return sorted(names + toks)


def heldout_texts(val_docs: Path, n: int) -> list[str]:
    """The first ``n`` non-empty held-out documents (the shards' ``val_docs.jsonl``)."""
    if not val_docs.is_file():
        raise UserError(f"export: {val_docs} is missing: no held-out text to check the GGUF on (export.check_docs: 0 skips the check)")
    texts = []
    with val_docs.open(encoding="utf-8") as f:
        for line in f:
            if len(texts) >= n:
                break
            text = json.loads(line).get("text", "") if line.strip() else ""
            if text.strip():
                texts.append(text)
    return texts


def agreement(folder: Path, gguf_path: Path, texts: list[str], seq_len: int) -> dict:
    """Next-token choices of the HF model in ``folder`` and of the GGUF read back by transformers'
    GGUF loader, on the first ``seq_len`` tokens of each text: positions and the share that agree."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    back_tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    same = total = tok_same = 0
    with torch.no_grad():
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"][:seq_len]
            tok_same += ids == back_tok(text, add_special_tokens=False)["input_ids"][:seq_len]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids])
            same += int((hf(x).logits.argmax(-1) == back(x).logits.argmax(-1)).sum())
            total += len(ids)
    return {"positions": total, "agreement": round(same / total, 6) if total else None, "tokenizer_agrees": tok_same == len(texts)}


def build(ctx) -> dict:
    started = time.time()
    torch.set_num_threads(ctx.threads)
    s = ctx.settings
    trained, report_dir = Path(ctx.inputs["trained_checkpoint"]), Path(ctx.inputs["eval_report"])
    manifest = read_manifest(trained)
    cfg = json.loads((trained / "config.json").read_text())
    if s["gguf"]:
        check_model(cfg, f"export: {trained / 'config.json'}")  # an encoder: one line before any work
    folder, label, chosen = choose(s, trained, manifest, Path(ctx.work))
    out = Path(ctx.out)
    files = copy_model(folder, trained, out)
    name = s["name"] or f"lmbuild-{manifest.get('key')}"

    gguf = None
    if s["gguf"]:
        path = out / f"{name}-{s['gguf_type']}.gguf"
        gguf = {"file": path.name, **write_gguf(out, path, s["gguf_type"], name)}
        files.append(path.name)
        if s["check_docs"]:
            texts = heldout_texts(Path(ctx.inputs["shards"]) / "val_docs.jsonl", s["check_docs"])
            gguf.update(agreement(out, path, texts, cfg["max_position_embeddings"]))
            if gguf["agreement"] is not None and gguf["agreement"] < s["min_agreement"]:
                raise UserError(f"export: the GGUF chose the HF model's next token at {gguf['agreement']:.2%} of {gguf['positions']} held-out positions, below export.min_agreement ({s['min_agreement']})")

    report = json.loads((report_dir / "report.json").read_text())
    entry = next((e for e in report.get("checkpoints") or [] if e.get("label") == label), None)
    note = (f"the {chosen['checkpoint']} checkpoint, evaluated as `{label}`" if entry else
            f"the {chosen['checkpoint']} checkpoint, which the evaluation did not score"
            + (f" (set eval.average_last: {s['average_last']})" if chosen["checkpoint"] == "average" else ""))
    # The trained model's own upstream (the report's lineage also holds the variants' it compares).
    lineage = walk_lineage({"trained_checkpoint": trained})
    keys = {"export": ctx.key, "eval_report": report.get("key"), **{a["stage"]: a["key"] for a in lineage.values()}}
    files.append("README.md")
    data_card = Path(ctx.inputs["shards"]) / "data_card.md"
    card = card_text(name=name, settings=s, lineage=lineage, entry=entry, entry_note=note, keys=keys, gguf=gguf, files=sorted(files),
                     data_card=data_card.read_text(encoding="utf-8") if data_card.is_file() else None)
    (out / "README.md").write_text(card)
    counts = {"name": name, **chosen, "evaluated_as": label if entry else None, "files": sorted(files), "gguf": gguf,
              "seconds": round(time.time() - started, 3)}
    log.info("export: %s", counts)
    return counts
