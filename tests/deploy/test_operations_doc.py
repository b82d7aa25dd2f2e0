"""docs/operations.md matches the code: every metric the gateway exports is in its reference and nothing else is,
every error kind and drop reason the code counts is listed (and created at zero), and every alert's runbook link
lands on a section."""

from __future__ import annotations

import re
from typing import Final

import yaml

from icws_fast.gateway.metrics import DROP_REASONS, ERROR_KINDS, GatewayMetrics
from icws_fast.gateway.supervisor import SupervisorMetrics
from tests.processes import REPO

OPERATIONS: Final = REPO / "docs" / "operations.md"
ALERTS: Final = REPO / "deploy" / "prometheus" / "alerts.yml"
_HEADING = re.compile(r"^(#+) (.+)$")
_ROW_NAME = re.compile(r"^\| `([a-z_]+)` \|")


def section(title: str, *, nested: bool = False) -> list[str]:
    """The lines under the heading ``title``, up to the next heading (``nested``: of the same or a higher level)."""
    lines = OPERATIONS.read_text().splitlines()
    for start, line in enumerate(lines):
        heading = _HEADING.match(line)
        if heading and heading[2] == title:
            level = len(heading[1])
            body = []
            for following in lines[start + 1 :]:
                other = _HEADING.match(following)
                if other and (not nested or len(other[1]) <= level):
                    break
                body.append(following)
            return body
    raise AssertionError(f"{OPERATIONS} has no section {title!r}")


def table_names(title: str) -> list[str]:
    """The backticked names in the first column of the tables of section ``title``."""
    return [match[1] for line in section(title) if (match := _ROW_NAME.match(line))]


def exported_metrics() -> set[str]:
    """The names a query uses for each metric family of a gateway and of the supervisor of ``--workers``
    (counters with their ``_total``)."""
    families = [*GatewayMetrics().registry.collect(), *SupervisorMetrics().registry.collect()]
    return {family.name + ("_total" if family.type == "counter" else "") for family in families}


def test_the_metrics_reference_lists_exactly_what_the_gateway_exports() -> None:
    documented = table_names("Metrics")
    assert len(documented) == len(set(documented)), "a metric is documented twice"
    exported = exported_metrics()
    assert exported - set(documented) == set(), "exported but not in docs/operations.md"
    assert set(documented) - exported == set(), "in docs/operations.md but not exported"


def test_every_error_kind_and_drop_reason_is_documented() -> None:
    assert table_names("Error kinds") == list(ERROR_KINDS)
    assert table_names("Drop reasons") == list(DROP_REASONS)


def test_every_error_kind_and_drop_reason_the_code_counts_is_created_at_zero() -> None:
    """The kinds and reasons written as literals where they are counted are the ones created at start."""
    package = REPO / "icws_fast"
    gateway_code = "\n".join(path.read_text() for path in (package / "gateway").glob("*.py"))
    poll_code = (package / "protocol" / "poller.py").read_text()
    counted = set(re.findall(r'errors\.labels\("(\w+)"\)', gateway_code))
    counted |= set(re.findall(r'"(poll_\w+)"', poll_code))
    assert counted, "no error kinds found: the patterns no longer match the code"
    assert counted - set(ERROR_KINDS) == set(), "error kinds counted but not in ERROR_KINDS"
    dropped = set(re.findall(r'dropped(?:\["|=\{")(\w+)"', poll_code))
    assert dropped == set(DROP_REASONS)


def test_every_alert_has_a_section_its_runbook_link_lands_on() -> None:
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    sections = [line[4:] for line in section("Alerts", nested=True) if line.startswith("### ")]
    assert sections == [rule["alert"] for rule in rules], "one section per alert, in the order of alerts.yml"
    for rule in rules:
        # GitHub's anchor of a heading that is one word: the word in lower case.
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}"
