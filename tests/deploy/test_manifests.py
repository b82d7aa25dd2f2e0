"""The deployment recipes hold together: Kubernetes manifests, compose stacks and the image run a gateway.

Every manifest in ``deploy/k8s`` is validated against the Kubernetes API schemas (``kubernetes-validate``,
strict: an unknown field is an error, as ``kubectl apply --validate=strict`` makes it) and the ServiceMonitor
against the OpenAPI schema of prometheus-operator's CRD (vendored beside this file). The compose stacks go
through ``docker-compose config`` (Debian's, no daemon needed) by way of ``scripts/stack_compose.sh``.
Then the gateway's flags and environment are taken out of the StatefulSet, the compose files and the
Dockerfile and run through the gateway's own parser, so a typo'd flag fails here, and the ports and paths the
probes, Services, scrapes and health checks use are checked against what those flags make the gateway serve.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from icws_fast.cliconfig import config_from_argv
from icws_fast.gateway.cli import build_parser
from icws_fast.gateway.config import GatewayConfig
from tests.processes import REPO
from tests.tls import self_signed

K8S_DIR = REPO / "deploy" / "k8s"
COMPOSE_DIR = REPO / "deploy" / "compose"
SERVICEMONITOR_SCHEMA = Path(__file__).with_name("servicemonitor-v1.schema.yaml")
# The oldest Kubernetes the manifests are for (StatefulSet PVC retention is on by default from 1.27), and the
# newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
# What the gateway needs after its --drain-timeout: closing pollers, the metrics server (up to 1 s for the
# listener) and the agent; the StatefulSet's terminationGracePeriodSeconds leaves this much on top.
SHUTDOWN_AFTER_DRAIN_S = 5


def gateway_config(args: list[str], environ: Mapping[str, str], where: str) -> GatewayConfig:
    """What ``icws-gateway`` makes of ``args`` and ``environ``; a flag it refuses fails the test, saying where."""
    stderr = io.StringIO()
    with contextlib.suppress(SystemExit), contextlib.redirect_stderr(stderr):
        return config_from_argv(GatewayConfig, build_parser(), args, environ=dict(environ))
    pytest.fail(f"{where}: icws-gateway refuses {args} {dict(environ)}:\n{stderr.getvalue()}")


# --- Kubernetes ---------------------------------------------------------------------------------------------


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path, doc


def k8s_object(kind: str, directory: Path = K8S_DIR) -> dict[str, Any]:
    (found,) = [doc for path, doc in k8s_documents() if doc["kind"] == kind and path.parent == directory]
    return found


def strict(schema: Any) -> Any:
    """``schema`` with unknown properties refused wherever it lists properties, as the API server's strict
    field validation treats a custom resource (fields a CRD does not declare are pruned, i.e. lost, otherwise)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


def validate_k8s(doc: dict[str, Any]) -> None:
    """Validate one manifest: built-in kinds with kubernetes-validate, the ServiceMonitor with its CRD's schema."""
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        assert doc["kind"] == "ServiceMonitor", f"no schema here for {doc['kind']}"
        schema = strict(yaml.safe_load(SERVICEMONITOR_SCHEMA.read_text()))
        jsonschema.Draft7Validator(schema).validate(doc)
        assert doc["metadata"]["name"], "a ServiceMonitor needs metadata.name"
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    ("path", "doc"), list(k8s_documents()), ids=lambda v: str(v.relative_to(K8S_DIR)) if isinstance(v, Path) else ""
)
def test_k8s_manifest_is_valid(path: Path, doc: dict[str, Any]) -> None:
    try:
        validate_k8s(doc)
    except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
        pytest.fail(f"{path.relative_to(REPO)}: {doc['kind']} {doc['metadata']['name']}: {exc}")


@pytest.mark.parametrize(
    ("kind", "path", "typo"),
    [
        ("StatefulSet", ["spec", "template", "spec", "containers", 0, "readinessProbe"], "readinesProbe"),
        ("ServiceMonitor", ["spec", "endpoints", 0, "port"], "prot"),
    ],
)
def test_k8s_validation_refuses_a_misspelt_field(kind: str, path: list[Any], typo: str) -> None:
    """The validation above can fail: a field name with a typo is refused, for a built-in kind and for the CRD."""
    doc = copy.deepcopy(k8s_object(kind))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[typo] = parent.pop(path[-1])
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError), match=typo):
        validate_k8s(doc)


