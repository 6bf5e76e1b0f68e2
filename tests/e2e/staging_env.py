"""What tests/e2e/test_staging.py reads of the staging topology's databases: Patroni's REST API,
the router's addresses (PostgreSQL read-write and read-only, the Redis master), the Sentinels,
etcd's health, Prometheus on the monitoring host, the repository host's stanza, and a writer
that inserts numbered rows through the router as a service would.

Every address is 127.0.0.1 with the port tests/e2e/topology.py's overlay gives the server (the
podman hosts share this machine's loopback).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from tests.e2e.topology import Topology
from tests.helpers import toolchain_env

ENV = "staging"
NAMESPACE = f"openpolicy-{ENV}"
DB_HOSTS = [f"openpolicy-{ENV}-db{n}" for n in (1, 2, 3)]
ROUTER, REPOSITORY, SCRATCH, MONITORING = (
    f"openpolicy-{ENV}-{h}" for h in ("router1", "backup1", "restore1", "monitoring1")
)
STANZA = "openpolicy"


def wait_for(condition, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:] + result.stderr[-2000:]


def podman(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=toolchain_env(), text=True, capture_output=True, check=check)


def vault_values(topo: Topology) -> dict:
    """The environment's vault as the roles read it (the tests' vault password)."""
    vault = topo.inventory / "group_vars" / "all" / "vault.yml"
    view = subprocess.run(["ansible-vault", "view", str(vault)], env=toolchain_env(), text=True,
                          capture_output=True, check=True)  # fmt: skip
    return yaml.safe_load(view.stdout)


class Staging:
    """The staging topology's servers, reached on this machine's loopback."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.router = topo.shared_ports

    # --- Patroni ----------------------------------------------------------------------------

    def rest(self, host: str, path: str = "/") -> tuple[int, dict]:
        """Patroni's REST API of a db host: (status, body); (0, {}) when it does not answer."""
        url = f"http://127.0.0.1:{self.topo.ports[host]['patroni_restapi_port']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def members(self) -> list[dict]:
        """The members of the cluster as the first member that answers sees them."""
        for host in DB_HOSTS:
            status, body = self.rest(host, "/cluster")
            if status == 200:
                return body.get("members", [])
        return []

    def named(self, role: str) -> str:
        """The name of the member in this role (leader, sync_standby), empty when there is none."""
        return next((m["name"] for m in self.members() if m.get("role") == role), "")

    def leader(self) -> str:
        return self.named("leader")

    @staticmethod
    def on_one_timeline(members: list[dict]) -> bool:
        """Every member on the same known timeline: a replica left on the old one still shows
        `running` with a small lag but replays nothing (roles/patroni's restore command)."""
        timelines = {m.get("timeline") for m in members}
        return len(timelines) == 1 and None not in timelines

    # --- etcd, the router, Prometheus ---------------------------------------------------------

    def etcd_health(self) -> dict[str, str]:
        """Each etcd member's own /health, over TLS with a client certificate the run made (the
        inventory's one PKI, roles/pki: credentials/pki/trust.crt and <host>-etcd-client.crt)."""
        client = next(self.topo.root.rglob(f"credentials/pki/{DB_HOSTS[0]}-etcd-client.crt"))
        context = ssl.create_default_context(cafile=str(client.parent / "trust.crt"))
        context.load_cert_chain(str(client), str(client.with_suffix(".key")))
        found = {}
        for host in DB_HOSTS:
            url = f"https://127.0.0.1:{self.topo.ports[host]['etcd_cluster_client_port']}/health"
            try:
                with urllib.request.urlopen(url, timeout=3, context=context) as response:
                    found[host] = json.loads(response.read()).get("health", "?")
            except (OSError, ValueError) as error:
                found[host] = f"no answer ({error.__class__.__name__})"
        return found

    def router_active_servers(self) -> dict[str, int]:
        """haproxy_backend_active_servers per listener, from the router's Prometheus exporter."""
        url = f"http://127.0.0.1:{self.router['postgresql_router_metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            lines = response.read().decode().splitlines()
        found = {}
        for line in lines:
            if line.startswith("haproxy_backend_active_servers{"):
                proxy = line.split('proxy="', 1)[1].split('"', 1)[0]
                found[proxy] = int(float(line.rsplit(" ", 1)[1]))
        return found

    def prometheus(self, query: str) -> dict[str, float]:
        """An instant query on the monitoring host's Prometheus: {instance (or "") : value}."""
        url = f"http://127.0.0.1:{self.router['prometheus_port']}/api/v1/query?"
        try:
            with urllib.request.urlopen(url + urllib.parse.urlencode({"query": query}), timeout=5) as response:
                result = json.loads(response.read())["data"]["result"]
        except (OSError, ValueError, KeyError):
            return {}
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in result}

    # --- Redis --------------------------------------------------------------------------------

    def redis(self, user: str, password: str, *command: str, port: int | None = None) -> str:
        port = port or self.router["openpolicy_db_router_redis_port"]
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--user", user, "--no-auth-warning", *command]
        env = {**os.environ, "REDISCLI_AUTH": password}
        return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=10, check=False).stdout.strip()

    def redis_master(self, sentinel_password: str) -> str:
        """The db host whose Redis the Sentinels call master (empty: none answers)."""
        for host in DB_HOSTS:
            port = str(self.topo.ports[host]["redis_sentinel_port"])
            cmd = ["redis-cli", "-h", "127.0.0.1", "-p", port, "--no-auth-warning"]
            cmd += ["SENTINEL", "get-master-addr-by-name", "openpolicy"]
            env = {**os.environ, "REDISCLI_AUTH": sentinel_password}
            out = subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=5, check=False).stdout.split()
            if len(out) == 2:
                return next(h for h in DB_HOSTS if self.topo.ports[h]["redis_port"] == int(out[1]))
        return ""

    # --- the repository host ------------------------------------------------------------------

    def stanza(self) -> dict:
        """pgBackRest's view of the stanza, read on the repository host as its job user."""
        command = f"sudo -u pgbackrest pgbackrest --stanza={STANZA} --output=json info"
        return json.loads(self.topo.ssh(REPOSITORY, command).stdout)[0]

    def manifest(self, label: str) -> dict:
        """The row-count manifest the backup job recorded for a backup ({} when it has none)."""
        path = f"/var/lib/openpolicy/backup/manifests/{STANZA}/{label}.json"
        read = self.topo.ssh(REPOSITORY, f"sudo cat {path}", check=False)
        return json.loads(read.stdout) if read.returncode == 0 else {}


