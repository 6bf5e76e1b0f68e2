"""Verify role postgresql on the scenario's primary and replica (both systemd hosts).

Every check goes through psql inside the containers, over TCP with TLS verified against the
generated CA, as the roles the services use. Passwords come from the files the converge
generated in the scenario's ephemeral directory (like inventories/*/credentials/).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import testinfra

PRIMARY, REPLICA = "pg-primary", "pg-replica"
PORTS = {PRIMARY: 55432, REPLICA: 55433}
SERVICES = {"auth": "auth", "config": "config", "policy": "policy"}
CONNECTION_LIMITS = {
    "auth": 7,
    "config": 5,
    "policy": 5,
    "openpolicy_owner": 10,
    "openpolicy_reporting": 5,
}
CA = "/etc/postgresql/15/main/tls/ca.crt"
ROOT = Path(__file__).resolve().parents[3]
testinfra_hosts = [f"podman://{name}" for name in PORTS]


def password(role: str) -> str:
    credentials = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "credentials" / "postgresql"
    return (credentials / role).read_text().split()[0]


def psql(
    host, sql: str, role: str, *, port: int | None = None, sslmode: str = "verify-full", secret: str | None = None
):
    """Run SQL as `role` over TCP (TLS unless sslmode says otherwise); returns the command result."""
    port = port or PORTS[host.backend.name]
    conninfo = (
        f"host=127.0.0.1 port={port} dbname=openpolicy user={role} sslmode={sslmode} sslrootcert={CA} connect_timeout=5"
    )
    return host.run(
        "env PGPASSWORD=%s psql %s -v ON_ERROR_STOP=1 -XAtc %s",
        secret if secret is not None else password(role),
        conninfo,
        sql,
    )


def superuser(host, sql: str):
    """Run SQL as postgres over the local socket (peer), the way the role does."""
    port = PORTS[host.backend.name]
    return host.run("su postgres -c %s", f'psql -p {port} -d openpolicy -v ON_ERROR_STOP=1 -XAtc "{sql}"')


def ok(result) -> str:
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def primary():
    return testinfra.get_host(f"podman://{PRIMARY}")


@pytest.fixture(scope="module")
def replica():
    return testinfra.get_host(f"podman://{REPLICA}")


# --- service managers ---------------------------------------------------------------------


def test_server_runs_under_systemd(host) -> None:
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    assert host.service("postgresql@15-main").is_running
    assert host.service("postgresql@15-main").is_enabled


def test_listens_only_on_loopback_with_its_port(host) -> None:
    # The images carry neither ss nor netstat: read the kernel's table of listening sockets.
    port = f"{PORTS[host.backend.name]:04X}"
    listening = [
        line.split()[1]
        for line in host.file("/proc/net/tcp").content_string.splitlines()[1:]
        if line.split()[3] == "0A" and line.split()[1].endswith(":" + port)
    ]
    assert listening == ["0100007F:" + port]


def test_tls_and_scram_settings(host) -> None:
    settings = ok(
        superuser(
            host,
            "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings "
            "WHERE name IN ('ssl', 'password_encryption', 'shared_buffers', 'listen_addresses')",
        )
    )
    assert settings == "listen_addresses=127.0.0.1,password_encryption=scram-sha-256,shared_buffers=8192,ssl=on"


# --- access -------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "schema"), SERVICES.items())
def test_service_creates_tables_in_its_own_schema(primary, role: str, schema: str) -> None:
    ok(
        psql(
            primary,
            f"CREATE TABLE IF NOT EXISTS {schema}.verify_items (id int PRIMARY KEY, note text); "
            f"INSERT INTO {schema}.verify_items VALUES (1, 'x') ON CONFLICT DO NOTHING",
            role,
        )
    )
    assert ok(psql(primary, f"SELECT count(*) FROM {schema}.verify_items", role)) == "1"


def test_unqualified_tables_land_in_the_services_schema(primary) -> None:
    # The role is named after its schema: the default search_path ("$user", public) finds it.
    ok(psql(primary, "CREATE TABLE IF NOT EXISTS unqualified (id int)", "config"))
    sql = "SELECT schemaname FROM pg_tables WHERE tablename = 'unqualified'"
    assert ok(superuser(primary, sql)) == "config"


@pytest.mark.parametrize(("role", "other"), [("auth", "config"), ("config", "policy"), ("policy", "auth")])
def test_service_cannot_touch_another_schema(primary, role: str, other: str) -> None:
    read = psql(primary, f"SELECT * FROM {other}.verify_items", role)
    assert read.rc != 0
    assert f"permission denied for schema {other}" in read.stderr
    create = psql(primary, f"CREATE TABLE {other}.intruder (id int)", role)
    assert create.rc != 0
    assert f"permission denied for schema {other}" in create.stderr


def test_service_cannot_create_in_public(primary) -> None:
    result = psql(primary, "CREATE TABLE public.intruder (id int)", "auth")
    assert result.rc != 0
    assert "permission denied for schema public" in result.stderr


def test_reporting_role_reads_every_schema_and_writes_nothing(primary) -> None:
    for schema in SERVICES.values():
        assert ok(psql(primary, f"SELECT count(*) FROM {schema}.verify_items", "openpolicy_reporting")) == "1"
    write = psql(primary, "INSERT INTO auth.verify_items VALUES (99, 'no')", "openpolicy_reporting")
    assert write.rc != 0
    assert "read-only transaction" in write.stderr or "permission denied" in write.stderr


def test_owner_role_migrates_as_the_service(primary) -> None:
    ok(psql(primary, "SET ROLE auth; CREATE TABLE IF NOT EXISTS auth.migrated (id int)", "openpolicy_owner"))
    sql = "SELECT tableowner FROM pg_tables WHERE schemaname = 'auth' AND tablename = 'migrated'"
    assert ok(superuser(primary, sql)) == "auth"


def test_connection_limits(primary) -> None:
    rows = ok(superuser(primary, "SELECT rolname || '=' || rolconnlimit FROM pg_roles WHERE rolconnlimit >= 0"))
    limits = dict(line.split("=") for line in rows.splitlines())
    assert {role: int(limits.get(role, -1)) for role in CONNECTION_LIMITS} == CONNECTION_LIMITS


def test_extension_created(primary) -> None:
    sql = "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_trgm'"
    assert ok(superuser(primary, sql)) == "public"


# --- refused logins -------------------------------------------------------------------------


@pytest.mark.parametrize("server", [PRIMARY, REPLICA])
def test_plain_tcp_is_refused(primary, replica, server: str) -> None:
    host = primary if server == PRIMARY else replica
    result = psql(host, "SELECT 1", "auth", sslmode="disable")
    assert result.rc != 0
    assert "no encryption" in result.stderr


def test_wrong_password_is_refused(primary) -> None:
    result = psql(primary, "SELECT 1", "auth", secret=password("config"))
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


def test_only_scram_over_tls_in_pg_hba(primary, replica) -> None:
    for host in (primary, replica):
        rules = ok(superuser(host, "SELECT DISTINCT type || ':' || auth_method FROM pg_hba_file_rules"))
        assert set(rules.splitlines()) == {"local:peer", "hostssl:scram-sha-256", "hostnossl:reject"}


def test_md5_password_is_refused(primary) -> None:
    """A role whose secret is an md5 hash cannot log in: only scram-sha-256 is accepted."""
    secret = password("openpolicy_reporting")
    try:
        ok(superuser(primary, f"SET password_encryption = 'md5'; ALTER ROLE openpolicy_reporting PASSWORD '{secret}'"))
        result = psql(primary, "SELECT 1", "openpolicy_reporting")
        assert result.rc != 0
        assert "password authentication failed" in result.stderr
    finally:
        ok(superuser(primary, f"ALTER ROLE openpolicy_reporting PASSWORD '{secret}'"))
    assert ok(psql(primary, "SELECT 1", "openpolicy_reporting")) == "1"


# --- replication -------------------------------------------------------------------------------


def test_replica_streams_over_tls_from_its_slot(primary) -> None:
    rows = ok(
        superuser(
            primary,
            "SELECT r.application_name || ':' || r.state || ':' || s.ssl "
            "FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
        )
    )
    assert rows == "pg_replica:streaming:true"
    assert ok(superuser(primary, "SELECT slot_name || ':' || active FROM pg_replication_slots")) == "pg_replica:true"


def test_row_written_on_primary_appears_on_replica(primary, replica) -> None:
    marker = uuid.uuid4().hex
    ok(
        psql(
            primary,
            "CREATE TABLE IF NOT EXISTS auth.replicated (marker text); "
            f"INSERT INTO auth.replicated VALUES ('{marker}')",
            "auth",
        )
    )
    deadline = time.monotonic() + 30
    while True:
        result = psql(replica, f"SELECT count(*) FROM auth.replicated WHERE marker = '{marker}'", "auth")
        if result.rc == 0 and result.stdout.strip() == "1":
            break
        assert time.monotonic() < deadline, f"row not on the replica after 30 s: {result.stderr}"
        time.sleep(0.5)


def test_replica_is_read_only(replica) -> None:
    assert ok(psql(replica, "SELECT pg_is_in_recovery()", "auth")) == "t"
    result = psql(replica, "INSERT INTO auth.verify_items VALUES (2, 'y')", "auth")
    assert result.rc != 0
    assert "read-only transaction" in result.stderr


# --- what a rerun reads -------------------------------------------------------------------

# The read a rerun makes before the database tasks (plugins/modules/postgresql_service_gaps.py),
# through Ansible as the role makes it, with the role's parameters.
GAPS_PLAY = """
- hosts: pg-primary
  gather_facts: false
  tasks:
    - name: Read what the database tasks would change
      openpolicy.deploy.postgresql_service_gaps:
        login_unix_socket: /var/run/postgresql
        login_port: "{{ postgresql_port }}"
        database: openpolicy
        services: "{{ postgresql_service_schemas }}"
        passwords: "{{ postgresql_role_passwords }}"
        reporting_role: openpolicy_reporting
        reporting_schemas: "{{ postgresql_service_schemas + [{'name': 'openpolicy_owner', 'schema': 'public'}] }}"
        owner_role: openpolicy_owner
        owner_connection_limit: 10
        reporting_connection_limit: 5
        replication_role: replicator
        replication_connection_limit: 10
        extensions: "{{ postgresql_extensions }}"
        replication_slots: [pg_replica]
      become: true
      become_user: postgres
      register: gaps
    - name: Hand the result to the test
      ansible.builtin.copy:
        content: "{{ gaps | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      delegate_to: localhost
