"""Language-aware words for the cleaning rules: word segmenters per language.

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

The per-language presets of ``data.clean.preset`` (their thresholds) are config, not code:
lmbuild.build.presets.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable


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
