"""The report page's rows from the lineage: the manifests upstream of the evaluation (stage ``report``).

The data funnel (documents, bytes and tokens in and out of every data stage), the drop reasons
and dedup figures of whatever counts the manifests hold, and every artifact with its settings,
counts, what it uses and what uses it, upstream first.

What it does not do: open an artifact: everything comes from ``report.json``'s ``lineage``.
"""

from __future__ import annotations

from lmbuild.evaluation.report_rows import flat, fmt
from lmbuild.numbers import finite

# Stages whose counts are documents, bytes and tokens in and out (the funnel).
DATA_STAGES = ("raw", "cleaned", "deduplicated", "shards")


def lineage_sorted(data: dict) -> list[dict]:
    """The lineage's artifacts upstream first: by depth in the input graph (the stage table's
    order follows from the inputs, so it is not repeated here), then stage and key."""
    arts = {(a["stage"], a["key"]): a for a in data["lineage"].values()}
    depth: dict = {}

    def of(ref, seen=()):
        if ref not in depth:
            ins = [(i.get("stage"), i.get("key")) for i in (arts[ref].get("inputs") or {}).values()]
            depth[ref] = 1 + max((of(i, (*seen, ref)) for i in ins if i in arts and i not in seen), default=-1)
        return depth[ref]

    return sorted(arts.values(), key=lambda a: (of((a["stage"], a["key"])), a["stage"], str(a["key"])))


def _first(counts: dict, *names):
    for n in names:
        if finite(counts.get(n)) is not None:
            return counts[n]
    return None


def funnel_rows(data: dict) -> list[dict]:
    """Documents, bytes and tokens in and out of every data stage, from the manifests' counts."""
    rows = []
    for a in lineage_sorted(data):
        if a["stage"] not in DATA_STAGES:
            continue
        c = a.get("counts") or {}
        docs_out = _first(c, "documents_out", "documents")
        if a["stage"] == "shards" and docs_out is None:
            docs_out = sum(v for k, v in c.items() if k.endswith("_documents") and finite(v) is not None) or None
        tokens = _first(c, "tokens")
        if tokens is None and a["stage"] == "shards":
            tokens = sum(v for k, v in c.items() if k.endswith("_tokens") and "dropped" not in k and finite(v) is not None) or None
        rows.append({
            "stage": a["stage"], "key": a["key"],
            "documents_in": _first(c, "documents_in"), "documents_out": docs_out,
            "bytes_in": _first(c, "bytes_in"), "bytes_out": _first(c, "bytes_out", "bytes"),
            "tokens": tokens,
        })
    return rows


def drop_reasons(data: dict) -> list[tuple[str, str, float]]:
    """(stage, reason, documents) from every count whose name says drop/filter and holds numbers per reason."""
    out = []
    for a in lineage_sorted(data):
        for name, value in (a.get("counts") or {}).items():
            if isinstance(value, dict) and any(w in name for w in ("drop", "filter", "removed")):
                for reason, n in value.items():
                    if finite(n) is not None:
                        out.append((a["stage"], reason, n))
                    elif isinstance(n, dict) and finite(n.get("documents")) is not None:
                        out.append((a["stage"], reason, n["documents"]))
    return out


def dedup_rows(data: dict) -> list[tuple[str, str, str]]:
    """(stage, count, value) of every count about duplicates or clusters."""
    out = []
    for a in lineage_sorted(data):
        if a["stage"] not in DATA_STAGES:
            continue
        for k, v in flat(a.get("counts") or {}):
            if any(w in k for w in ("dup", "cluster", "group")) and not k.startswith(("dropped", "stats.")):
                out.append((a["stage"], k, fmt(v)))
    return out


def lineage_entries(data: dict) -> list[dict]:
    """Every artifact of the lineage and the eval_report itself, with what it uses and what uses it."""
    me = {"stage": "eval_report", "key": data["key"], "settings": data["settings"],
          "inputs": {c["label"]: {"stage": c["stage"], "key": c["key"]} for c in data["checkpoints"]}}
    me["inputs"]["shards"] = {"stage": "shards", "key": data["artifacts"]["shards"]}
    arts = [*lineage_sorted(data), me]
    out = []
    for a in arts:
        ins = a.get("inputs") or {}
        out.append({
            "stage": a["stage"], "key": a["key"], "path": a.get("path"), "seconds": a.get("seconds"),
            "code_hash": str(a["code_hash"]) if a.get("code_hash") else None,
            "inputs": [(n, i.get("stage"), i.get("key")) for n, i in ins.items()],
            "used_by": [(b["stage"], b["key"]) for b in arts if any(i.get("stage") == a["stage"] and i.get("key") == a["key"] for i in (b.get("inputs") or {}).values())],
            "settings_rows": [(k, fmt(v)) for k, v in flat(a.get("settings") or {})],
            # The statistics are the Data section's (lmbuild.evaluation.report_data), not rows here.
            "counts_rows": [(k, fmt(v)) for k, v in flat({n: v for n, v in (a.get("counts") or {}).items() if n != "stats"})],
        })
    return out
