"""docker-compose.yml and the Dockerfile, read (no Docker engine here) and checked against the code."""

from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from distloop.cli.main import build_parser
from distloop.worker.celery_worker import available_cpus
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IMAGE_SERVICES = ("worker", "flower", "producer")
PASSWORD_VAR = "DISTLOOP_REDIS_PASSWORD"


def variables(text: str) -> set[str]:
    """Names of the ${VAR...} references in ``text``."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


def test_the_stack_has_its_four_services_with_healthchecks() -> None:
    assert set(SERVICES) == {"redis", "worker", "flower", "producer"}
    for name in ("redis", "worker", "flower"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_redis_requires_the_password_keeps_every_key_and_persists() -> None:
    command = SERVICES["redis"]["command"]
    assert command[0] == "redis-server"
    assert variables(command[command.index("--requirepass") + 1]) == {PASSWORD_VAR}
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


def test_services_share_one_broker_url_and_one_password_variable() -> None:
    urls = {SERVICES[name]["environment"]["DISTLOOP_BROKER_URL"] for name in IMAGE_SERVICES}
    assert len(urls) == 1
    (url,) = urls
    assert url.startswith("redis://:${DISTLOOP_REDIS_PASSWORD") and url.endswith("@redis:6379/0")
    text = (ROOT / "docker-compose.yml").read_text()
    assert {v for v in variables(text) if "PASSWORD" in v} == {PASSWORD_VAR}


def test_every_service_command_is_a_real_command_of_this_project() -> None:
    parser, handlers = build_parser()
    for name in IMAGE_SERVICES:
        command = [str(part) for part in SERVICES[name]["command"]]
        if command[0] == "distloop":
            args = parser.parse_args(command[1:])  # exits (fails the test) on any unknown option
            assert args.command in handlers
        else:
            assert command[:3] == ["celery", "-A", "distloop.tasks"], command
            assert command[3] in ("worker", "flower")
            if command[3] == "flower":
                assert importlib.util.find_spec("flower"), "flower is a dependency of the package"


def test_one_image_built_from_this_repository() -> None:
    for name in IMAGE_SERVICES:
        assert SERVICES[name]["build"] == "."
        assert SERVICES[name]["image"] == "distloop:latest"


def test_workers_scale_and_size_themselves_from_the_container() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "--concurrency" not in worker["command"]
    assert "%h" in worker["command"][worker["command"].index("--hostname") + 1]


def test_flower_asks_for_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    flower = SERVICES["flower"]
    assert variables(flower["environment"]["DISTLOOP_FLOWER_AUTH"]) == {"DISTLOOP_FLOWER_AUTH"}
    # The credentials come from the environment, never on the command line (visible in ps).
    assert "--basic-auth" not in flower["command"]
    monkeypatch.setenv("DISTLOOP_FLOWER_AUTH", "admin:s3cret")
    parser, _ = build_parser()
    assert parser.parse_args([str(p) for p in flower["command"][1:]]).basic_auth == "admin:s3cret"


def test_dockerfile_copies_what_exists_and_runs_an_installed_entry_point() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    copies = [shlex.split(line)[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    packages = {src for sources in copies for src in sources}
    assert {"tasks", "worker", "producer", "pyproject.toml"} <= packages
    (cmd,) = [line for line in lines if line.startswith(("CMD ", "ENTRYPOINT "))]
    argv = yaml.safe_load(cmd.split(" ", 1)[1])
    assert argv[0] in scripts
    build_parser()[0].parse_args(argv[1:])
    for name in IMAGE_SERVICES:
        assert SERVICES[name]["command"][0] in (*scripts, "celery")


def test_worker_concurrency_follows_a_container_cpu_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert available_cpus(str(cpu_max)) == min(2, available_cpus(str(tmp_path / "none")))
    cpu_max.write_text("max 100000\n")
    assert available_cpus(str(cpu_max)) == available_cpus(str(tmp_path / "none"))
