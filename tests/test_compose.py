"""docker-compose.yml and the Dockerfile: read and checked against the code, then run.

No Docker engine runs here. The first tests read the files; the integration tests run
what the containers would run, taken from the compose file: the redis service's shell
script with a real redis-server, the worker service (entrypoint and command) in a copy
of a user's project folder, and the producer service against that worker.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from distloop.cli.main import build_parser
from distloop.tasks.demo import calc_stuff
from distloop.tasks.store.workers import live_workers
from distloop.worker.celery_worker import available_cpus
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import RedisServer, free_port, start_redis
from tests.compose_file import (
    COMPOSE,
    SERVICES,
    MissingVariable,
    argv,
    environment,
    healthcheck_shell,
    interpolate,
    strings,
    variables_in,
)
from tests.conftest import ROOT
from tests.user_project import ALLOW, TARGETS, build_project, run_in, user_env

IMAGE_SERVICES = ("worker", "flower", "producer")
PROJECT_SERVICES = ("worker", "producer")
PASSWORD_VAR = "DISTLOOP_REDIS_PASSWORD"
#: What a user exports before `docker compose up` (see the README).
VARS = {
    PASSWORD_VAR: "pw-" + secrets.token_hex(12),
    "DISTLOOP_FLOWER_AUTH": "admin:flower-secret",
    "DISTLOOP_PROJECT_DIR": "/home/me/myproject",
    "DISTLOOP_ALLOW": ALLOW,
}


def without(name: str) -> dict[str, str]:
    return {key: value for key, value in VARS.items() if key != name}


def test_the_stack_has_its_four_services_with_healthchecks() -> None:
    assert set(SERVICES) == {"redis", "worker", "flower", "producer"}
    for name in ("redis", "worker", "flower"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_the_password_is_interpolated_into_environment_entries_only() -> None:
    for path, text in strings(COMPOSE):
        if PASSWORD_VAR in variables_in(text):
            in_environment = path[0] == "x-distloop-env" or (len(path) >= 2 and path[-2] == "environment")
            assert in_environment, f"{'.'.join(path)} interpolates the password"
    # And what the containers are started with: no command, entrypoint or health check carries it.
    for name, spec in SERVICES.items():
        for key in ("command", "entrypoint", "healthcheck"):
            assert VARS[PASSWORD_VAR] not in json.dumps(interpolate(spec.get(key), VARS)), (name, key)


def test_redis_runs_unprivileged_keeps_every_key_and_persists() -> None:
    spec = SERVICES["redis"]
    assert spec["user"] == "redis"
    sh, flag, script = spec["command"]
    assert (sh, flag) == ("sh", "-c")
    assert variables_in(script) == set()  # only $$: the container's shell expands, not Compose
    last = shlex.split(interpolate(script, {}).strip().splitlines()[-1])
    assert last[:2] == ["exec", "redis-server"]  # redis-server becomes the container's main process
    options = dict(zip(last[3::2], last[4::2], strict=True))
    assert options == {"--maxmemory-policy": "noeviction", "--appendonly": "yes", "--save": "60 1000"}
    assert any(v.endswith(":/data") for v in spec["volumes"])
    env = environment("redis", VARS)
    assert env[PASSWORD_VAR] == env["REDISCLI_AUTH"] == VARS[PASSWORD_VAR]


def test_services_share_one_broker_url_and_one_password_variable() -> None:
    urls = {SERVICES[name]["environment"]["DISTLOOP_BROKER_URL"] for name in IMAGE_SERVICES}
    assert len(urls) == 1
    (url,) = urls
    assert url.startswith("redis://:${DISTLOOP_REDIS_PASSWORD") and url.endswith("@redis:6379/0")
    assert {v for _, text in strings(COMPOSE) for v in variables_in(text) if "PASSWORD" in v} == {PASSWORD_VAR}


def test_long_running_services_restart_and_the_one_shot_producer_does_not() -> None:
    for name in ("redis", "worker", "flower"):
        assert SERVICES[name]["restart"] == "unless-stopped", name
    # A producer restarted after it exits would run its job again.
    assert SERVICES["producer"].get("restart", "no") == "no"


@pytest.mark.parametrize("service", PROJECT_SERVICES)
def test_worker_and_producer_start_in_the_project_mounted_read_only(service: str) -> None:
    spec = SERVICES[service]
    assert spec["working_dir"] == "/project"
    assert f"{VARS['DISTLOOP_PROJECT_DIR']}:/project:ro" in interpolate(spec["volumes"], VARS)
    with pytest.raises(MissingVariable, match="DISTLOOP_PROJECT_DIR"):
        interpolate(spec["volumes"], without("DISTLOOP_PROJECT_DIR"))


def test_workers_must_be_told_which_modules_they_may_run() -> None:
    assert environment("worker", VARS)["DISTLOOP_ALLOW"] == ALLOW
    for variables in (without("DISTLOOP_ALLOW"), {**VARS, "DISTLOOP_ALLOW": ""}):
        with pytest.raises(MissingVariable, match="DISTLOOP_ALLOW"):
            environment("worker", variables)


def test_worker_and_producer_share_the_entrypoint_that_then_runs_the_command() -> None:
    entrypoint = SERVICES["worker"]["entrypoint"]
    assert SERVICES["producer"]["entrypoint"] == entrypoint
    sh, flag, script, _name = interpolate(entrypoint, {})
    assert (sh, flag) == ("sh", "-c")
    assert script.strip().splitlines()[-1] == 'exec "$@"'  # the command, as the same process


def test_every_service_command_is_a_real_command_of_this_project() -> None:
    parser, handlers = build_parser()
    for name in IMAGE_SERVICES:
        command = argv(name, VARS, with_entrypoint=False)
        assert command[0] == "distloop", command
        args = parser.parse_args(command[1:])  # exits (fails the test) on any unknown option
        assert args.command in handlers


def test_the_producer_runs_one_job_and_prints_its_json_report() -> None:
    parser, _ = build_parser()
    args = parser.parse_args(argv("producer", VARS, with_entrypoint=False)[1:])
    assert (args.command, args.json, args.output) == ("run", True, None)
    assert (args.target, args.range_text) == ("distloop.tasks.demo:calc_stuff", "0:2000")
    chosen = {**VARS, "DISTLOOP_TARGET": "myproject.jobs:f", "DISTLOOP_RANGE": "0:100:2"}
    args = parser.parse_args(argv("producer", chosen, with_entrypoint=False)[1:])
    assert (args.target, args.range_text) == ("myproject.jobs:f", "0:100:2")


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
    assert variables_in(flower["environment"]["DISTLOOP_FLOWER_AUTH"]) == {"DISTLOOP_FLOWER_AUTH"}
    # The credentials come from the environment, never on the command line (visible in ps).
    assert "--basic-auth" not in flower["command"]
    monkeypatch.setenv("DISTLOOP_FLOWER_AUTH", "admin:s3cret")
    parser, _ = build_parser()
    assert parser.parse_args([str(p) for p in flower["command"][1:]]).basic_auth == "admin:s3cret"
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"] + SERVICES["redis"]["ports"])


def dockerfile() -> list[list[str]]:
    """The Dockerfile's instructions, split into words (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_copies_what_exists_and_runs_an_installed_entry_point() -> None:
    instructions = dockerfile()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    copies = [words[1:-1] for words in instructions if words[0] == "COPY"]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    copied = {src for sources in copies for src in sources}
    assert {"tasks", "worker", "producer", "pyproject.toml", "README.md", "LICENSE"} <= copied
    (cmd,) = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    command = json.loads(cmd.split(" ", 1)[1])
    assert command[0] in scripts
    build_parser()[0].parse_args(command[1:])
    users = [words[1] for words in instructions if words[0] == "USER"]
    assert users and users[-1] not in ("root", "0")
    # The flower service runs from this image, and Flower is an optional part of distloop.
    installs = [words for words in instructions if words[:3] == ["RUN", "pip", "install"]]
    assert any(".[flower]" in words for words in installs), installs
    assert "flower" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_dockerfile_constrains_later_installs_to_the_versions_distloop_was_built_with() -> None:
    instructions = dockerfile()
    env: dict[str, str] = {}
    for words in instructions:
        if words[0] == "ENV":
            env.update(word.partition("=")[::2] for word in words[1:])
    constraints = env["PIP_CONSTRAINT"]
    runs = [" ".join(words[1:]) for words in instructions if words[0] == "RUN"]
    assert any(f"pip freeze --exclude distloop > {constraints}" in run for run in runs), runs


