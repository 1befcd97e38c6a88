"""A secured Redis: TLS with CA-checked certificates, an ACL user, passwords never shown."""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from distloop.tasks import demo
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import Settings, mask_url
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import free_port
from tests.conftest import TEST_ALLOW, Workers, run_cli


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1."""
    folder = tmp_path_factory.mktemp("certs")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=distloop test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=folder)  # fmt: skip
    return folder


@dataclass
class TlsRedis:
    port: int
    user: str
    password: str
    ca: str

    def url(self, password: str | None = None, query: str = "") -> str:
        return f"rediss://{self.user}:{password or self.password}@localhost:{self.port}/0{query}"


@pytest.fixture(scope="module")
def tls_redis(certs: Path) -> Iterator[TlsRedis]:
    """redis-server speaking TLS only, with an ACL user; stopped by pid."""
    port, password = free_port(), secrets.token_hex(12)
    argv = [
        "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no",
        "--user", "default", "off", "--user", "loop", "on", f">{password}", "~*", "&*", "+@all",
        "--save", "", "--appendonly", "no", "--dir", str(certs), "--maxmemory-policy", "noeviction",
    ]  # fmt: skip
    process = ManagedProcess("tls redis-server", argv)
    client = redis.Redis(
        host="localhost", port=port, username="loop", password=password, ssl=True,
        ssl_ca_certs=str(certs / "ca.pem"), socket_timeout=5,
    )  # fmt: skip

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        process.wait_for(answers, 30, "answering PING over TLS")
        yield TlsRedis(port, "loop", password, str(certs / "ca.pem"))
    finally:
        client.close()
        process.stop()


@pytest.fixture(scope="module")
def tls_workers(tls_redis: TlsRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    settings = Settings(broker_url=tls_redis.url(), allow=TEST_ALLOW, tls_ca_file=tls_redis.ca)
    group = Workers(settings, tmp_path_factory.mktemp("tls-workers"))
    group.start(concurrency=2, hostname="tls@%h")
    yield group
    group.stop()


@pytest.mark.integration
def test_loop_runs_end_to_end_over_checked_tls(tls_redis: TlsRedis, tls_workers: Workers) -> None:
    env = {"DISTLOOP_BROKER_URL": tls_redis.url(), "DISTLOOP_TLS_CA_FILE": tls_redis.ca}
    done = run_cli("run", "distloop.tasks.demo:cube", "--range", "0:300", "--chunk-size", "20", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["result"] == [demo.cube(i) for i in range(300)]
    assert list(report["hosts"]) and all(h.startswith("tls@") for h in report["hosts"])
    assert tls_redis.password not in done.stdout + done.stderr + tls_workers.logs()


@pytest.mark.integration
def test_wrong_password_fails_fast_with_one_line(tls_redis: TlsRedis) -> None:
    env = {"DISTLOOP_BROKER_URL": tls_redis.url("not-the-password"), "DISTLOOP_TLS_CA_FILE": tls_redis.ca}
    started = time.monotonic()
    done = run_cli("run", "distloop.tasks.demo:cube", "--range", "0:10", env=env, timeout=30)
    elapsed = time.monotonic() - started
    print(f"\nwrong password: exit {done.returncode} after {elapsed:.2f} s: {done.stderr.strip()}")
    assert done.returncode == 3
    assert elapsed < 10
    assert done.stderr.strip().count("\n") == 0
    assert "refused the credentials" in done.stderr and "not-the-password" not in done.stderr


@pytest.mark.integration
def test_certificate_from_an_unknown_ca_is_refused(tls_redis: TlsRedis) -> None:
    # No CA file: the system trust store does not know the test CA, so the check fails.
    done = run_cli("run", "distloop.tasks.demo:cube", "--range", "0:10", env={"DISTLOOP_BROKER_URL": tls_redis.url()})
    assert done.returncode == 3
    assert "certificate verify failed" in done.stderr
    assert tls_redis.password not in done.stderr


@pytest.mark.integration
def test_url_that_skips_checks_is_refused_unless_insecure_is_explicit(
    tls_redis: TlsRedis, tls_workers: Workers
) -> None:
    url = tls_redis.url(query="?ssl_cert_reqs=none")
    refused = run_cli("run", "distloop.tasks.demo:cube", "--range", "0:10", env={"DISTLOOP_BROKER_URL": url})
    assert refused.returncode == 2
    assert "turns certificate checks off" in refused.stderr and tls_redis.password not in refused.stderr
    accepted = run_cli(
        "run", "distloop.tasks.demo:cube", "--range", "0:10", "--json",
        env={"DISTLOOP_BROKER_URL": url, "DISTLOOP_TLS_INSECURE": "1"},
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["result"] == [demo.cube(i) for i in range(10)]


def test_tls_options_reach_broker_result_backend_and_clients() -> None:
    settings = Settings(broker_url="rediss://u:pw@redis.example:6380/0", tls_ca_file="/etc/ca.pem")
    config = settings.celery_config()
    for options in (config["broker_use_ssl"], config["redis_backend_use_ssl"], settings.redis_options()):
        assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert options["ssl_ca_certs"] == "/etc/ca.pem"
        assert options["ssl_check_hostname"] is True
    assert Settings(broker_url="redis://h/0").celery_config()["broker_use_ssl"] is None
    assert "ssl_cert_reqs" not in Settings(broker_url="redis://h/0").redis_options()


def test_url_asking_for_no_checks_still_gets_checks_unless_insecure() -> None:
    # `celery -A distloop.tasks worker` builds its config without check_tls(): it must be safe anyway.
    url = "rediss://h:6380/0?ssl_cert_reqs=none"
    assert Settings(broker_url=url).celery_config()["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    insecure = Settings(broker_url=url, tls_insecure=True).celery_config()["broker_use_ssl"]
    assert insecure["ssl_cert_reqs"] == ssl.CERT_NONE


def test_ca_file_in_the_url_query_is_honoured_and_stripped() -> None:
    settings = Settings(broker_url="rediss://h:6380/0?ssl_ca_certs=/srv/ca.pem")
    assert settings.redis_options()["ssl_ca_certs"] == "/srv/ca.pem"
    assert settings.celery_config()["broker_url"] == "rediss://h:6380/0"


@pytest.mark.parametrize(
    "url, env",
    [
        ("rediss://h/0?ssl_cert_reqs=none", {}),
        ("rediss://h/0?ssl_cert_reqs=CERT_OPTIONAL", {}),
        ("rediss://h/0?ssl_check_hostname=false", {}),
        ("redis://h/0", {"DISTLOOP_TLS_CA_FILE": "/etc/ca.pem"}),
        ("redis://h/0?ssl_ca_certs=/etc/ca.pem", {}),
    ],
)
def test_settings_that_skip_or_misplace_tls_are_refused(url: str, env: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        Settings.from_env({"DISTLOOP_BROKER_URL": url, **env}).check_tls()


@pytest.mark.integration
def test_tls_settings_for_a_remote_broker_do_not_break_the_embedded_cluster() -> None:
    env = {"DISTLOOP_TLS_CA_FILE": "/nonexistent/ca.pem"}
    done = run_cli("run", "distloop.tasks.demo:square", "--range", "0:20", "--reduce", "sum", "--workers", "1", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sum(i * i for i in range(20))


def test_passwords_are_masked_in_every_url_form() -> None:
    assert mask_url("rediss://alice:s3cret@h:6380/0") == "rediss://alice:***@h:6380/0"
    assert mask_url("redis://:s3cret@h/0") == "redis://:***@h/0"
    assert mask_url("redis://h/0?password=s3cret&db=1") == "redis://h/0?password=***&db=1"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
