"""Benchmarks: a package, so they share the helpers of ``tests`` (run from the repository root)."""