"""


def database_gaps(tmp_path: Path) -> dict:
    playbook, result = tmp_path / "gaps.yml", tmp_path / "gaps.json"
    playbook.write_text(GAPS_PLAY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    command = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)]
    command += ["-e", f"result_file={result}"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:]
    return json.loads(result.read_text())


@pytest.mark.parametrize(
    ("drift", "undo", "named"),
    [
        ("REVOKE CONNECT ON DATABASE openpolicy FROM openpolicy_reporting",
         "GRANT CONNECT ON DATABASE openpolicy TO openpolicy_reporting", "connect"),
        ("ALTER EXTENSION pg_trgm SET SCHEMA auth", "ALTER EXTENSION pg_trgm SET SCHEMA public", "extensions"),
        ("ALTER ROLE openpolicy_reporting RESET default_transaction_read_only",
         "ALTER ROLE openpolicy_reporting SET default_transaction_read_only = on", "reporting_role"),
    ],
    ids=["connect", "extension", "reporting-role"],
)  # fmt: skip
def test_a_rerun_reads_the_database_in_place_and_names_what_drifted(primary, tmp_path, drift, undo, named) -> None:
    # The converge left nothing to change: a rerun runs none of the database-wide tasks.
    in_place = database_gaps(tmp_path)
    assert (in_place["shared"], in_place["roles"], in_place["schemas"]) == ([], [], [])
    ok(superuser(primary, drift))
    try:
        assert database_gaps(tmp_path)["shared"] == [named]
    finally:
        ok(superuser(primary, undo))
