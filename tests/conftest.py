import lmbuild  # noqa: F401 (sets the hub defaults before a test module imports transformers)
