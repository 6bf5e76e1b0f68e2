"""Verify role redis on the scenario's two systemd hosts (run by Molecule's testinfra verifier).

Every check goes through redis-cli inside the containers. Passwords come from the files the
converge generated in the scenario's ephemeral directory (like inventories/*/credentials/).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PORTS = {"redis-systemd": 56379, "redis-second": 56380}
USERS = {"api_gateway": "ratelimit:", "auth_service": "auth_service:", "etl_service": "etl_service:"}
ADMIN = "openpolicy_admin"
testinfra_hosts = [f"podman://{name}" for name in PORTS]


def password(user: str) -> str:
    credentials = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "credentials" / "redis"
    return (credentials / user).read_text().split()[0]


def cli(host, *command: str, user: str | None = None, secret: str | None = None):
    """Run one command with redis-cli as `user` (no AUTH when user is None)."""
    port = PORTS[host.backend.name]
    if user is None:
        return host.run("redis-cli -h 127.0.0.1 -p %s " + " ".join(["%s"] * len(command)), str(port), *command)
    return host.run(
        "env REDISCLI_AUTH=%s redis-cli --no-auth-warning -h 127.0.0.1 -p %s --user %s "
        + " ".join(["%s"] * len(command)),
        secret if secret is not None else password(user),
        str(port),
        user,
        *command,
    )


def reply(result) -> str:
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def test_server_runs_under_systemd(host) -> None:
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    assert host.service("redis-server").is_running
    assert host.service("redis-server").is_enabled
    pid = host.file("/run/redis/redis-server.pid").content_string.strip()
    assert host.file(f"/proc/{pid}").user == "redis"
    assert host.file(f"/proc/{pid}/comm").content_string.strip() == "redis-server"


def test_listens_only_on_loopback_with_its_port(host) -> None:
    port = f"{PORTS[host.backend.name]:04X}"
    listening = [
        line.split()[1]
        for line in host.file("/proc/net/tcp").content_string.splitlines()[1:]
        if line.split()[3] == "0A" and line.split()[1].endswith(":" + port)
    ]
    assert listening == ["0100007F:" + port]


def test_unauthenticated_client_is_refused(host) -> None:
    assert "NOAUTH" in cli(host, "PING").stdout + cli(host, "PING").stderr
    assert "NOAUTH" in cli(host, "GET", "auth_service:x").stdout


def test_default_user_cannot_log_in(host) -> None:
    result = cli(host, "AUTH", "default", "anything")
    assert "WRONGPASS" in result.stdout + result.stderr


@pytest.mark.parametrize("user", USERS)
def test_each_user_logs_in_with_its_own_password(host, user: str) -> None:
    assert reply(cli(host, "PING", user=user)) == "PONG"


def test_a_users_password_does_not_open_another_user(host) -> None:
    result = cli(host, "PING", user="auth_service", secret=password("etl_service"))
    assert "WRONGPASS" in result.stdout + result.stderr


@pytest.mark.parametrize(("user", "prefix"), USERS.items())
def test_user_writes_under_its_prefix_only(host, user: str, prefix: str) -> None:
    assert reply(cli(host, "SET", f"{prefix}verify", "1", user=user)) == "OK"
    assert reply(cli(host, "GET", f"{prefix}verify", user=user)) == "1"
    other = "auth_service:verify" if user != "auth_service" else "etl_service:verify"
    assert "NOPERM" in cli(host, "GET", other, user=user).stdout


@pytest.mark.parametrize("command", [["FLUSHALL"], ["CONFIG", "GET", "maxmemory"], ["KEYS", "*"], ["ACL", "LIST"]])
def test_user_cannot_run_commands_outside_its_acl(host, command: list[str]) -> None:
    assert "NOPERM" in cli(host, *command, user="auth_service").stdout


def test_per_user_command_rules(host) -> None:
    # etl_service's rules add INFO back; auth_service keeps the default (no @dangerous).
    assert "redis_version" in reply(cli(host, "INFO", "server", user="etl_service"))
    assert "NOPERM" in cli(host, "INFO", "server", user="auth_service").stdout


def test_memory_and_persistence_settings(host) -> None:
    settings = dict(zip(*[iter(reply(cli(host, "CONFIG", "GET", "max*", user=ADMIN)).splitlines())] * 2, strict=False))
    assert settings["maxmemory"] == str(64 * 1024 * 1024)
    assert settings["maxmemory-policy"] == "volatile-lru"
    appendonly = reply(cli(host, "CONFIG", "GET", "appendonly", user=ADMIN)).splitlines()[1]
    assert appendonly == ("yes" if host.backend.name == "redis-systemd" else "no")
    assert reply(cli(host, "CONFIG", "GET", "save", user=ADMIN)).splitlines()[1] == "900 1"


def test_acl_file_holds_hashes_not_passwords(host) -> None:
    acl = host.file("/etc/redis/users.acl")
    assert acl.user == "redis"
    assert acl.mode == 0o640
    for user in USERS:
        assert password(user) not in acl.content_string
