"""The CDK's over-HTTP tests use the shared devnet fixtures (``tests/plugins/devnet.py``)."""

import sys
from pathlib import Path

try:
    import tests.plugins.devnet as plugin
except ModuleNotFoundError:  # run as `pytest`, not `python -m pytest`: the repository root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import tests.plugins.devnet as plugin

devnet = plugin.devnet
devnet_canisters = plugin.devnet_canisters
devnet_options = plugin.devnet_options
