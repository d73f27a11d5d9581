"""Document filters (datatrove style) and Unicode normalisation for the ``cleaned`` stage.

A filter answers one question per document: keep it (``None``) or drop it, and why (a short
reason string that the stage counts): :mod:`.base`. One module per rule family, each with its
paper's thresholds: :mod:`.length`, :mod:`.langid` (fastText language ID), :mod:`.gopher_repetition`
(its NumPy kernels in :mod:`.kernels`), :mod:`.gopher_quality`, :mod:`.c4`, :mod:`.fineweb`,
:mod:`.starcoder` (code), :mod:`.url` (RefinedWeb's URL rules), :mod:`.badwords` (C4's
bad-words list); :mod:`.pii` redacts and :mod:`.unicode` normalises. The order they
run in is the stage's (lmbuild.data.cleaned), not this package's.
"""

# Absolute imports: the code-set walk (lmbuild.build.codeset) follows only those.
from lmbuild.data.filters.badwords import BadWordsFilter
from lmbuild.data.filters.base import Filter, Formatter
from lmbuild.data.filters.c4 import C4Filter
from lmbuild.data.filters.fineweb import FineWebFilter
from lmbuild.data.filters.gopher_quality import GopherQualityFilter
from lmbuild.data.filters.gopher_repetition import GopherRepetitionFilter
from lmbuild.data.filters.langid import LID_MODEL, LanguageFilter, load_lid_model
from lmbuild.data.filters.length import LengthFilter
from lmbuild.data.filters.pii import PIIFormatter
from lmbuild.data.filters.starcoder import CodeFilter
from lmbuild.data.filters.unicode import normalize
from lmbuild.data.filters.url import URLFilter

__all__ = [
    "BadWordsFilter", "C4Filter", "CodeFilter", "Filter", "FineWebFilter", "Formatter", "GopherQualityFilter",
    "GopherRepetitionFilter", "LID_MODEL", "LanguageFilter", "LengthFilter", "PIIFormatter",
    "URLFilter", "load_lid_model", "normalize",
]
