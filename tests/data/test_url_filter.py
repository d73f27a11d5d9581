"""RefinedWeb's URL rules (lmbuild.data.filters.url) alone and inside cleaning: blocklisted
domains with their subdomains, blocklisted URLs, banned words, soft words and subwords of the
vendored lists, documents without a URL counted, a source's own URL field, an unreadable list."""

import json
import re

import pytest

from lmbuild.build.config import validate
from lmbuild.data.filters import URLFilter
from lmbuild.data.filters.url import parse_blocklist, read_blocklists, word_list
from lmbuild.errors import UserError

from clean_runs import make_raw, rows, run_clean
from test_clean import kjv_chapters


def test_a_blocklisted_domain_blocks_its_subdomains_only():
    f = URLFilter(*parse_blocklist(["# spam farms", "example.com", "", "bad.org  # and this"]), banned_words=False, soft_threshold=None, banned_subwords=False)
    assert f.check("https://example.com/a") == "url_blocklist_domain"
    assert f.check("http://news.Example.COM:8080/x?y=1") == "url_blocklist_domain"
    assert f.check("https://a.b.bad.org/") == "url_blocklist_domain"
    assert f.check("https://notexample.com/") is None  # a suffix that is not a label boundary
    assert f.check("https://example.com.evil.net/") is None
    assert f.check("https://good.org/example.com") is None


def test_a_blocklisted_url_matches_without_scheme_www_or_trailing_slash():
    f = URLFilter(*parse_blocklist(["https://www.site.net/page/"]), banned_words=False, soft_threshold=None, banned_subwords=False)
    assert f.check("http://site.net/page") == "url_blocklist_url"
    assert f.check("https://WWW.SITE.NET/page/") == "url_blocklist_url"
    assert f.check("https://site.net/page/2") is None
    assert f.check("https://other.site.net/page") is None


def test_refinedweb_word_rules_on_the_vendored_lists():
    banned, soft, sub = word_list("banned_words.txt"), word_list("soft_banned_words.txt"), word_list("banned_subwords.txt")
    assert len(banned) > 150 and len(soft) > 50 and len(sub) > 100
    assert "ass" not in banned  # commented out in RefinedWeb's list ("#ass")
    f = URLFilter()
    word = sorted(banned)[0]
    assert f.check(f"https://host.net/a/{word.upper()}-b.html") == "url_banned_word"
    words_only = URLFilter(banned_subwords=False)
    assert words_only.check(f"https://host.net/a/x{word}x.html") is None  # not a word of the URL
    soft_two = sorted(w for w in soft if w not in banned)[:2]
    assert words_only.check(f"https://host.net/{soft_two[0]}/page") is None  # one soft word is not enough
    assert f.check(f"https://host.net/{soft_two[0]}/{soft_two[1]}") == "url_soft_banned_words"
    assert URLFilter(soft_threshold=3).check(f"https://host.net/{soft_two[0]}/{soft_two[1]}") != "url_soft_banned_words"
    spaced = next(x for x in (sorted(sub)) if not any(b in x for b in banned))
    # A subword is found with the URL's punctuation removed, inside a longer word.
    hidden = "-".join(spaced) + "zz"
    assert f.check(f"https://host.net/{hidden}") == "url_banned_subword"
    assert URLFilter(banned_subwords=False).check(f"https://host.net/{hidden}") is None
    assert f.check("https://en.wikipedia.org/wiki/River_Thames") is None


def test_read_blocklists_globs_and_an_unreadable_file(tmp_path):
    (tmp_path / "a.txt").write_text("one.com\nhttps://two.com/x\n")
    (tmp_path / "b.txt").write_text("three.net\n")
    domains, urls = read_blocklists([str(tmp_path / "*.txt")], "data.clean.url.blocklist")
    assert domains == {"one.com", "three.net"} and urls == {"two.com/x"}
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not utf-8\n")
    with pytest.raises(UserError, match=r"^data\.clean\.url\.blocklist\[1\]: .*bad\.txt: cannot read the blocklist: UnicodeDecodeError"):
        read_blocklists([str(tmp_path / "a.txt"), str(tmp_path / "bad.txt")], "data.clean.url.blocklist")
    with pytest.raises(UserError, match=r"^data\.clean\.url\.blocklist\[0\]: no file matches"):
        read_blocklists([str(tmp_path / "missing.txt")], "data.clean.url.blocklist")


def test_cleaning_drops_by_url_and_counts_documents_without_one(tmp_path):
    """Six KJV chapters: two from a blocklisted domain, one with a banned word in its URL,
    one without a URL (counted, kept); a second source names its URL field ``link``."""
    chapters = kjv_chapters(8)
    urls = ["https://www.spam.example/1", "http://sub.spam.example/2", None, "https://bible.org/" + sorted(word_list("banned_words.txt"))[0], "https://bible.org/5", "https://bible.org/6"]
    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"text": t, **({"url": u} if u else {})}) + "\n" for t, u in zip(chapters, urls)))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": t, "link": u}) + "\n" for t, u in zip(chapters[6:], ["https://spam.example/7", "https://ok.net/8"])))
    sources = [{"type": "jsonl", "name": "web", "path": str(web)}, {"type": "jsonl", "name": "other", "path": str(other)}]
    raw = make_raw(tmp_path, sources, shards=1)
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("spam.example\n")
    settings = validate({"data": {"sources": sources, "clean": {"url": {"blocklist": [str(blocklist)]}, "per_source": {"other": {"url": {"field": "link"}}}}}})["data"]["clean"]
    counts, out = run_clean(tmp_path, raw, settings)
    assert counts["dropped"].get("url_blocklist_domain") == 3
    assert counts["dropped"].get("url_banned_word") == 1
    assert counts["edits"]["url_missing"] == 1
    kept = {json.loads(r["metadata"]).get("url") or json.loads(r["metadata"]).get("link") for r in rows(out)}
    assert "https://ok.net/8" in kept and None in kept and not any(u and "spam" in u for u in kept)
    off = validate({"data": {"clean": {"url": {"enabled": False}}}})["data"]["clean"]
    counts_off, _ = run_clean(tmp_path, raw, off, name="off")
    assert not any(re.match("url", r) for r in counts_off["dropped"]) and "url_missing" not in counts_off["edits"]


def test_an_unreadable_per_source_blocklist_names_its_key(tmp_path):
    from lmbuild.data.cleaner import SourceCleaners

    bad = tmp_path / "block.txt"
    bad.write_bytes(b"\xff\xfe\n")
    sources = [{"type": "embedded", "name": "web", "parts": ["shakespeare"]}]
    settings = validate({"data": {"sources": sources, "clean": {"per_source": {"web": {"url": {"blocklist": [str(bad)]}}}}}})["data"]["clean"]
    with pytest.raises(UserError, match=r"^data\.clean\.per_source\.web\.url\.blocklist\[0\]: .*block\.txt: cannot read the blocklist"):
        SourceCleaners(settings)
