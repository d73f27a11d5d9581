"""The report page's Data section (lmbuild.evaluation.report_data): the cleaned and shards stages'
statistics from the lineage as tables and histograms; a lineage without them says so."""

import re

from lmbuild.data.statistics import Stats
from lmbuild.evaluation import report, report_data, report_rows

from test_report import sample_data


def with_stats() -> dict:
    data = sample_data()
    cleaned, shards = Stats(), Stats()
    for i in range(30):
        cleaned.add("web", chars=300 + 40 * i, words=60 + 8 * i, lang="en" if i % 3 else "fr", lang_score=0.6 + i / 100, url=f"https://site{i % 2}.org/{i}")
        shards.add("web", chars=300 + 40 * i, words=60 + 8 * i, tokens=90 + 12 * i)
    cleaned.add("books", chars=20000, words=4000, lang="en", lang_score=0.99)
    shards.add("books", chars=20000, words=4000, tokens=5000)
    cleaned.source("web")["dropped"]["url_banned_word"] += 3
    for a in data["lineage"].values():
        if a["stage"] == "cleaned":
            a["counts"]["stats"] = cleaned.to_json()
        if a["stage"] == "shards":
            a["counts"]["stats"] = shards.to_json()
    return data


def test_rows_come_from_both_stages():
    d = report_data.data_section(with_stats())
    assert ("cleaned", "books", "1", "20,000", "4,000", report_rows.DASH) in d["sources"]
    assert [r[:2] for r in d["sources"]] == [("cleaned", "books"), ("cleaned", "web"), ("cleaned", "all sources"),
                                             ("shards", "books"), ("shards", "web"), ("shards", "all sources")]
    assert ("cleaned", "en", "21", "67.7%") in d["langs"] and ("cleaned", "site0.org", "15") in d["domains"]
    assert d["drops"] == [("cleaned", "web", "url_banned_word", "3")]
    # chars, words and lang_score of cleaned; chars, words and tokens of shards
    assert len(d["charts"]) == 6


def test_the_page_has_the_data_section():
    page = report.render_html(with_stats())
    section = page[page.index('<h2 id="data-statistics">'):page.index('<h2 id="tokenizer">')]
    assert 'href="#data-statistics"' in page
    assert section.count("<svg") == 6 and "tokens per document (shards)" in section
    assert "url_banned_word" in section and "site1.org" in section
    clip_ids = re.findall(r'<clipPath id="([^"]+)"', page)
    assert len(clip_ids) == len(set(clip_ids))
    # The statistics are not repeated as lineage rows.
    assert "stats.web" not in page


def test_a_lineage_without_statistics():
    page = report.render_html(sample_data())
    assert "No data statistics in the lineage." in page
