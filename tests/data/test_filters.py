"""Filters: the vectorised Gopher statistics against a plain reference, and real language ID."""

import json
from collections import Counter

import pytest

from lmbuild.data.embedded import iter_python_stdlib, iter_shakespeare
from lmbuild.data.filters import (
    GopherRepetitionFilter,
    LanguageFilter,
    LengthFilter,
    normalize,
)


def reference_stats(text: str) -> dict:
    """The same rules written the obvious way (datatrove's loops, on stripped non-blank lines)."""
    lines = [s for s in (line.strip() for line in text.split("\n")) if s]
    seen, dup, dup_chars = set(), 0, 0
    for line in lines:
        if line in seen:
            dup, dup_chars = dup + 1, dup_chars + len(line)
        seen.add(line)
    chars = max(len(text), 1)
    out = {"dup_line_frac": dup / max(len(lines), 1), "dup_line_char_frac": dup_chars / chars}
    words = text.split()
    for n in (2, 3, 4):
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        gram, count = Counter(grams).most_common(1)[0] if grams else ("", 0)
        out[f"top_{n}_gram"] = len(gram) * count / chars if count > 1 else 0.0
    return out


EDGE_CASES = [
    "",
    "   \n\n  ",
    "word",
    "two words",
    "a b a b a b a b",  # ties between "a b" and "b a": the first wins
    "x y z\nx y z\nx y z\n",
    "spam spam spam spam spam spam spam spam eggs",
    "Ünïcödé wörds ünïcödé wörds\u00a0and\u2003spaces ünïcödé wörds",
    "line one\n  line one  \nline two\n\n\nline one",
]


def real_texts():
    acts = [t for _, t, _ in iter_shakespeare()][::19]
    code = [t for _, t, _ in iter_python_stdlib()][:60]
    return acts + code


def test_repetition_statistics_match_reference_exactly():
    texts = EDGE_CASES + real_texts()
    f = GopherRepetitionFilter()
    for batch in (texts[:5], texts[5:40], texts[40:]):  # batches mix documents of every size
        stats = f.stats(batch)
        for i, text in enumerate(batch):
            ref = reference_stats(text)
            for key, value in ref.items():
                assert stats[key][i] == pytest.approx(value, abs=1e-12), (key, text[:60])


def test_repetition_reasons_and_batch_equals_single():
    f = GopherRepetitionFilter()
    assert f.dup_line_frac == 0.30 and f.dup_line_char_frac == 0.20 and f.top_ngram == {2: 0.20, 3: 0.18, 4: 0.16}
    lines = [
        "The committee met on Tuesday.", "Rain is expected by noon.", "Prices rose sharply in May.",
        "She planted tulips along the fence.", "Our train left two hours late.", "He fixed the old radio himself.",
        "Bread tastes best when still warm.", "A fox crossed the frozen river.", "Nobody answered my letter.",
        "Five boats sailed into harbour.",
    ]
    assert f.check("\n".join(lines)) is None
    assert f.check("\n".join(lines + ["the same line again"] * 6)) == "dup_line_frac"
    # 2 duplicate lines of 10, but they hold most of the characters.
    long = "a much longer line that repeats itself, word for word, twice over here"
    assert f.check("\n".join(lines[:8] + [long, long, long])) == "dup_line_char_frac"
    assert f.check("buy now " * 30 + " ".join(f"w{i}" for i in range(60))) == "top_2_gram"
    texts = EDGE_CASES + real_texts()
    assert f.check_batch(texts) == [f.check(t) for t in texts]


def test_repetition_thresholds_from_settings():
    text = "x y z\n" * 2 + "\n".join(f"unique line {i}" for i in range(8))  # 1 of 10 lines duplicate
    assert GopherRepetitionFilter(0.3, 1.0, {}).check(text) is None
    assert GopherRepetitionFilter(0.05, 1.0, {}).check(text) == "dup_line_frac"
    assert GopherRepetitionFilter(1.0, 1.0, {"2": 0.001}).check(text) == "top_2_gram"


def test_length_and_normalisation():
    f = LengthFilter(min_chars=5, max_chars=10)
    assert [f.check(t) for t in ("abcd", "abcde", "abcdefghij", "abcdefghijk")] == ["too_short", None, None, "too_long"]
    decomposed = "Cafe\u0301 \ufb01"  # e + combining acute, fi ligature
    assert normalize(decomposed, "NFC") == "Caf\u00e9 \ufb01"
    assert normalize(decomposed, "NFKC") == "Caf\u00e9 fi"
    assert normalize("Caf\u00e9", "NFD") == "Cafe\u0301"
    assert normalize(decomposed, "none") is decomposed


def fortunes(shared_data, lang):
    with open(shared_data / "langid" / f"fortunes_{lang}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def test_language_id_on_real_fortunes(shared_data):
    f = LanguageFilter(keep=["en"], threshold=0.5)
    for lang in ("en", "de"):
        labels = [f.identify(t)[0] for t in fortunes(shared_data, lang)]
        accuracy = labels.count(lang) / len(labels)
        assert accuracy >= 0.97, (lang, accuracy)
    en, de = fortunes(shared_data, "en"), fortunes(shared_data, "de")
    assert sum(f.check(t) is None for t in en) / len(en) >= 0.95
    assert sum(f.check(t) == "lang" for t in de) / len(de) >= 0.97


def test_language_filter_keep_list_threshold_and_blank():
    text = "The committee will meet on Thursday to discuss the budget for next year."
    lang, score = LanguageFilter().identify(text + "\n\n" + text)  # newlines are collapsed first
    assert lang == "en" and 0.5 < score <= 1.0
    assert LanguageFilter(keep=[]).check("Das ist ein deutscher Satz über das Wetter.") is None
    assert LanguageFilter(keep=["de"]).check(text) == "lang"
    assert LanguageFilter(keep=["en"], threshold=1.0).check(text) == "lang"  # fastText never says 1.0 here
    assert LanguageFilter().identify(" \n\t ") == (None, None)
    assert LanguageFilter().check("") == "lang"