def test_worker_concurrency_follows_a_container_cpu_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert available_cpus(str(cpu_max)) == min(2, available_cpus(str(tmp_path / "none")))
    cpu_max.write_text("max 100000\n")
    assert available_cpus(str(cpu_max)) == available_cpus(str(tmp_path / "none"))


# --- Running the services' own commands, without Docker -------------------------------------


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def command_lines() -> dict[int, bytes]:
    """Every running process's argv, as ``ps`` shows it to any user of the host."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return found


def first_reply(port: int, *command: str) -> str:
    """Redis's answer to one command on a fresh connection (redis-py would retry an auth error)."""
    request = f"*{len(command)}\r\n" + "".join(f"${len(part.encode())}\r\n{part}\r\n" for part in command)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        return sock.makefile("rb").readline().decode().strip()


def pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.integration
def test_redis_service_script_requires_the_password_and_keeps_it_off_every_command_line(tmp_path: Path) -> None:
    password = VARS[PASSWORD_VAR]
    port = free_port()
    real_server, real_cli = shutil.which("redis-server"), shutil.which("redis-cli")
    assert real_server and real_cli
    data, scratch, bin_dir = tmp_path / "data", tmp_path / "tmp", tmp_path / "bin"
    data.mkdir()
    scratch.mkdir()
    # What differs from the container: a free loopback port instead of 6379, a scratch
    # folder instead of /data, and no persistence (a test leaves nothing behind).
    write_script(
        bin_dir / "redis-server",
        f'exec {real_server} "$@" --port {port} --bind 127.0.0.1 --dir {data} --appendonly no --save ""',
    )
    write_script(bin_dir / "redis-cli", f'exec {real_cli} -p {port} "$@"')  # fmt: skip
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(scratch), "HOME": str(tmp_path),
           **environment("redis", VARS)}  # fmt: skip
    with open(tmp_path / "redis.log", "ab") as log:
        process = ManagedProcess("redis service", argv("redis", VARS), env=env, cwd=str(data), log=log)
    try:
        client = redis.Redis(port=port, password=password, socket_timeout=5, decode_responses=True)
        process.wait_for(lambda: pings(client), 30, "answering PING with the password")
        # exec all the way down: redis-server is the container's main process, so the
        # SIGTERM of `docker stop` reaches it (and here, stopping it by pid does).
        assert os.path.realpath(f"/proc/{process.pid}/exe") == os.path.realpath(real_server)
        assert first_reply(port, "PING").startswith("-NOAUTH")
        assert first_reply(port, "AUTH", "not-" + password).startswith("-WRONGPASS")
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        leaked = {pid: line for pid, line in command_lines().items() if password.encode() in line}
        assert not leaked, leaked
        (config,) = scratch.glob("*/redis.conf")
        assert config.read_text() == f"requirepass {password}\n"
        assert (config.stat().st_mode & 0o777, config.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        check = ["sh", "-c", healthcheck_shell("redis", VARS)]
        assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
        for wrong in ({"REDISCLI_AUTH": "not-" + password}, {"REDISCLI_AUTH": ""}):
            assert subprocess.run(check, env={**env, **wrong}, capture_output=True, timeout=30).returncode, wrong
    finally:
        process.stop()
    assert not process.alive()


@dataclass
class Stack:
    """A test redis-server and the worker service started from the compose file in a user's project."""

    server: RedisServer
    project: Path
    worker_log: Path

    def env(self, service: str, path_first: Path | None = None) -> dict[str, str]:
        """The service's environment; only the broker's address differs (no host named redis here)."""
        path = os.pathsep.join(str(p) for p in (path_first, Path(sys.executable).parent) if p)
        env = {**environment(service, VARS), "DISTLOOP_BROKER_URL": self.server.url}
        return user_env(**env, PATH=f"{path}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = start_redis()
    project = build_project(tmp_path_factory.mktemp("compose-project"))
    logs = tmp_path_factory.mktemp("compose-logs")
    stack = Stack(server, project, logs / "worker.log")
    worker: ManagedProcess | None = None
    try:
        with open(stack.worker_log, "ab") as log:
            worker = ManagedProcess("worker service", argv("worker", VARS), env=stack.env("worker"),
                                    cwd=str(project), log=log)  # fmt: skip
        client = server.client()
        worker.wait_for(lambda: any(h.startswith("worker@") for h in live_workers(client)), 90, "heartbeating")
        client.close()
        yield stack
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def fake_pip(bin_dir: Path, exit_code: int = 0) -> Path:
    """A ``pip`` first on the PATH that records where and how it was called (the real one stays untouched)."""
    record = bin_dir / "pip-called"
    write_script(bin_dir / "pip", f'printf "%s\\n" "$PWD" "$@" > {record}\nexit {exit_code}')
    return record


def run_producer(stack: Stack, project: Path, bin_dir: Path, **chosen: str) -> subprocess.CompletedProcess[str]:
    variables: Mapping[str, str] = {**VARS, **chosen}
    return run_in(project, argv("producer", variables), stack.env("producer", bin_dir), timeout=180)


def one_json_object(stdout: str) -> dict:
    report, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:].strip() == "", f"more than one JSON object on stdout: {stdout!r}"
    return report


@pytest.mark.integration
def test_producer_service_prints_one_json_object_with_the_results_of_the_users_function(
    stack: Stack, tmp_path: Path
) -> None:
    record = fake_pip(tmp_path / "bin")
    done = run_producer(stack, stack.project, tmp_path / "bin", DISTLOOP_TARGET="myproject.jobs:f",
                        DISTLOOP_RANGE="0:40")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = one_json_object(done.stdout)
    assert report["result"] == [TARGETS["myproject.jobs:f"](i) for i in range(40)]
    assert report["errors"] == [] and report["hosts"]
    assert all(host.startswith("worker@") for host in report["hosts"]), report["hosts"]
    assert not record.exists()  # no requirements.txt: nothing to install


@pytest.mark.integration
def test_producer_service_default_is_the_demo_job(stack: Stack, tmp_path: Path) -> None:
    fake_pip(tmp_path / "bin")
    done = run_producer(stack, stack.project, tmp_path / "bin", DISTLOOP_RANGE="0:30")
    assert done.returncode == 0, done.stderr
    assert one_json_object(done.stdout)["result"] == [list(calc_stuff(i)) for i in range(30)]


@pytest.mark.integration
def test_entrypoint_installs_the_projects_requirements_then_runs_the_command(stack: Stack, tmp_path: Path) -> None:
    project = build_project(tmp_path / "project", {"requirements.txt": "humanize>=4\n"})
    record = fake_pip(tmp_path / "bin")
    done = run_producer(stack, project, tmp_path / "bin", DISTLOOP_TARGET="tasks:f", DISTLOOP_RANGE="0:5")
    assert done.returncode == 0, done.stderr
    where, *pip_args = record.read_text().splitlines()
    assert where == str(project)
    assert pip_args[0] == "install" and "--user" in pip_args
    assert pip_args[-2:] == ["--requirement", "requirements.txt"]
    assert one_json_object(done.stdout)["result"] == [TARGETS["tasks:f"](i) for i in range(5)]


@pytest.mark.integration
def test_entrypoint_stops_with_pips_exit_code_when_the_install_fails(stack: Stack, tmp_path: Path) -> None:
    project = build_project(tmp_path / "project", {"requirements.txt": "no-such-package-here\n"})
    record = fake_pip(tmp_path / "bin", exit_code=7)
    done = run_producer(stack, project, tmp_path / "bin", DISTLOOP_TARGET="tasks:f", DISTLOOP_RANGE="0:5")
    assert record.exists()
    assert (done.returncode, done.stdout) == (7, "")  # the command never ran
    assert "installing /project/requirements.txt" in done.stderr


@pytest.mark.integration
def test_worker_service_serves_the_allow_list_and_its_healthcheck_finds_it(stack: Stack) -> None:
    banner = stack.worker_log.read_text()
    assert "may run distloop.tasks.demo, myproject.*, tasks, jobs.py" in banner, banner
    check = ["sh", "-c", healthcheck_shell("worker", VARS)]
    env = stack.env("worker")
    # Docker sets HOSTNAME to the container's host name, which is what %h in the worker's name becomes.
    ok = subprocess.run(check, env={**env, "HOSTNAME": socket.gethostname()}, cwd=stack.project,
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    other = subprocess.run(check, env={**env, "HOSTNAME": "no-such-container"}, cwd=stack.project,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert other.returncode != 0, other.stdout
