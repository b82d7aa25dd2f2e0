"""Fixtures for every test: the devnet ones of ``tests/plugins/devnet.py``."""

pytest_plugins = ["tests.plugins.devnet"]
