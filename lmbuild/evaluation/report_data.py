"""The report page's Data section (stage ``report``): the per-source statistics that the cleaned and
shards stages record in their manifests (``counts.stats``, lmbuild.data.statistics), read from
report.json's lineage: sizes per document by source, languages, scores, top domains, drops per
source and reason, and histograms as inline SVG.

What it does not do: open an artifact (``stats.json`` is the same figures), or recompute anything
from documents (the bins are lmbuild.data.statistics'). Lineages without statistics (artifacts built before they existed) show none.
"""

from __future__ import annotations

from markupsafe import Markup
from matplotlib.figure import Figure

from lmbuild.data.statistics import ALL, EDGES
from lmbuild.evaluation.report_charts import COLORS, _svg
from lmbuild.evaluation.report_lineage import lineage_sorted
from lmbuild.evaluation.report_rows import fmt

TOP = 15


def stats_of(data: dict) -> list[tuple[str, str, dict]]:
    """``(stage, key, stats)`` of every artifact of the lineage whose counts hold statistics."""
    return [(a["stage"], a["key"], a["counts"]["stats"]) for a in lineage_sorted(data)
            if isinstance((a.get("counts") or {}).get("stats"), dict) and ALL in a["counts"]["stats"]]


def _mean(s: dict, name: str):
    return s[name]["total"] / s["documents"] if isinstance(s.get(name), dict) and s.get("documents") else None


def histogram_chart(name: str, title: str, xlabel: str, edges: list, series: list[tuple[str, list]], log_bins: bool) -> Markup | None:
    """One step line per series over the bins (empty bins at both ends left out); None when empty."""
    series = [(label, counts) for label, counts in series if any(counts)]
    if not series:
        return None
    used = [i for i in range(len(edges)) if any(c[i] for _, c in series)]
    lo, hi = used[0], used[-1] + 1
    fig = Figure(figsize=(5.6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, counts) in enumerate(series):
        ax.stairs(counts[lo:hi], range(lo, hi + 1), label=label, color=COLORS[i % len(COLORS)], lw=1.6)
    ticks = list(range(lo, hi + 1, max(1, (hi - lo) // 6)))
    ax.set_xticks(ticks, [fmt(edges[t]) if t < len(edges) else "" for t in ticks] if log_bins else [f"{edges[t]:.2f}" if t < len(edges) else "1" for t in ticks])
    ax.set(title=title, xlabel=xlabel, ylabel="documents")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _svg(fig, name)


def data_section(data: dict) -> dict:
    """Rows and charts of the Data section."""
    sources, langs, domains, drops, charts = [], [], [], [], []
    for stage, key, stats in stats_of(data):
        per = [(name, s) for name, s in stats.items() if name != ALL]
        for name, s in [*per, (ALL, stats[ALL])] if len(per) > 1 else per:
            sources.append((stage, "all sources" if name == ALL else name or "(none)", fmt(s["documents"]),
                            *(fmt(_mean(s, k)) for k in ("chars", "words", "tokens"))))
        total = stats[ALL]
        n = total["documents"] or 1
        langs += [(stage, lang, fmt(c), f"{100 * c / n:.1f}%") for lang, c in list(total.get("lang", {}).items())[:TOP]]
        domains += [(stage, d, fmt(c)) for d, c in list(total.get("domains", {}).items())[:TOP]]
        drops += [(stage, name or "(none)", reason, fmt(c)) for name, s in per for reason, c in s.get("dropped", {}).items()]
        for what in ("chars", "words", "tokens"):
            chart = histogram_chart(f"{stage}-{what}", f"{what} per document ({stage})", f"{what} (bins double)", EDGES[what],
                                    [(name or "(none)", s[what]["counts"]) for name, s in per if what in s], log_bins=True)
            charts.append(chart)
        for what in ("lang_score", "quality_score"):
            if what in total:
                charts.append(histogram_chart(f"{stage}-{what}", f"{what.replace('_', ' ')} ({stage})", what, EDGES[what], [("all", total[what]["counts"])], log_bins=False))
    return {"sources": sources, "langs": langs, "domains": domains, "drops": drops, "charts": [c for c in charts if c is not None]}
