"""The test suite: a package, so test modules and their shared helpers import as ``tests.<dir>.<module>``."""
