from pathlib import Path

import lmbuild  # noqa: F401 (sets the hub defaults before a test module imports transformers)

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """End-to-end modules first. Under pytest-xdist's `--dist loadfile` (pyproject's addopts) a
    worker takes whole modules in collection order, so the minutes-long builds start at once
    instead of running alone at the end while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
