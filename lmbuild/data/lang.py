"""Language-aware words for the cleaning rules: word segmenters per language, and the
per-language presets of ``data.clean.preset``.

Gopher's and FineWeb's word rules (word counts, mean word length, stop words, word n-grams,
newlines per word) were written for languages that put spaces between words. Japanese,
Chinese and Thai do not, so ``str.split()`` turns a paragraph into a few long "words".
Each document is split with the segmenter configured for the language that language ID
gave it (``data.clean.word_segmenters``; languages not listed split on whitespace).

Segmenters (all installed from PyPI with their dictionaries; none downloads at run time),
chosen as datatrove's word tokenizers are, which FineWeb-2's thresholds were computed with:

* ``sudachi``: SudachiPy with sudachidict-core, split mode A (spaCy's Japanese default);
* ``jieba``: jieba, precise mode (spaCy's Chinese segmenter in datatrove);
* ``pythainlp``: PyThaiNLP's ``newmm`` dictionary maximal matching;
* ``kiwi``: kiwipiepy's morphemes (datatrove's Korean tokenizer);
* ``chars``: no dictionary: every Han, kana, Hangul or Thai character is a word and other
  runs of non-space characters are words (a fallback; Chinese words average ~1.5
  characters, so counts run higher than jieba's);
* ``whitespace``: ``str.split()``, what the rules did before (and still do by default).

Whitespace tokens are dropped. What this module does not do: detect the language (the
``lang`` filter does), or segment mixed-language documents by parts.

Presets: ``PRESETS[lang]`` is a partial ``data.clean`` config that :func:`apply_preset`
merges under the user's own settings (the user's values win). The thresholds of ja, zh, ko
and th are FineWeb-2's per-language settings (Penedo et al. 2025, "FineWeb2: One Pipeline
to Scale Them All", arXiv:2506.20920; configs/{jpn_Jpan,cmn_Hani,kor_Hang,tha_Thai}.yml and
fineweb-2-pipeline.py of github.com/huggingface/fineweb-2), applied as its pipeline applies
them: Gopher repetition with the paragraph and line-character rules off, FineWeb's rules
with the short-line rule off, Gopher quality with the language's stop words (2 needed),
and no C4 rules. Its ``language_score`` thresholds are GlotLID's probabilities, not
lid.176's, so ``lang.threshold`` keeps its default. ``en`` is today's rules.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Callable

from lmbuild.data.overrides import merge

SEGMENTERS = ("whitespace", "chars", "sudachi", "jieba", "pythainlp", "kiwi")
# Default data.clean.word_segmenters: the languages that do not write spaces between words
# (Korean does, but FineWeb-2's Korean stop words are Kiwi morphemes).
DEFAULT_SEGMENTERS = {"ja": "sudachi", "zh": "jieba", "th": "pythainlp", "ko": "kiwi"}

# One word per character in these scripts: Han, Hiragana, Katakana (and the prolonged sound
# mark), Hangul syllables and jamo, Thai.
_CHAR_SCRIPTS = "\u3005\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u1100-\u11ff\uac00-\ud7af\u0e00-\u0e7f"
_CHARS = re.compile(f"[{_CHAR_SCRIPTS}]|[^\\s{_CHAR_SCRIPTS}]+")
# Sudachi refuses inputs over 49,149 bytes; split on lines into pieces well under that.
_SUDACHI_CHARS = 8000


def _pieces(text: str, limit: int):
    """``text`` in pieces of at most ~``limit`` characters, cut at newlines where possible."""
    start = 0
    while start < len(text):
        end = min(len(text), start + limit)
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


@lru_cache(maxsize=None)
def segmenter(name: str) -> Callable[[str], list[str]]:
    """The word splitter ``name`` (one of :data:`SEGMENTERS`), loaded once per process."""
    if name == "whitespace":
        return str.split
    if name == "chars":
        return _CHARS.findall
    if name == "sudachi":
        from sudachipy import Dictionary, SplitMode

        d, mode = Dictionary(dict="core"), SplitMode.A
        tok = d.tokenizer(mode) if hasattr(d, "tokenizer") else d.create(mode)  # create(): SudachiPy < 0.6.9

        def sudachi(text: str) -> list[str]:
            out: list[str] = []
            for piece in _pieces(text, _SUDACHI_CHARS):
                out += [m.surface() for m in tok.tokenize(piece, mode)]
            return [w for w in out if w.strip()]

        return sudachi
    if name == "jieba":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # its dictionary-cache messages go to stderr
        jieba.initialize()
        return lambda text: [w for w in jieba.lcut(text) if w.strip()]
    if name == "pythainlp":
        from pythainlp.tokenize import word_tokenize

        return lambda text: [w for w in word_tokenize(text, engine="newmm", keep_whitespace=False) if w.strip()]
    if name == "kiwi":
        from kiwipiepy import Kiwi

        kiwi = Kiwi()
        return lambda text: [t.form for t in kiwi.tokenize(text) if t.form.strip()]
    raise ValueError(f"unknown word segmenter {name!r} (one of {', '.join(SEGMENTERS)})")


def _fineweb2(
    lang: str,
    dup_line_frac: float,
    top: tuple[float, float, float],
    dup: tuple[float, ...],
    line_punct: float,
    newline_ratio: float,
    mean_word: tuple[float, float],
    alpha_words: float,
    stop_words: list[str],
) -> dict:
    """A data.clean preset from one FineWeb-2 language config, applied as its pipeline does."""
    return {
        "lang": {"keep": [lang]},
        "gopher_repetition": {
            "dup_line_frac": dup_line_frac,
            "dup_para_frac": None,
            "dup_line_char_frac": None,
            "dup_para_char_frac": None,
            "top_ngram_char_frac": dict(zip(("2", "3", "4"), top)),
            "dup_ngram_char_frac": dict(zip(("5", "6", "7", "8", "9", "10"), dup)),
        },
        "fineweb": {
            "min_line_punct_frac": line_punct,
            "max_short_lines_frac": None,
            "max_dup_line_char_frac": 0.1,
            "max_newline_word_ratio": newline_ratio,
        },
        "gopher_quality": {
            "min_mean_word_length": mean_word[0],
            "max_mean_word_length": mean_word[1],
            "min_alpha_words_frac": alpha_words,
            "stop_words": stop_words,
            "min_stop_words": 2,
        },
        "c4": {"enabled": False},
    }


# The share of words with a letter for ja and zh: FineWeb-2 publishes 0.759 and 0.735, set on
# web text, counting punctuation tokens as words (as datatrove does). Real documentation is
# denser in symbols: Debian's Japanese man pages have a median share of 0.757 (options, paths
# and 「。」 are tokens without a letter), so the published value drops half of them, and the
# Chinese ones alike. The presets use 0.6, which keeps 91 of 100 ja and 54 of 60 zh pages while
# word salad and doubled lines are still dropped (tests/data/test_lang.py); set
# data.clean.gopher_quality.min_alpha_words_frac to FineWeb-2's value for web text.
DOCUMENT_ALPHA_WORDS = 0.6

PRESETS: dict[str, dict] = {
    "en": {"lang": {"keep": ["en"]}},
    "ja": _fineweb2(
        "ja", 0.375, (0.121, 0.129, 0.145), (0.307, 0.283, 0.264, 0.248, 0.234, 0.223), 0.167, 0.162, (1, 5), DOCUMENT_ALPHA_WORDS,
        ["の", "に", "を", "は", "た", "て", "が", "と", "で", "年", "し", "・", "月", "れ", "さ"],
    ),
    "zh": _fineweb2(
        "zh", 0.287, (0.256, 0.201, 0.171), (0.198, 0.182, 0.167, 0.154, 0.14, 0.127), 0.106, 0.178, (1, 5), DOCUMENT_ALPHA_WORDS,
        ["的", "年", "在", "月", "是", "和", "日", "了", "於", "·", "為", "有", "被", "人", "中", "为", "他", "與", "後", "也", "而", "由"],
    ),
    "ko": _fineweb2(
        "ko", 0.374, (0.282, 0.228, 0.185), (0.201, 0.184, 0.168, 0.154, 0.14, 0.127), 0.062, 0.196, (1, 6), 0.791,
        ["의", "다", "이", "는", "에", "을", "한", "년", "하", "은", "를", "했", "고", "에서", "가", "있", "으로", "인", "월", "로", "되"],
    ),
    "th": _fineweb2(
        "th", 0.349, (0.221, 0.197, 0.162), (0.185, 0.168, 0.152, 0.137, 0.124, 0.111), 0.0, 0.153, (2, 10), 0.9,
        ["ใน", "ที่", "และ", "ของ", "เป็น", "มี", "การ", "ได้"],
    ),
}


def apply_preset(config: dict) -> dict:
    """``config`` with ``data.clean.preset``'s settings under the user's own ``data.clean``.

    Runs before validation (lmbuild.config), so an unknown preset is reported there by
    the schema's enum; a config without a preset is returned unchanged.
    """
    clean = (config.get("data") or {}).get("clean")
    if not isinstance(clean, dict) or clean.get("preset") not in PRESETS:
        return config
    out = copy.deepcopy(config)
    out["data"]["clean"] = merge(PRESETS[clean["preset"]], clean)
    return out
