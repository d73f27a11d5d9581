"""Synthetic documents as a source: a causal language model (the *teacher*) writes them from prompts.

A ``data.sources`` entry ``{type: synthetic, model, prompts, per_prompt, max_new_tokens,
temperature, seed, batch_size}`` is read like any other source: its documents go through
cleaning and dedup as the others' do. This is self-instruct's and Cosmopedia's recipe at its
smallest: the prompts are the seeds, the teacher's samples the documents, and their quality is
the teacher's (garbage in the prompts or a weak teacher gives garbage documents; cleaning
filters some, not all).

The teacher is a local Hugging Face folder (safetensors only, no remote code) or an artifact of
this build (``model: {variant: teacher}``: that variant's trained checkpoint is an input of
raw, so it is built first and its key is in raw's key). Each prompt (one a line of the prompts
file, blank lines skipped) follows the end-of-text token, as a document does in training, and
is sampled ``per_prompt`` times; the batches are left-padded, and each is seeded from ``seed``
and its number, so that the same settings give the same bytes on the same kind of device (CPU
runs are tested for it; a GPU samples otherwise).

A document's text is the generation only, without its prompt (as Cosmopedia stores its
samples: the prompt is an instruction, not text to learn from); the prompt, its file and line,
the sample number, the teacher (``<stage>/<key>`` of a build's artifact, ``sha256:<hex>`` of a
folder: the hash in raw's key) and the sampling settings are its metadata. An empty generation
(end-of-text at once) is no document and is counted as ``empty_generation``.

What it does not do: filter or score what the teacher writes (cleaning does), use top-k or top-p
cuts, split one source over several jobs (a synthetic source is one raw job), or read pickles.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterator

from lmbuild.data.files import match_files
from lmbuild.errors import UserError

log = logging.getLogger(__name__)

SAMPLING = ("per_prompt", "max_new_tokens", "temperature", "seed", "batch_size")


def with_teacher(src: dict, index: int, inputs: dict) -> dict:
    """The entry with the teacher's folder in ``model.path`` and its identity in ``teacher``:
    raw's input ``teacher_<index>`` (a variant's artifact, by its key) or the local folder (by
    the content hash that the plan put into raw's key)."""
    from lmbuild.build.filestate import StateCache
    from lmbuild.store.artifact import read_manifest

    if "path" in src["model"]:
        folder = Path(src["model"]["path"]).expanduser()
        if not folder.is_dir():
            raise UserError(f"data.sources[{index}].model.path: {folder}: no such folder")
        teacher = f"sha256:{StateCache().folder_digest(folder)}"
    else:
        folder = Path(inputs[f"teacher_{index}"])
        manifest = read_manifest(folder)
        teacher = f"{manifest['stage']}/{manifest['key']}"
    return {**src, "model": {"path": str(folder)}, "teacher": teacher}


def read_prompts(src: dict, index: int) -> list[tuple[str, int, str]]:
    """``(file name, line number, prompt)`` of every non-blank line of the prompts file(s)."""
    out = []
    for path, rel in match_files(src["prompts"], f"data.sources[{index}].prompts"):
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise UserError(f"data.sources[{index}].prompts: {path}: invalid UTF-8 at byte {exc.start}") from None
        out += [(rel, n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    if not out:
        raise UserError(f"data.sources[{index}].prompts: {src['prompts']}: no prompts (one prompt a line)")
    return out


def load_teacher(folder: str, index: int):
    """The teacher's model (float32, eval mode, on the GPU where there is one) and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = f"data.sources[{index}].model"
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 (a missing file, a bad config, no safetensors: all "does not load")
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"{where}: {folder}: does not load as a causal language model (safetensors, no remote code): {detail}") from None
    if tok.eos_token_id is None:
        raise UserError(f"{where}: {folder}: its tokenizer has no end-of-text (eos) token")
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tok


def batch_seed(seed: int, batch: int) -> int:
    """The seed of one batch: a function of the source's seed and the batch's number only."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{batch}".encode(), digest_size=8).digest(), "little") >> 1


def generate(model, tok, prompts: list[list[int]], s: dict, batch_no: int) -> list[tuple[list[int], bool]]:
    """One batch: each prompt's new tokens (up to, without, the end-of-text token) and whether it stopped there."""
    import torch
    from transformers import GenerationConfig

    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    sample = s["temperature"] > 0
    config = GenerationConfig(
        max_new_tokens=s["max_new_tokens"], do_sample=sample, eos_token_id=eos, pad_token_id=pad,
        **({"temperature": s["temperature"], "top_k": 0, "top_p": 1.0} if sample else {}),
    )
    torch.manual_seed(batch_seed(s["seed"], batch_no))
    with torch.no_grad():
        seqs = model.generate(ids, attention_mask=mask, generation_config=config)
    out = []
    for row in seqs[:, width:].tolist():
        stop = row.index(eos) if eos in row else len(row)
        out.append((row[:stop], stop < len(row)))
    return out


def read_synthetic(src: dict, index: int, name: str, bad, units: range | None = None, threads: int | None = None) -> Iterator[tuple[str, str, dict]]:
    """The teacher's documents, ``per_prompt`` for each prompt, in prompt order; ids
    ``<name>:<prompts file>:<line>:<sample>``. ``src`` as :func:`with_teacher` returns it
    (``model.path`` a folder); ``units`` is ignored (the source is one unit). ``threads``: torch's
    CPU threads (the job's, as the model stages set them), else torch's default."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    prompts = read_prompts(src, index)
    model, tok = load_teacher(src["model"]["path"], index)
    limit = getattr(model.config, "max_position_embeddings", None)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    encoded = []
    for rel, line, text in prompts:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        ids = ids if ids and ids[0] == start else [start, *ids]
        if limit is not None and len(ids) + src["max_new_tokens"] > limit:
            raise UserError(
                f"data.sources[{index}].max_new_tokens: {rel}:{line}: the prompt's {len(ids)} tokens and {src['max_new_tokens']} new "
                f"ones exceed the teacher's {limit} positions"
            )
        encoded.append(ids)
    sampling = {k: src[k] for k in SAMPLING}
    todo = [(p, j) for p in range(len(prompts)) for j in range(src["per_prompt"])]
    size = src["batch_size"]
    for b in range(0, len(todo), size):
        batch = todo[b : b + size]
        for (p, j), (new, stopped) in zip(batch, generate(model, tok, [encoded[p] for p, _ in batch], sampling, b // size)):
            rel, line, prompt = prompts[p]
            text = tok.decode(new, skip_special_tokens=True)
            if not text.strip():
                bad.counts["empty_generation"] += 1
                continue
            meta = {"prompt": prompt, "prompt_file": rel, "prompt_line": line, "sample": j, "teacher": src.get("teacher"),
                    "sampling": sampling, "new_tokens": len(new), "stopped_at_eos": stopped}
            yield f"{name}:{rel}:{line}:{j}", text, meta
        log.info("data.sources[%d] %s: %d of %d generations", index, name, min(b + size, len(todo)), len(todo))
