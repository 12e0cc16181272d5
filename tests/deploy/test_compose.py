"""docker-compose.yml parses, names what the README says, and mounts a valid config.

No Docker engine runs on the test machines, so the file is checked as data: the services
the README's deployment section names exist, ports are published on loopback only, and the
gateway config it mounts passes ``streambridge check`` with the compose environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bridge.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_services_are_the_ones_the_readme_names() -> None:
    services = set(compose()["services"])
    assert services == {
        "kafka",
        "mosquitto",
        "rabbitmq",
        "postgres",
        "redis",
        "streambridge",
        "worker",
    }
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deployment with Docker Compose", 1)[1].split("\n## ", 1)[0]
    named = set(
        re.findall(r"`(kafka|mosquitto|rabbitmq|postgres|redis|streambridge|worker)`", section)
    )
    assert named == services


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_kafka_runs_kraft_and_postgres_logical_wal() -> None:
    services = compose()["services"]
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert "wal_level=logical" in services["postgres"]["command"]


def test_mounted_gateway_config_is_valid() -> None:
    gateway = compose()["services"]["streambridge"]
    mount = gateway["volumes"][0].split(":")[0]
    env = {
        "POSTGRES_PASSWORD": "pw",
        "STREAMBRIDGE_ADMIN_TOKEN": "t" * 24,
        "DASHBOARD_SECRET": "s" * 16,
    }
    config = load_config(ROOT / mount, env=env)
    types = {broker.type for broker in config.brokers.values()}
    assert types == {"kafka", "mqtt", "amqp"}
    assert config.gateway.state.startswith("postgresql://")
    # Two workers need the cluster's shared limits (CONTRACT §1, §11).
    assert gateway["command"] == ["--workers", "2"]
    assert config.cluster is not None and config.cluster.redis == "redis://redis:6379/0"
    assert config.cluster.log == "kafka-main"


def test_compose_runs_the_kafka_version_the_tests_run() -> None:
    """docker-compose and ``make test`` (scripts/service-kafka.sh) pin one Apache Kafka."""
    script = (ROOT / "scripts" / "service-kafka.sh").read_text(encoding="utf-8")
    (version,) = re.findall(r"^KAFKA_VERSION=(\S+)$", script, flags=re.M)
    assert compose()["services"]["kafka"]["image"] == f"apache/kafka:{version}"