class Database:
    """psql through the router's read-write (or read-only) address."""

    def __init__(self, port: int, password: str, user: str = "openpolicy_owner"):
        self.env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "2"}
        self.conninfo = f"host=127.0.0.1 port={port} dbname=openpolicy user={user} sslmode=require"

    def sql(self, statement: str, timeout: float = 10) -> subprocess.CompletedProcess:
        cmd = ["psql", "-X", "-w", "-tA", "-v", "ON_ERROR_STOP=1", self.conninfo, "-c", statement]
        try:
            return subprocess.run(cmd, env=self.env, text=True, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", "timeout")


class Writer:
    """Inserts numbered rows through the router, one connection each, as a service would after a
    reconnect; remembers which commits were acknowledged and the longest run of failures."""

    def __init__(self, db: Database, table: str):
        self.db, self.table = db, table
        self.acknowledged: list[int] = []
        self.failed: list[int] = []
        self.last_ok = time.monotonic()
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        result = db.sql(f"create table if not exists {table} (id int primary key, at timestamptz default now())")
        assert result.returncode == 0, result.stderr

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            if self.db.sql(f"insert into {self.table} (id) values ({n})", timeout=5).returncode == 0:
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - self.last_ok)
                self.last_ok = now
                self.acknowledged.append(n)
            else:
                self.failed.append(n)
            time.sleep(0.05)

    def acknowledged_since(self, moment: float) -> bool:
        return self.last_ok > moment

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def missing(self) -> list[int]:
        result = self.db.sql(f"select id from {self.table}")
        assert result.returncode == 0, result.stderr
        present = {int(line) for line in result.stdout.split()}
        return sorted(set(self.acknowledged) - present)
