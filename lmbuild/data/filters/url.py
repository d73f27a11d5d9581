"""The URL filter: RefinedWeb's URL rules (Penedo et al. 2023, appendix G.1) on a document's URL."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from lmbuild.data.files import match_files
from lmbuild.data.filters.base import Filter
from lmbuild.data.statistics import host_of
from lmbuild.errors import UserError

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "refinedweb"
# The lists as datatrove ships them (datatrove/assets, Apache-2.0): lmbuild/data/resources/README.md.
LISTS = ("banned_words.txt", "banned_subwords.txt", "soft_banned_words.txt")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=None)
def word_list(name: str) -> frozenset[str]:
    """A vendored RefinedWeb list, normalised as datatrove does: lowercase, non-alphanumerics
    removed, ``#`` lines skipped."""
    lines = (RESOURCES / name).read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in (_NON_ALNUM.sub("", x.lower()) for x in lines if x and not x.startswith("#")) if w)


def parse_blocklist(lines: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """``(domains, urls)`` of a blocklist: one domain or URL a line; blank lines and ``#``
    comments skipped. A line with a ``/`` is a URL (compared by :func:`url_key`), else a domain."""
    domains, urls = set(), set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "/" in line:
            urls.add(url_key(line))
        else:
            domains.add(line.lower().rstrip("."))
    return frozenset(domains), frozenset(urls)


def read_blocklists(patterns: Iterable[str], where: str) -> tuple[frozenset[str], frozenset[str]]:
    """``(domains, urls)`` of the blocklist files (each a file or glob); a file that cannot be
    read is one UserError line naming the config key ``where[i]`` and the file."""
    domains, urls = set(), set()
    for i, pattern in enumerate(patterns):
        for path, _ in match_files(pattern, f"{where}[{i}]"):
            try:
                with open(path, encoding="utf-8") as fh:
                    d, u = parse_blocklist(fh)
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"{where}[{i}]: {path}: cannot read the blocklist: {exc.__class__.__name__}: {exc}") from None
            domains |= d
            urls |= u
    return frozenset(domains), frozenset(urls)


def url_key(url: str) -> str:
    """A URL compared without its scheme, ``www.``, the host's case and a trailing ``/``."""
    parts = urlsplit(url if "://" in url else "//" + url)
    host = (parts.hostname or "").removeprefix("www.")
    rest = parts.path.rstrip("/") + (f"?{parts.query}" if parts.query else "")
    return host + rest


class URLFilter(Filter):
    """RefinedWeb's URL rules (Penedo et al. 2023, "The RefinedWeb Dataset for Falcon LLM",
    appendix G.1), as datatrove's URLFilter runs them for FineWeb, on the document's URL
    (``check(url)``: its input is the URL, not the text). In order:

    * ``url_blocklist_domain``: the host or a domain above it is on the blocklist
      (``a.b.example.com`` matches ``example.com``);
    * ``url_blocklist_url``: the URL is on the blocklist (scheme, ``www.``, case of the host
      and a trailing ``/`` ignored);
    * ``url_banned_word``: a word of the URL (split on non-alphanumerics, lowercased) is in
      ``banned_words.txt``;
    * ``url_soft_banned_words``: at least ``soft_threshold`` distinct words of the URL are in
      ``soft_banned_words.txt`` (datatrove's default 2);
    * ``url_banned_subword``: an entry of ``banned_subwords.txt`` occurs in the URL with its
      non-alphanumerics removed (``my-xxx-site`` -> ``myxxxsite``).

    Differences from datatrove: the blocklist is the user's (``data.clean.url.blocklist``), not
    the 4.6M-domain UT1 blacklist RefinedWeb used (18 MB, not vendored); URL words are
    lowercased before the word rules (datatrove compares them as written). What it does not
    do: resolve redirects, or split registered domains by the public-suffix list (a blocklisted
    ``co.uk`` would block every ``.co.uk`` host).
    """

    name = "url"

    def __init__(
        self,
        domains: Iterable[str] = (),
        urls: Iterable[str] = (),
        banned_words: bool = True,
        soft_threshold: int | None = 2,
        banned_subwords: bool = True,
    ):
        self.domains = frozenset(d.lower() for d in domains)
        self.urls = frozenset(url_key(u) for u in urls)
        self.banned_words = word_list("banned_words.txt") if banned_words else frozenset()
        self.soft_words = word_list("soft_banned_words.txt") if soft_threshold is not None else frozenset()
        self.soft_threshold = soft_threshold
        self.subwords = tuple(sorted(word_list("banned_subwords.txt"))) if banned_subwords else ()

    @classmethod
    def from_settings(cls, s: dict, where: str = "data.clean.url") -> "URLFilter":
        """From ``data.clean.url`` (``where``: its config key, for errors), reading its blocklists."""
        domains, urls = read_blocklists(s["blocklist"], f"{where}.blocklist")
        return cls(domains, urls, s["banned_words"], s["soft_banned_words"], s["banned_subwords"])

    def check(self, url: str) -> str | None:
        if self.domains:
            host = (host_of(url) or "").rstrip(".")
            labels = host.split(".")
            if any(".".join(labels[i:]) in self.domains for i in range(len(labels))):
                return "url_blocklist_domain"
        if self.urls and url_key(url) in self.urls:
            return "url_blocklist_url"
        low = url.lower()
        if self.banned_words or self.soft_words:
            words = set(_NON_ALNUM.split(low))
            if not words.isdisjoint(self.banned_words):
                return "url_banned_word"
            if self.soft_threshold is not None and len(words & self.soft_words) >= self.soft_threshold:
                return "url_soft_banned_words"
        if self.subwords:
            squashed = _NON_ALNUM.sub("", low)
            if any(w in squashed for w in self.subwords):
                return "url_banned_subword"
        return None
