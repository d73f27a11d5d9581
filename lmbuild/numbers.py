"""The one reading of a figure as a number: a finite float, or None.

Reports and trackers take figures from JSON they did not write (lm-eval's results, manifests'
counts, ``report.json``), where a figure can be ``"N/A"``, a bool, NaN or inf. Each reader
keeps only finite numbers, the same way, through :func:`finite`.

A shared leaf (``lmbuild.build.codeset.LEAVES``): the engine's tracking reads figures with it,
and it is in the code sets of the stages that import it (eval_report, report, sweep_report).
It imports nothing. What it does not do: format a number for people (each page has its own
notation) or coerce config values (``lmbuild.build.config.coerce_number``).
"""

from __future__ import annotations

import math


def finite(value) -> float | None:
    """``value`` as a float where it is a finite int or float; None for anything else (a bool,
    a string such as lm-eval's "N/A", NaN, inf, None). JSON has no NaN: a report keeps None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
