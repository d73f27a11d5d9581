"""C4's bad-words rule (lmbuild.data.filters.badwords) on the vendored LDNOOBW lists: a listed
word drops, a word inside another does not, phrases and punctuation entries, languages without
spaces, the kept fraction, languages without a list counted."""

from collections import Counter

import pyarrow as pa

from lmbuild.build.config import validate
from lmbuild.data.cleaner import Cleaner
from lmbuild.data.filters import BadWordsFilter
from lmbuild.data.filters.badwords import ALLOWLIST, LANGUAGES, keep_draw, lexicon

CLEAN = "The council met on Tuesday to discuss the new bridge over the river."


def test_c4_rule_any_listed_word_drops():
    f = BadWordsFilter()
    assert f.check(CLEAN, "en") is None
    assert f.check("He called it bullshit at the meeting.", "en") == "badwords"
    assert f.check("He called it BULLSHIT.", "en") == "badwords"  # the text is lowercased
    assert f.check("A classic assessment of the bass section.", "en") is None  # 'ass' inside words
    assert f.check("Tickets: 2 girls 1 cup", "en") == "badwords"  # a phrase
    assert f.check("a 2 girls 10 cup", "en") is None
    assert f.check("the g-spot.", "en") == "badwords"  # an entry with punctuation
    assert f.check("the g-spotless", "en") is None


def test_every_vendored_entry_drops_in_its_language():
    for lang in LANGUAGES:
        lex = lexicon(lang)
        assert lex is not None
        entries = [e for e in lex.entries if e not in ALLOWLIST]
        assert entries, lang
        for e in entries:
            assert BadWordsFilter().check(f"text before {e} text after", lang) == "badwords", (lang, e)


def test_languages_without_spaces_match_inside_words_and_the_allowlist():
    f = BadWordsFilter()
    ja = sorted(lexicon("ja").entries)[0]
    assert f.check(f"今日は{ja}の話です", "ja") == "badwords"
    assert f.check("女の子が公園で遊んでいる。", "ja") is None  # datatrove's ja allowlist
    assert f.check("性别", "zh") is None


def test_keep_fraction_keeps_a_stable_share_of_flagged_documents():
    docs = [f"Report {i}: the crowd shouted bullshit at the referee." for i in range(400)]
    kept = [d for d in docs if BadWordsFilter(keep_fraction=0.25).check(d, "en") is None]
    assert 60 < len(kept) < 140  # about a quarter, by the hash of each text
    assert kept == [d for d in docs if keep_draw(d) < 0.25]
    assert all(BadWordsFilter(keep_fraction=1.0).check(d, "en") is None for d in docs)


def test_no_list_is_not_checked():
    assert BadWordsFilter().flagged("bullshit", "de") is None
    assert BadWordsFilter().check("bullshit", None) is None


def test_cleaner_counts_flagged_kept_and_unlisted():
    settings = validate({"data": {"clean": {"badwords": {"enabled": True}, "min_chars": 0, "lang": {"keep": []},
                                             "gopher_repetition": {"enabled": False}, "gopher_quality": {"enabled": False},
                                             "c4": {"enabled": False}, "fineweb": {"enabled": False}}}})["data"]["clean"]
    texts = [CLEAN * 3, "The referee said it was bullshit and walked off the field in the rain. " * 3,
             "Der Stadtrat hat am Dienstag über die neue Brücke über den Fluss gesprochen. " * 3]
    n = len(texts)
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(n)], "text": texts, "source": ["s"] * n, "metadata": ['{"kind": "prose"}'] * n})
    edits = Counter()
    _, reasons, langs, _, _ = Cleaner(settings).batch(batch, edits)
    assert reasons == [None, "badwords", None] and langs[2] == "de"
    assert edits["badwords_no_list"] == 1 and edits["url_missing"] == 3
    settings["badwords"]["keep_fraction"] = 1.0
    edits = Counter()
    _, reasons, _, _, _ = Cleaner(settings).batch(batch, edits)
    assert reasons == [None, None, None] and edits["badwords_kept"] == 1


def test_the_same_answers_as_datatroves_regex():
    """datatrove's C4BadWordsFilter: one alternation between non-word characters (anywhere for
    ja, th, zh), on real prose and on every English entry at the edges of words and texts."""
    import re

    import vendored

    entries = sorted(lexicon("en").entries)
    regex = re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(map(re.escape, entries))))
    texts = [c.lower() for c in vendored.text("kjv_head.txt.gz").split("\n\n")[:300]]
    for e in entries[::3]:
        texts += [e, f"x{e}", f"{e}x", f"({e})", f"a {e}_b", f"{e}\u00e9", f"\u2014{e}\u2014"]
    lex = lexicon("en")
    assert [lex.found(t) for t in texts] == [regex.search(t) is not None for t in texts]
    assert any(lex.found(t) for t in texts) and not all(lex.found(t) for t in texts)
