"""PII redaction: e-mail and IP addresses in kept documents, replaced and counted."""

from __future__ import annotations

import ipaddress
import re

from lmbuild.data.filters.base import Formatter

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.]*\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*(?![\w:])")


class PIIFormatter(Formatter):
    """Replaces e-mail addresses with ``email@example.com`` and IP addresses with
    documentation addresses (``192.0.2.1``, RFC 5737; ``2001:db8::1``, RFC 3849), counting
    each kind ("pii_email", "pii_ipv4", "pii_ipv6"), in the manner of datatrove's
    PIIFormatter. By default only globally routable IPs are replaced (``127.0.0.1``,
    ``10.0.0.1`` or ``::1`` identify nobody and are common in code and docs), as datatrove's
    ``only_remove_public_ips`` does. The regexes find candidates cheaply (four dotted
    numbers; hex groups with at least two colons) and ``ipaddress`` decides what is an
    address, so "999.1.1.1", "12:30" or a slice ``x[::2]`` stay as they are.

    What it does not do: names, phone numbers, street addresses, keys or passwords; an
    obfuscated address ("jane at example dot com") passes.
    """

    EMAIL, IPV4, IPV6 = "email@example.com", "192.0.2.1", "2001:db8::1"

    def __init__(self, email: bool = True, ip: bool = True, only_public_ips: bool = True):
        self.email, self.ip, self.only_public = email, ip, only_public_ips

    @classmethod
    def from_settings(cls, s: dict) -> "PIIFormatter":
        """From ``data.clean.pii``."""
        return cls(s["email"], s["ip"], s["only_public_ips"])

    def _ip(self, match: re.Match, replacement: str, counts: dict, key: str) -> str:
        try:
            addr = ipaddress.ip_address(match.group(0))
        except ValueError:
            return match.group(0)
        if self.only_public and not addr.is_global:
            return match.group(0)
        counts[key] = counts.get(key, 0) + 1
        return replacement

    def format(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        if self.email and "@" in text:
            text, n = _EMAIL.subn(self.EMAIL, text)
            if n:
                counts["pii_email"] = n
        if self.ip:
            if "." in text:
                text = _IPV4.sub(lambda m: self._ip(m, self.IPV4, counts, "pii_ipv4"), text)
            if ":" in text:
                text = _IPV6.sub(lambda m: self._ip(m, self.IPV6, counts, "pii_ipv6"), text)
        return text, counts
