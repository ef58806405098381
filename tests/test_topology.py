"""docker-compose.yml and `calib stack` start the same services, commands and settings."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import yaml

from services.cli import pooler, processes

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def test_compose_runs_the_stack_commands() -> None:
    services = compose()
    for name, command in processes.STACK_SERVICES.items():
        assert services[name]["command"] == command, name


def test_compose_and_stack_read_the_same_settings() -> None:
    services = compose()
    for name in processes.STACK_SERVICES:
        assert set(services[name]["environment"]) == set(processes.STACK_ENV), name


def test_compose_has_the_backing_services_and_start_order() -> None:
    services = compose()
    assert {"postgres", "redis"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == processes.STACK_WORKERS
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for backing in ("postgres", "redis", "api"):
        assert "healthcheck" in services[backing]


def test_dockerfiles_exist() -> None:
    assert (ROOT / "services/api/Dockerfile").exists()
    assert (ROOT / "services/worker/Dockerfile").exists()


def test_flower_watches_the_stacks_broker_behind_a_profile() -> None:
    services = compose()
    flower = services["flower"]
    assert flower["profiles"] == ["monitoring"]  # not started by a plain `docker compose up`
    anchor = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-calib-env"]
    assert flower["environment"]["CELERY_BROKER_URL"] == anchor["CALIB_BROKER_URL"]
    assert anchor["CALIB_TASK_EVENTS"] == "true"  # the workers send the events Flower shows


def test_compose_and_stack_run_the_same_pooler() -> None:
    # `docker compose --profile pooler` and `calib stack --pooler`: PgBouncer with the same settings.
    services = compose()
    assert services["pgbouncer"]["profiles"] == ["pooler"]
    dockerfile = ROOT / services["pgbouncer"]["build"]["dockerfile"]
    assert "pgbouncer" in dockerfile.read_text()
    from_compose = configparser.ConfigParser()
    from_compose.read(ROOT / "services/pooler/pgbouncer.ini")
    from_stack = configparser.ConfigParser()
    from_stack.read_string(pooler.config("postgresql+psycopg://calib:calib@postgres:5432/calib", 6432, "0.0.0.0"))
    assert dict(from_compose["pgbouncer"]) == dict(from_stack["pgbouncer"])
    assert dict(from_compose["databases"]) == dict(from_stack["databases"])
    assert dict(from_stack["pgbouncer"])["pool_mode"] == "transaction"
