"""The data card of a shards artifact (``data_card.md``): what the training data is and how it was
made, in Markdown, from this artifact's statistics and the manifests upstream of it (deduplicated,
cleaned, raw: settings and counts).

What it does not do: state licences, consent or intended use (the build does not know them: the
card says so), or open an upstream artifact's files other than its manifest.
"""

from __future__ import annotations

from pathlib import Path

from lmbuild.data.statistics import ALL, mean
from lmbuild.store.artifact import read_manifest

TOP = 15  # rows of the reason, language and domain tables


def upstream(ctx) -> dict[str, dict]:
    """The manifests of deduplicated, cleaned and raw, following the inputs' paths; a stage whose
    manifest cannot be read (a library call on bare folders) is left out."""
    found: dict[str, dict] = {}
    path = ctx.inputs.get("deduplicated")
    for stage, parent in (("deduplicated", "cleaned"), ("cleaned", "raw"), ("raw", None)):
        try:
            m = read_manifest(Path(path))
        except (OSError, ValueError, TypeError):
            break
        found[stage] = m
        path = ((m.get("inputs") or {}).get(parent) or {}).get("path") if parent else None
    return found


def _n(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"


def _table(head: tuple, rows: list) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""]


def render(key: str, meta: dict, stats: dict, up: dict[str, dict]) -> str:
    total = stats[ALL]
    tokens = total.get("tokens", {}).get("total") or 0
    lines = [f"# Data card: shards {key}", "",
             "Made by the build from this artifact's stats.json and the manifests upstream of it.", "",
             "## Summary", ""]
    lines += _table(("", ""), [
        ("documents", _n(total["documents"])),
        ("tokens (eos included)", _n(tokens)),
        ("training / validation tokens in blocks", f"{_n(meta.get('train_tokens'))} / {_n(meta.get('val_tokens'))}"),
        ("sequence length", _n(meta.get("seq_len"))),
        ("tokenizer", f"{meta.get('tokenizer') or '-'} (vocabulary {_n(meta.get('vocab_size'))})"),
    ])
    lines += ["## Sources", ""]
    rows = [(name or "(none)", _n(s["documents"]), _n(s.get("tokens", {}).get("total")),
             f"{100 * s.get('tokens', {}).get('total', 0) / tokens:.1f}%" if tokens else "-",
             *(_n(round(mean(s, k), 1) if mean(s, k) is not None else None) for k in ("chars", "words", "tokens")))
            for name, s in stats.items() if name != ALL]
    lines += _table(("source", "documents", "tokens", "share", "chars/doc", "words/doc", "tokens/doc"), rows)
    lines += ["## How it was made", ""]
    raw, cleaned, dedup = up.get("raw"), up.get("cleaned"), up.get("deduplicated")
    for stage, m in (("raw", raw), ("cleaned", cleaned), ("deduplicated", dedup)):
        if m:
            c = m.get("counts") or {}
            if "documents_in" in c:
                lines.append(f"- **{stage}** `{m.get('key')}`: {_n(c.get('documents_in'))} documents in, {_n(c.get('documents_out'))} out.")
            else:  # raw: what it read
                lines.append(f"- **{stage}** `{m.get('key')}`: {_n(c.get('documents'))} documents read.")
            for src in c.get("sources") or [] if stage == "raw" else []:
                if isinstance(src, dict) and "name" in src:
                    lines.append(f"  - source `{src['name']}` ({src.get('type', '-')}): {_n(src.get('documents'))} documents, {_n(src.get('bytes'))} bytes")
    if cleaned:
        s = cleaned.get("settings") or {}
        on = sorted(k for k, v in s.items() if isinstance(v, dict) and v.get("enabled"))
        lines.append(f"- Cleaning rules on: {', '.join(on) or 'none'}; languages kept: {', '.join((s.get('lang') or {}).get('keep') or ['all'])}.")
    if dedup:
        lines.append(f"- Deduplication: {(dedup.get('settings') or {}).get('method', '-')}.")
    if not up:
        lines.append("- The upstream manifests were not found.")
    lines.append("")
    cstats = ((cleaned or {}).get("counts") or {}).get("stats", {}).get(ALL)
    if cleaned:
        dropped = sorted(((cleaned.get("counts") or {}).get("dropped") or {}).items(), key=lambda kv: -kv[1])
        lines += ["## Documents dropped by cleaning", ""] + _table(("reason", "documents"), [(r, _n(n)) for r, n in dropped[:TOP]] or [("none", 0)])
    if cstats:
        lines += ["## Languages (kept by cleaning)", ""] + _table(("language", "documents"), [(k, _n(n)) for k, n in list(cstats["lang"].items())[:TOP]] or [("-", 0)])
        if cstats["domains"]:
            lines += ["## Top domains (kept by cleaning)", ""] + _table(("domain", "documents"), [(k, _n(n)) for k, n in list(cstats["domains"].items())[:TOP]])
    lines += ["## Not recorded by the build", "",
              "Licences and terms of the sources, consent, intended uses and known biases: fill these in before publishing.", ""]
    return "\n".join(lines)


def write(ctx, meta: dict, stats: dict) -> None:
    (Path(ctx.out) / "data_card.md").write_text(render(ctx.key, meta, stats, upstream(ctx)), encoding="utf-8")
