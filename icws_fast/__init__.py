"""icws_fast: IC WebSocket for the Internet Computer — gateway, client SDK, CDK and devnet."""

__version__ = "0.1.0"
"""The package version: the one place it is set (pyproject.toml reads it; ``--version`` prints it)."""
