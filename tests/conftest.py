from pathlib import Path

import lmbuild  # noqa: F401 (sets the hub defaults before a test module imports transformers)

ROOT = Path(__file__).resolve().parent.parent
