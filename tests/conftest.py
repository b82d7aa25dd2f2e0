"""Fixtures for every test: an in-process devnet or devnet process, an in-process gateway in front of it."""

pytest_plugins = ["tests.plugins.devnet", "tests.plugins.gateway"]
