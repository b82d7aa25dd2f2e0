"""The test suite, a package: test modules and helpers import each other as ``tests.<dir>.<module>``.

pytest runs in importlib mode with the repository root on its ``pythonpath`` (``pyproject.toml``), so
``pytest``, ``python -m pytest`` and ``pytest tests/ic/test_cbor.py`` see the same module names. The helpers
every layer's tests share:

- ``tests/processes.py``: child processes (``icws-devnet``, ``icws-gateway``, Node checks, benchmark workers):
  start, wait for a start-up line with a timeout that shows the log tail, stop (SIGTERM, then SIGKILL).
- ``tests/plugins/``: the ``devnet``, ``devnet_process`` and ``gateway`` fixtures, registered by ``conftest.py``.
- ``tests/vectors.py``: the shared test vectors of ``../shared/vectors``.
- ``tests/tls.py``: a self-signed certificate for 127.0.0.1.
- ``tests/canisters.py``: the demo ``test`` canister on an ack / keep-alive cycle of seconds.
"""