def test_k8s_objects_select_the_gateway_pods() -> None:
    statefulset = k8s_object("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service")

    def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in selector.items())

    assert selects(statefulset["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(k8s_object("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    # The series are job="<Service name>": the alerts and the dashboard select job="icws-gateway".
    assert service["metadata"]["name"] == "icws-gateway"
    monitor = k8s_object("ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= service_ports
    container_ports = {port["name"] for port in statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    for directory in (K8S_DIR, K8S_DIR / "custom-metrics"):
        target = k8s_object("HorizontalPodAutoscaler", directory)["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])


def test_custom_metrics_autoscaler_uses_the_metric_the_adapter_serves() -> None:
    directory = K8S_DIR / "custom-metrics"
    (metric,) = k8s_object("HorizontalPodAutoscaler", directory)["spec"]["metrics"]
    adapter = yaml.safe_load(k8s_object("ConfigMap", directory)["data"]["config.yaml"])
    (rule,) = adapter["rules"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert re.fullmatch(rule["name"]["matches"], "clients_connected")  # the gateway's gauge
    assert rule["seriesQuery"].startswith("clients_connected{")


def test_k8s_gateway_flags_parse_and_match_probes_ports_and_shutdown() -> None:
    pod = k8s_object("StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The image's entrypoint stays: it checks the data directory before it runs icws-gateway with these args.
    assert "command" not in container
    environ = {item["name"]: item["value"] for item in container.get("env", [])}
    config = gateway_config(container["args"], environ, "deploy/k8s/statefulset.yaml")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"ws": config.port, "metrics": config.metrics_port}
    # Probes come from the kubelet, to the pod's address: the servers listen on every interface.
    assert config.host == "0.0.0.0" and config.metrics_host == "0.0.0.0"
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {name: probe["path"] for name, probe in probes.items()} == {
        "startupProbe": "/health",
        "livenessProbe": "/health",
        "readinessProbe": "/ready",
    }
    assert {ports[probe["port"]] for probe in probes.values()} == {config.metrics_port}
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert str(Path("/app") / config.data_dir) in mounts  # the identity is on the pod's volume
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == 10001
    # The memory alert fires before the kernel kills the pod: at 80 % of its limit.
    limit_mib = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    (memory_high,) = [
        rule for group in alerts["groups"] for rule in group["rules"] if rule.get("alert") == "IcwsMemoryHigh"
    ]
    assert float(memory_high["expr"].rsplit(">", 1)[1]) == 0.8 * limit_mib * 2**20, memory_high["expr"]
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == int(sleep[1]) + config.drain_timeout_s + SHUTDOWN_AFTER_DRAIN_S


# --- the image ----------------------------------------------------------------------------------------------


def dockerfile_instruction(name: str) -> str:
    """The arguments of the last ``name`` instruction of the Dockerfile (the final stage's)."""
    found = [line.split(None, 1)[1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith(name)]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def test_dockerfile_cmd_parses_and_matches_exposed_ports_and_healthcheck() -> None:
    config = gateway_config(json.loads(dockerfile_instruction("CMD ")), {}, "Dockerfile CMD")
    assert {int(port) for port in dockerfile_instruction("EXPOSE ").split()} == {config.port, config.metrics_port}
    healthcheck = (REPO / "deploy" / "docker" / "healthcheck.py").read_text()
    (url,) = re.findall(r'DEFAULT_URL = "(.*)"', healthcheck)
    assert urlsplit(url).port == config.metrics_port and urlsplit(url).path == "/health"
    assert dockerfile_instruction("HEALTHCHECK ").endswith('CMD ["icws-healthcheck"]')


# --- compose ------------------------------------------------------------------------------------------------


def stack_compose_config(stack: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """``scripts/stack_compose.sh STACK config`` with ``env_file``: Debian's docker-compose merges and checks."""
    if shutil.which("docker-compose") is None:
        pytest.skip("Debian's docker-compose is not installed (apt-get install docker-compose; .ci/run does)")
    return subprocess.run(
        [str(REPO / "scripts" / "stack_compose.sh"), stack, "config"],
        env={**os.environ, "ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        check=False,
    )


def compose_config(stack: str) -> dict[str, Any]:
    """The stack's compose files merged and checked, with the settings of ``.env.example``."""
    done = stack_compose_config(stack, COMPOSE_DIR / ".env.example")
    assert done.returncode == 0, f"the {stack} stack's compose files are invalid:\n{done.stderr}"
    merged: dict[str, Any] = yaml.safe_load(done.stdout)
    return merged


def env_example() -> dict[str, str]:
    """The settings of ``deploy/compose/.env.example``."""
    lines = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> source of a service's volumes (``docker-compose config`` writes SOURCE:TARGET[:MODE])."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in service.get("volumes", [])}


def published(service: Mapping[str, Any]) -> set[int]:
    """The container ports a service publishes."""
    targets = set()
    for entry in service.get("ports", []):
        targets.add(int(entry["target"]) if isinstance(entry, dict) else int(entry.split(":")[-1].split("/")[0]))
    return targets


def compose_gateway(stack: str, services: Mapping[str, Any], letsencrypt: Path | None = None) -> GatewayConfig:
    """The gateway's config in ``stack``; paths under /etc/letsencrypt are read from ``letsencrypt`` instead."""
    gateway = services["gateway"]
    args = [
        arg.replace("=/etc/letsencrypt/", f"={letsencrypt}/") if letsencrypt is not None else arg
        for arg in gateway["command"]
    ]
    return gateway_config(args, gateway.get("environment", {}), f"deploy/compose ({stack}) gateway command")


def check_common(services: Mapping[str, Any], config: GatewayConfig) -> None:
    """What both stacks share: the identity volume, the scrape of the gateway's metrics port, Grafana's files."""
    gateway = services["gateway"]
    assert str(Path("/app") / config.data_dir) in mounts(gateway)
    assert published(gateway) >= {config.port}
    prometheus_yml = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = prometheus_yml["scrape_configs"]
    assert job["job_name"] == "icws-gateway"  # the alerts and the dashboard select job="icws-gateway"
    assert job["static_configs"] == [{"targets": [f"gateway:{config.metrics_port}"]}]
    assert mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == str(COMPOSE_DIR / "prometheus.yml")
    for target, source in {**mounts(services["prometheus"]), **mounts(services["grafana"])}.items():
        if Path(source).is_relative_to(REPO):  # the stack's config files, the dashboard, the alert rules
            assert Path(source).exists(), f"{target} is mounted from {source}, which does not exist"


def test_local_stack() -> None:
    services = compose_config("local")["services"]
    assert set(services) == {"devnet", "gateway", "prometheus", "grafana", "otel-collector", "tempo"}
    config = compose_gateway("local", services)
    check_common(services, config)
    assert published(services["gateway"]) == {config.port, config.metrics_port}
    # The gateway polls the devnet service on the port the devnet listens on, and its health check asks there.
    devnet = services["devnet"]
    devnet_port = urlsplit(f"http://{devnet['command'][devnet['command'].index('--address') + 1]}").port
    ic = urlsplit(config.ic_url)
    assert (ic.hostname, ic.port) == ("devnet", devnet_port)
    assert urlsplit(devnet["environment"]["ICWS_HEALTH_URL"]).port == devnet_port
    assert services["gateway"]["depends_on"]["devnet"]["condition"] == "service_healthy"
    # Traces: gateway -> collector -> Tempo <- Grafana, each on the port the next one listens on.
    assert config.opentelemetry_collector_endpoint is not None
    collector_url = urlsplit(config.opentelemetry_collector_endpoint)
    collector = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    collector_listens = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert (collector_url.hostname, collector_url.port) == ("otel-collector", int(collector_listens.rsplit(":")[1]))
    tempo = yaml.safe_load((COMPOSE_DIR / "tempo.yaml").read_text())
    tempo_otlp = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert collector["exporters"]["otlp/tempo"]["endpoint"] == f"tempo:{tempo_otlp.rsplit(':')[1]}"
    datasource = yaml.safe_load((COMPOSE_DIR / "grafana" / "datasource-tempo.yaml").read_text())["datasources"][0]
    assert datasource["url"] == f"http://tempo:{tempo['server']['http_listen_port']}"


def test_production_stack(tmp_path: Path) -> None:
    services = compose_config("production")["services"]
    assert set(services) == {"gateway", "prometheus", "grafana"}
    domain = env_example()["DOMAIN"]
    # The certificate and key are certbot's live/ files of the domain, inside the mounted /etc/letsencrypt.
    assert mounts(services["gateway"])["/etc/letsencrypt"] == "/etc/letsencrypt"
    cert = self_signed(tmp_path)
    live = tmp_path / "letsencrypt" / "live" / domain
    live.mkdir(parents=True)
    cert.cert_path.rename(live / "fullchain.pem")
    cert.key_path.rename(live / "privkey.pem")
    config = compose_gateway("production", services, letsencrypt=tmp_path / "letsencrypt")
    assert (config.tls_certificate_pem_path, config.tls_certificate_key_pem_path) == (
        live / "fullchain.pem",
        live / "privkey.pem",
    )
    assert urlsplit(config.ic_url).scheme == "https"
    check_common(services, config)
    # Only wss:// is public; Prometheus and Grafana are published on the loopback interface alone.
    assert published(services["gateway"]) == {config.port}
    for name in ("prometheus", "grafana"):
        assert all(entry.startswith("127.0.0.1:") for entry in services[name]["ports"]), services[name]["ports"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_prometheus_config_passes_promtool_as_mounted(tmp_path: Path) -> None:
    """Prometheus' config, and the rule files it finds, laid out under /etc/prometheus as the stacks mount them."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    etc = Path("/etc/prometheus")
    for target, source in mounts(compose_config("local")["services"]["prometheus"]).items():
        if Path(target).is_relative_to(etc) and Path(source).is_file():
            (tmp_path / Path(target).relative_to(etc)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, tmp_path / Path(target).relative_to(etc))
    done = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_env_example_sets_every_variable_the_stacks_use() -> None:
    used = {
        name for path in COMPOSE_DIR.glob("docker-compose*.yml") for name in re.findall(r"\$\{(\w+)", path.read_text())
    }
    assert used <= set(env_example())


def test_production_stack_needs_a_domain(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in env_example().items() if name != "DOMAIN"))
    done = stack_compose_config("production", env_file)
    assert done.returncode != 0 and "set DOMAIN in deploy/compose/.env" in done.stderr
