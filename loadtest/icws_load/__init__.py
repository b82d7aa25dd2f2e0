"""The Locust campaign's parts, imported by ``loadtest/locustfile.py`` (Locust puts its directory on ``sys.path``).

- :mod:`.targets`: what the campaign talks to (URLs, canister ids, root key, identity) and the firehose's rate;
- :mod:`.reports`: the custom samples (open latency, message latency, protocol violations) sent to Locust's stats;
- :mod:`.users`: the scenarios, one Locust ``User`` class each;
- :mod:`.thresholds`: the pass/fail thresholds, their command-line options and the verdict that sets the exit code.
"""
