"""The per-language presets of ``data.clean.preset``: partial ``data.clean`` configs.

``PRESETS[lang]`` is a partial ``data.clean`` config that :func:`apply_preset`
merges under the user's own settings (the user's values win). The thresholds of ja, zh, ko
and th are FineWeb-2's per-language settings (Penedo et al. 2025, "FineWeb2: One Pipeline
to Scale Them All", arXiv:2506.20920; configs/{jpn_Jpan,cmn_Hani,kor_Hang,tha_Thai}.yml and
fineweb-2-pipeline.py of github.com/huggingface/fineweb-2), applied as its pipeline applies
them: Gopher repetition with the paragraph and line-character rules off, FineWeb's rules
with the short-line rule off, Gopher quality with the language's stop words (2 needed),
and no C4 rules. Its ``language_score`` thresholds are GlotLID's probabilities, not
lid.176's, so ``lang.threshold`` keeps its default. ``en`` is today's rules.

Config, not stage code: a preset reaches a key through the settings it fills in, so this module
is engine (lmbuild.build.config and ``lmbuild config`` read it) and in no code set. What it does
not do: segment words (lmbuild.data.lang) or validate (the schema does, after the merge).
"""

from __future__ import annotations

import copy

from lmbuild.data.overrides import merge


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

    Runs before validation (lmbuild.build.config), so an unknown preset is reported there by
    the schema's enum; a config without a preset is returned unchanged.
    """
    clean = (config.get("data") or {}).get("clean")
    if not isinstance(clean, dict) or clean.get("preset") not in PRESETS:
        return config
    out = copy.deepcopy(config)
    out["data"]["clean"] = merge(PRESETS[clean["preset"]], clean)
    return out
