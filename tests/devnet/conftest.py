"""The devnet tests use the shared devnet fixtures (``tests/plugins/devnet.py``)."""

from tests.plugins.devnet import devnet, devnet_canisters, devnet_options, devnet_process  # noqa: F401
