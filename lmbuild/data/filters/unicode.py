"""Unicode normalisation of a document, the ``cleaned`` stage's first step (``data.clean.normalize``)."""

from __future__ import annotations

import unicodedata


def normalize(text: str, form: str) -> str:
    """Unicode normalisation ``form`` (NFC, NFKC, NFD, NFKD) or ``"none"`` (text unchanged).

    NFC is the default because it only composes equivalent sequences (e + combining acute
    -> é): it never changes what a reader sees, unlike NFKC, which folds ligatures, full-width
    forms and superscripts. Does not fix mojibake, strip control characters or change
    whitespace.
    """
    if form == "none":
        return text
    return unicodedata.normalize(form, text)
