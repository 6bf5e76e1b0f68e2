"""Databases that survive losing a host, end to end: three podman db hosts of the module's own
(etcd, Patroni + PostgreSQL 15, Redis + Sentinel on each) and a router host (HAProxy: one address
for PostgreSQL's primary, one for Redis' master), built by provision_hosts.yml,
provision_databases.yml, provision_ha.yml and provision_backups.yml (site.yml's order, in one
ansible-playbook run) from a copy of inventories/local with `postgresql_ha: patroni` and
`redis_ha: sentinel`, plus a backup host that is also the restore drills' scratch host.

Every service listens on 127.0.0.1 with a port of its own in 61400-61499 (the containers share
the host's network), clear of `make up` (5432/6379) and of Molecule's ranges. No cluster is
needed. Lean for `make test`: the environment is provisioned once and shared by every case;
after that only the narrow playbooks a case is about run (provision_ha.yml + provision_backups.yml
for the rerun, rotate_secrets.yml without delivery, backup.yml then restore_drill.yml,
switchover.yml), and the bad-topology runs (preflight only, the control host) run side by side.
The tests of this module build on each other in file order.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, failure_messages, recap, toolchain_env

pytestmark = pytest.mark.podman

DB_HOSTS = [f"openpolicy-e2e-ha-db{n}" for n in (1, 2, 3)]
ROUTER = "openpolicy-e2e-ha-router1"
BACKUP = "openpolicy-e2e-ha-backup1"
ROUTER_PG_PORT = 61450
ROUTER_PG_REPLICA_PORT = 61451
ROUTER_REDIS_PORT = 61452
ROUTER_METRICS_PORT = 61453
# The backup host is the monitoring host too (an inventory choice, no container of its own):
# Prometheus scrapes Patroni's REST API and etcd's metrics port there, and evaluates the HA alerts.
PROMETHEUS_PORT = 61491
MONITORING_PORTS = {
    "prometheus_port": PROMETHEUS_PORT,
    "alertmanager_port": 61492,
    "host_logs_collector_port": 61493,
    "node_exporter_port": 61494,
    # Seconds, not the default 30: the cases read what Prometheus saw of a failover.
    "prometheus_scrape_interval": "5s",
    "prometheus_scrape_timeout": "4s",
    "prometheus_evaluation_interval": "5s",
}
# Prometheus and Alertmanager on the monitoring host only (the narrow run after the provisioning):
# the exporters of the db hosts are test_monitoring's subject, not this module's.
MONITORING = ("playbooks/provision_monitoring.yml", "--limit", "control:monitoring")
# Patroni's timing in this inventory (defaults are 30/10/10): failover after about ttl.
PATRONI_TIMING = {"patroni_ttl": 15, "patroni_loop_wait": 3, "patroni_retry_timeout": 5}
# site.yml's order: the backups come after the HA stage (Patroni runs PostgreSQL by then).
BACKUPS = "playbooks/provision_backups.yml"
PLAYBOOKS = [
    "playbooks/provision_hosts.yml",
    "playbooks/provision_databases.yml",
    "playbooks/provision_ha.yml",
    BACKUPS,
]
# Five podman hosts provisioned from scratch in one run: half an hour and more under a heavy load.
PROVISION_TIMEOUT = 3600
PLAY_TIMEOUT = 1500
STANZA = "openpolicy"
# Set to a file name, the module keeps its environment's folder in FILE.d, leaves its hosts up and
# writes that folder's name into FILE: bench/bench_ha.py --reuse FILE measures on them instead of
# provisioning its own, and OPENPOLICY_E2E_HA_REUSE=FILE runs a case again on them (-k).
KEEP = "OPENPOLICY_E2E_HA_KEEP"
REUSE = "OPENPOLICY_E2E_HA_REUSE"


SSH_PORTS = {host: 61401 + i for i, host in enumerate([*DB_HOSTS, ROUTER, BACKUP])}


def ports(n: int) -> dict[str, int]:
    """The ports of db host n (1-based): every service of every host on a port of its own."""
    return {
        "postgresql_port": 61410 + n,
        "patroni_restapi_port": 61420 + n,
        "etcd_cluster_client_port": 61430 + n,
        "etcd_cluster_peer_port": 61440 + n,
        "etcd_cluster_metrics_port": 61454 + n,
        "redis_port": 61460 + n,
        "redis_sentinel_port": 61470 + n,
        "pgbackrest_tls_server_port": 61480 + n,
        # roles/pgbackrest reads the db hosts' ports through this name (default: postgresql_port).
        "pgbackrest_pg_port": 61410 + n,
    }


def host_entry(host: str, flavor: str, **values) -> dict:
    """A podman host reached like a real one (roles/podman_hosts): SSH as deploy with become,
    on a loopback port of its own, with the module's key and known_hosts (under its inventory's
    credentials/ssh/, the role's default place)."""
    return {
        "ansible_host": "127.0.0.1",
        "ansible_port": SSH_PORTS[host],
        "ansible_user": "deploy",
        "ansible_become": True,
        "ansible_ssh_private_key_file": "{{ inventory_dir }}/credentials/ssh/id_ed25519",
        "ansible_ssh_common_args": (
            "-o UserKnownHostsFile={{ inventory_dir }}/credentials/ssh/known_hosts -o StrictHostKeyChecking=yes"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
        "podman_host_flavor": flavor,
        **values,
    }


def hosts_yaml(db_hosts: list[str], etcd_hosts: list[str]) -> dict:
    local = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        # The rotation's login checks go through the router, whose Redis port is not the servers'.
        "secrets_redis_port": ROUTER_REDIS_PORT,
    }
    return {
        "all": {
            "children": {
                "control": {"hosts": {"localhost": local}},
                "db": {"hosts": {h: host_entry(h, "db", **ports(DB_HOSTS.index(h) + 1)) for h in db_hosts}},
                "etcd": {"hosts": {h: host_entry(h, "db", **ports(DB_HOSTS.index(h) + 1)) for h in etcd_hosts}},
                "db_router": {"hosts": {ROUTER: host_entry(ROUTER, "systemd")}},
                # The repository host, the scratch host of the restore drill and the monitoring host
                # (its image has the monitoring packages in it, as a cloud image would).
                "backup": {
                    "hosts": {
                        BACKUP: host_entry(
                            BACKUP,
                            "monitoring",
                            pgbackrest_tls_server_port=61484,
                            pgbackrest_scratch_port=61490,
                            **MONITORING_PORTS,
                        )
                    }
                },
                "monitoring": {"hosts": {BACKUP: {}}},
            }
        }
    }


class HaEnv:
    """The module's environment: an inventory copy with its own vault password, playbook runs."""

    def __init__(self, root: Path, create: bool = True):
        self.root = root
        self.inventory = root / "inventories" / "ha"
        self.password = root / "vault-password"
        self.vault = self.inventory / "group_vars" / "all" / "vault.yml"
        # Numbers the runs' logs (next() of a count is safe from the side-by-side runs' threads).
        self.runs = itertools.count(1)
        if not create:
            # An environment a run left up (KEEP): its inventory and vault as that run wrote them.
            return
        shutil.copytree(
            REPO / "inventories" / "local", self.inventory, ignore=shutil.ignore_patterns("credentials", "vault.yml")
        )
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts_yaml(DB_HOSTS, DB_HOSTS)))
        # The choices of an HA inventory (as inventories/staging's), and what differs on this
        # machine; the wiring is the shared layer's (playbooks/group_vars/all/ha.yml), the HA
        # passwords the vault's (roles/secrets generates them).
        ha_vars = {
            "postgresql_ha": "patroni",
            "redis_ha": "sentinel",
            "postgresql_advertise_address": "127.0.0.1",
            "etcd_cluster_address": "127.0.0.1",
            "openpolicy_db_router_address": "127.0.0.1",
            "openpolicy_db_router_port": ROUTER_PG_PORT,
            "openpolicy_db_router_replica_port": ROUTER_PG_REPLICA_PORT,
            "openpolicy_db_router_redis_port": ROUTER_REDIS_PORT,
            "postgresql_router_metrics_port": ROUTER_METRICS_PORT,
            "redis_sentinel_down_after_ms": 3000,
            # The podman hosts cannot create the mount namespace of Debian's haproxy unit.
            "postgresql_router_unit_sandboxing": False,
            # The podman hosts' open-file limit is 1024: HAProxy needs about 2 per connection.
            "postgresql_router_maxconn": 150,
            # A commit waits for one replica: a failover loses no acknowledged write.
            "patroni_synchronous_mode": True,
            **PATRONI_TIMING,
        }
        (self.inventory / "group_vars" / "all" / "ha.yml").write_text(yaml.safe_dump(ha_vars))
        fd = os.open(self.password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")

    def play(
        self,
        *playbooks: str,
        inventory: Path | None = None,
        args: tuple[str, ...] = (),
        timeout: int = PLAY_TIMEOUT,
        **extra,
    ) -> subprocess.CompletedProcess:
        env = toolchain_env()
        env.pop("ANSIBLE_VAULT_IDENTITY_LIST", None)
        extra_vars = {
            "secrets_vault_file": str(self.vault),
            "podman_hosts_groups": ["db", "etcd", "db_router", "backup", "monitoring"],
            "podman_hosts_environment": "e2e-ha",
            **extra,
        }
        cmd = ["ansible-playbook", "-i", str(inventory or self.inventory), *playbooks, *args]
        cmd += ["--vault-password-file", str(self.password), "-e", json.dumps(extra_vars)]
        try:
            result = subprocess.run(
                cmd, cwd=REPO, env=env, text=True, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as expired:
            # Keep what the run printed, so that the failure names the task it was at.
            out, err = (
                o.decode(errors="replace") if isinstance(o, bytes) else o or ""
                for o in (expired.stdout, expired.stderr)
            )
            result = subprocess.CompletedProcess(cmd, -9, f"{out}\n(timed out after {timeout} s)", err)
        # Each run's whole output beside the inventory, for a failure's or a slow run's story.
        log = self.root / "logs" / f"{next(self.runs):02d}-{'+'.join(Path(p).stem for p in playbooks)}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{result.stdout}\n--- stderr\n{result.stderr}")
        return result

    @property
    def secrets(self) -> dict[str, str]:
        """The HA pieces' passwords, as the inventories take them from the vault."""
        passwords = self.vault_values()["vault_ha_passwords"]
        return {f"{name}_password": value for name, value in passwords.items()}

    def vault_values(self) -> dict:
        env = toolchain_env()
        env.pop("ANSIBLE_VAULT_IDENTITY_LIST", None)
        view = ["ansible-vault", "view", "--vault-password-file", str(self.password), str(self.vault)]
        return yaml.safe_load(subprocess.run(view, env=env, text=True, capture_output=True, check=True).stdout)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:] + result.stderr[-2000:]


def podman(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=toolchain_env(), text=True, capture_output=True, check=check)


def stanza() -> dict:
    """pgBackRest's view of the stanza, read on the repository host as its job user."""
    command = ["runuser", "-u", "pgbackrest", "--", "pgbackrest", f"--stanza={STANZA}", "--output=json", "info"]
    info = podman("exec", BACKUP, *command, check=True)
    return json.loads(info.stdout)[0]


def manifest(label: str) -> dict:
    """The row-count manifest the backup job recorded for a backup ({} when it has none)."""
    path = f"/var/lib/openpolicy/backup/manifests/{STANZA}/{label}.json"
    read = podman("exec", BACKUP, "cat", path)
    return json.loads(read.stdout) if read.returncode == 0 else {}


def rest(n: int, path: str = "/") -> tuple[int, dict]:
    """Patroni's REST API of db host n: (status, body); (0, {}) when it does not answer."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{ports(n)['patroni_restapi_port']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return 0, {}


def members() -> list[dict]:
    """The members of the cluster as the first member that answers sees them."""
    for n in (1, 2, 3):
        status, body = rest(n, "/cluster")
        if status == 200:
            return body.get("members", [])
    return []


def named(role: str) -> str:
    """The name of the member in this role (leader, sync_standby), empty when there is none."""
    return next((m["name"] for m in members() if m.get("role") == role), "")


def leader() -> str:
    return named("leader")


class Database:
    """psql through the router's read-write address as the owner role of the database."""

    def __init__(self, password: str, port: int = ROUTER_PG_PORT, user: str = "openpolicy_owner"):
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


def etcd_health(env: HaEnv) -> dict[str, str]:
    """Each etcd member's own /health, over TLS with the inventory's client certificate."""
    import ssl
    import urllib.request

    pki = env.inventory / "credentials" / "pki"
    context = ssl.create_default_context(cafile=str(pki / "trust.crt"))
    context.load_cert_chain(str(pki / f"{DB_HOSTS[0]}-etcd-client.crt"), str(pki / f"{DB_HOSTS[0]}-etcd-client.key"))
    found = {}
    for n, host in enumerate(DB_HOSTS, start=1):
        url = f"https://127.0.0.1:{ports(n)['etcd_cluster_client_port']}/health"
        try:
            with urllib.request.urlopen(url, timeout=3, context=context) as response:
                found[host] = json.loads(response.read()).get("health", "?")
        except (OSError, ValueError) as error:
            found[host] = f"no answer ({error.__class__.__name__})"
    return found


def redis(user: str, password: str, *command: str, port: int = ROUTER_REDIS_PORT) -> str:
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--user", user, "--no-auth-warning", *command]
    env = {**os.environ, "REDISCLI_AUTH": password}
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=10, check=False).stdout.strip()


def redis_master(sentinel_password: str) -> int:
    """The db host number whose Redis the Sentinels call master (0: none answers)."""
    for n in (1, 2, 3):
        port = str(ports(n)["redis_sentinel_port"])
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", port, "--no-auth-warning"]
        cmd += ["SENTINEL", "get-master-addr-by-name", "openpolicy"]
        env = {**os.environ, "REDISCLI_AUTH": sentinel_password}
        out = subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=5, check=False).stdout.split()
        if len(out) == 2:
            return next(m for m in (1, 2, 3) if ports(m)["redis_port"] == int(out[1]))
    return 0


def wait_for(condition, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


def remove_hosts() -> None:
    podman("rm", "--force", "--time", "5", *DB_HOSTS, ROUTER, BACKUP)


@pytest.fixture(scope="module")
def ha_env(tmp_path_factory: pytest.TempPathFactory) -> HaEnv:
    if os.environ.get(KEEP):
        # Beside the KEEP file, not under pytest's folders (a later session removes those).
        root = Path(os.environ[KEEP] + ".d")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(mode=0o700, parents=True)
        return HaEnv(root)
    return HaEnv(tmp_path_factory.mktemp("ha-env"))


@pytest.fixture(scope="module")
def ha(ha_env: HaEnv):
    if os.environ.get(REUSE):
        # The hosts a KEEP run left up, for a case run again alone (-k) while it is being fixed.
        env = HaEnv(Path(Path(os.environ[REUSE]).read_text().strip()), create=False)
        env.provision_seconds = env.monitoring_seconds = 0.0
    else:
        remove_hosts()
        env = ha_env
        started = time.monotonic()
        result = env.play(*PLAYBOOKS, timeout=PROVISION_TIMEOUT)
        assert result.returncode == 0, output(result)
        env.provision_seconds = time.monotonic() - started
        started = time.monotonic()
        result = env.play(MONITORING[0], args=MONITORING[1:])
        assert result.returncode == 0, output(result)
        env.monitoring_seconds = time.monotonic() - started
    values = env.vault_values()
    env.owner_password = values["vault_postgresql_passwords"]["openpolicy_owner"]
    env.redis_user = "auth_service"
    env.redis_password = values["vault_redis_passwords"]["auth-service"]
    yield env
    if os.environ.get(KEEP):
        Path(os.environ[KEEP]).write_text(f"{env.root}\n")
    elif not os.environ.get(REUSE):
        remove_hosts()


def test_bad_topology_fails_in_one_line_before_anything_changes(ha_env: HaEnv, tmp_path: Path):
    ha = ha_env
    cases = {
        "even-etcd": (hosts_yaml(DB_HOSTS, DB_HOSTS[:2]), {}, "expected an odd number of"),
        "one-db-host": (
            hosts_yaml(DB_HOSTS[:1], DB_HOSTS),
            {},
            "postgresql_ha: patroni needs at least two hosts in group db",
        ),
        "sync-without-replica": (
            hosts_yaml(DB_HOSTS[:2], DB_HOSTS),
            {"patroni_synchronous_mode": True, "patroni_synchronous_node_count": 2},
            "patroni_synchronous_mode: a synchronous mode with patroni_synchronous_node_count 2 needs",
        ),
    }

    def run(name: str) -> subprocess.CompletedProcess:
        hosts, extra, _ = cases[name]
        inventory = tmp_path / name
        inventory.mkdir()
        (inventory / "group_vars").symlink_to(ha.inventory / "group_vars")
        (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
        return ha.play("playbooks/provision_ha.yml", inventory=inventory, **extra)

    # Each run stops in the preflight on the control host: side by side, they cost one run's time.
    with ThreadPoolExecutor(len(cases)) as pool:
        results = dict(zip(cases, pool.map(run, cases), strict=True))
    for name, (_, _, expected) in cases.items():
        result = results[name]
        assert result.returncode != 0, name
        messages = failure_messages(result)
        assert any(expected in m and "\n" not in m for m in messages), (name, messages, output(result))
        counts = recap(result)
        assert set(counts) == {"localhost"}, f"{name}: only the control host may run, got {counts}"


def test_cluster_is_up_with_one_leader_and_streaming_replicas(ha: HaEnv):
    print(f"provisioned in {ha.provision_seconds:.0f} s, monitoring host in {ha.monitoring_seconds:.0f} s")
    # Synchronous mode: one replica confirms every commit, the other streams.
    roles = wait_for(lambda: sorted(m["role"] for m in members()) == ["leader", "replica", "sync_standby"], 30)
    assert roles, members()
    assert leader() == DB_HOSTS[0]
    db = Database(ha.owner_password)
    assert db.sql("select 1").stdout.strip() == "1"
    readonly = Database(ha.owner_password, ROUTER_PG_REPLICA_PORT).sql("select pg_is_in_recovery()")
    assert readonly.stdout.strip() == "t", readonly.stderr
    assert redis(ha.redis_user, ha.redis_password, "SET", "auth_service:before", "1") == "OK"
    assert redis_master(ha.secrets["redis_sentinel_password"]) == 1
    # HAProxy's own exporter: one server up behind the read-write listener (the alert's series).
    servers = router_active_servers()
    assert (servers.get("postgresql_primary"), servers.get("postgresql_replicas")) == (1, 2), servers


def router_active_servers() -> dict[str, int]:
    """haproxy_backend_active_servers per listener, from the router's Prometheus exporter."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{ROUTER_METRICS_PORT}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    found = {}
    for line in lines:
        if line.startswith("haproxy_backend_active_servers{"):
            proxy = line.split('proxy="', 1)[1].split('"', 1)[0]
            found[proxy] = int(float(line.rsplit(" ", 1)[1]))
    return found


def prometheus(query: str) -> dict[str, float]:
    """An instant query on the monitoring host's Prometheus: {instance (or "") : value}."""
    import urllib.parse
    import urllib.request

    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.loads(response.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return {}
    return {r["metric"].get("instance", ""): float(r["value"][1]) for r in result}


# The series monitoring/rules/ha.yml reads, as Debian's Patroni and etcd name them.
HA_SERIES = (
    "patroni_cluster_unlocked",
    "patroni_master",
    "patroni_replica",
    "patroni_postgres_timeline",
    "patroni_xlog_location",
    "patroni_xlog_replayed_location",
    'etcd_server_has_leader{job="etcd"}',
)


def test_prometheus_scrapes_patroni_and_etcd_on_every_db_host(ha: HaEnv):
    """The `patroni` and `etcd` jobs come from the inventory (postgresql_ha: patroni): every member
    is a target that answers, the series the HA alerts read are there, and no alert of theirs fires."""
    every = set(DB_HOSTS)
    for job in ("patroni", "etcd"):
        up = wait_for(lambda job=job: set(prometheus(f'up{{job="{job}"}} == 1')) == every, 90, 2)
        assert up, (job, prometheus(f'up{{job="{job}"}}'))
    for series in HA_SERIES:
        assert set(prometheus(series)) == every, (series, prometheus(series))
    assert prometheus('max(patroni_master{job="patroni"})') == {"": 1.0}
    assert prometheus("ALERTS{alertname=~'OpenPolicy(DatabaseNoLeader|EtcdMemberDown)'}") == {}
    ha.timeline_before = prometheus("max(patroni_postgres_timeline)")[""]


def test_backups_archive_from_the_patroni_primary(ha: HaEnv):
    """provision_backups.yml after the HA stage (in the provisioning run): the stanza was created
    through whichever db host is primary and its WAL reached the repository (the role's
    `pgbackrest check`), and a first full backup with its row-count manifest was taken, before
    the primary is lost."""
    info = stanza()
    assert info["status"]["code"] == 0, info["status"]
    backups = [b for b in info["backup"] if b["type"] == "full"]
    assert backups, info
    assert info["archive"] and info["archive"][0].get("max"), info["archive"]
    # No service has made a table yet: the manifest is there, with nothing to count.
    assert "recorded_at" in manifest(backups[-1]["label"]), "the first backup has no row-count manifest"


def test_losing_the_primary_host_keeps_every_acknowledged_write(ha: HaEnv):
    db = Database(ha.owner_password)
    with Writer(db, "ha_failover") as writer:
        assert wait_for(lambda: len(writer.acknowledged) >= 20, 30)
        killed = time.monotonic()
        podman("kill", DB_HOSTS[0], check=True)
        assert wait_for(lambda: writer.acknowledged_since(killed + 1), 120, 0.2), "no write succeeded after the kill"
        gap = writer.last_ok - killed
        time.sleep(2)
    new_leader = leader()
    assert new_leader in DB_HOSTS[1:], new_leader
    assert writer.missing() == [], "acknowledged rows lost"
    print(f"failover: writes through the router resumed {writer.longest_gap:.1f} s after the last one before the kill "
          f"(first success {gap:.1f} s after it); {len(writer.acknowledged)} rows acknowledged, "
          f"{len(writer.failed)} refused; new primary {new_leader}")  # fmt: skip
    # Redis lost its master with the host too: Sentinel promotes a replica, the address stays.
    assert wait_for(lambda: redis_master(ha.secrets["redis_sentinel_password"]) in (2, 3), 60)
    assert wait_for(lambda: redis(ha.redis_user, ha.redis_password, "SET", "auth_service:after", "1") == "OK", 30)
    assert redis(ha.redis_user, ha.redis_password, "GET", "auth_service:before") == "1"


def test_prometheus_saw_the_failover_and_the_lost_etcd_member(ha: HaEnv):
    """After the primary's host was lost: the new primary's timeline is one higher in Prometheus
    (what OpenPolicyDatabaseFailoverHappened compares), and the lost host's etcd member is down
    long enough for OpenPolicyEtcdMemberDown (for: 1m) to fire for it."""
    grew = wait_for(lambda: prometheus("max(patroni_postgres_timeline)").get("", 0) > ha.timeline_before, 60, 2)
    assert grew, (ha.timeline_before, prometheus("patroni_postgres_timeline"))
    firing = 'ALERTS{alertname="OpenPolicyEtcdMemberDown", alertstate="firing"}'
    assert wait_for(lambda: set(prometheus(firing)) == {DB_HOSTS[0]}, 120, 5), prometheus("ALERTS")


def test_old_primary_returns_as_a_replica_and_a_rerun_changes_nothing(ha: HaEnv):
    podman("start", DB_HOSTS[0], check=True)
    # After pg_rewind the returning member is consistent only once it has replayed WAL past the
    # point the rewind copied up to: on an idle primary that waits for archive_timeout. A live
    # database writes; so does this loop (a row through the router per poll).
    db = Database(ha.owner_password)
    db.sql("create table if not exists ha_rejoin (at timestamptz default now())")

    def replica_again() -> bool:
        db.sql("insert into ha_rejoin default values", timeout=5)
        status, body = rest(1, "/patroni")
        return status == 200 and body.get("role") == "replica" and body.get("state") == "running"

    assert wait_for(replica_again, 180, 2), rest(1, "/patroni")
    # Its etcd member is one of three again: without it, losing one more host ends the quorum.
    assert wait_for(lambda: set(etcd_health(ha).values()) == {"true"}, 120, 2), etcd_health(ha)
    assert wait_for(lambda: redis_master(ha.secrets["redis_sentinel_password"]) in (2, 3), 10)
    result = ha.play("playbooks/provision_ha.yml", BACKUPS)
    assert result.returncode == 0, output(result)
    changed = {host: counts["changed"] for host, counts in recap(result).items() if counts["changed"]}
    assert changed == {}, f"a rerun changed something: {changed}\n{output(result)}"


def test_a_password_rotation_after_the_failover_sets_it_on_the_new_primary(ha: HaEnv):
    """db1, the first db host, is a replica now: rotate_secrets.yml sets the new password on the
    primary Patroni elected, on that server's own port. No service runs here: `--skip-tags
    deliver`; the rotation's own check logs in through the router (secrets_database_host/port:
    the router's port differs from the servers' here) with the new password and is refused with
    the old one."""
    before = ha.vault_values()["vault_database_passwords"]["auth-service"]
    result = ha.play(
        "playbooks/rotate_secrets.yml", args=("--skip-tags", "deliver"), kind="database_password",
        service="auth-service", secrets_database_port=ROUTER_PG_PORT,
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    after = ha.vault_values()["vault_database_passwords"]["auth-service"]
    assert after != before
    assert Database(after, user="auth").sql("select pg_is_in_recovery()").stdout.strip() == "f"
    assert Database(before, user="auth").sql("select 1").returncode != 0


def test_a_redis_password_rotation_after_the_failover_sets_it_on_the_new_master(ha: HaEnv):
    """Sentinel promoted db2 or db3, db1 came back as a replica: rotate_secrets.yml asks the
    Sentinels for the master and sets the new password there (ACL changes are not replicated)
    and on the replicas. The service user logs in through the router with the new password, the
    old one is refused there and on every Redis host, and the new one works on each of them."""
    master = redis_master(ha.secrets["redis_sentinel_password"])
    assert master in (2, 3), master
    before = ha.vault_values()["vault_redis_passwords"]["auth-service"]
    result = ha.play(
        "playbooks/rotate_secrets.yml", args=("--skip-tags", "deliver"), kind="redis_password", service="auth-service"
    )
    assert result.returncode == 0, output(result)
    after = ha.vault_values()["vault_redis_passwords"]["auth-service"]
    assert after != before
    assert redis(ha.redis_user, after, "SET", "auth_service:rotated", "1") == "OK"
    assert redis(ha.redis_user, before, "PING") != "PONG"
    for n in (1, 2, 3):
        port = ports(n)["redis_port"]
        assert redis(ha.redis_user, after, "PING", port=port) == "PONG", n
        assert redis(ha.redis_user, before, "PING", port=port) != "PONG", n
    ha.redis_password = after


def test_a_backup_taken_after_the_failover_restores(ha: HaEnv):
    """The new primary archives (a full backup waits for its WAL), the files come from a standby,
    the row-count manifest reads through the router's read-only address (the failover's table
    too: the owner role made it in public), and the restore drill restores that backup on the
    scratch host, to the moment of the manifest, and checks its row counts."""
    backup = ha.play("playbooks/backup.yml", type="full", backup_reason="after-failover")
    latest = stanza()["backup"][-1]
    counted = manifest(latest["label"])
    assert backup.returncode == 0, output(backup)
    assert counted.get("schemas", {}).get("public", 0) >= 20, counted
    # Recovery to the manifest's moment stops at the first commit after it: a live database
    # makes one; here the test writes it and waits until its WAL is archived (archive_timeout).
    wrote = Database(ha.owner_password).sql(
        "insert into ha_failover (id) values (1000000) returning pg_walfile_name(pg_current_wal_lsn())"
    )
    assert wrote.returncode == 0, wrote.stderr
    segment = wrote.stdout.split()[0]
    archived = wait_for(lambda: stanza()["archive"][-1].get("max", "") >= segment, 180, 5)
    assert archived, (segment, stanza()["archive"])
    drill = ha.play("playbooks/restore_drill.yml")
    assert drill.returncode == 0, f"manifest of {latest['label']}: {counted}\n{output(drill)}"


def test_planned_switchover_loses_no_acknowledged_write(ha: HaEnv):
    before = leader()
    candidate = wait_for(lambda: named("sync_standby"), 30)
    assert candidate, members()
    db = Database(ha.owner_password)
    with Writer(db, "ha_switchover") as writer:
        assert wait_for(lambda: len(writer.acknowledged) >= 20, 30)
        started = time.monotonic()
        result = ha.play("playbooks/switchover.yml", candidate=candidate)
        assert result.returncode == 0, output(result)
        done = time.monotonic()
        assert wait_for(lambda: writer.acknowledged_since(done), 60, 0.2)
        took = time.monotonic() - started
    assert leader() == candidate != before
    assert writer.missing() == [], "acknowledged rows lost"
    assert f"switchover: {before} -> {candidate}" in result.stdout
    print(f"switchover {before} -> {candidate}: playbook and first write after it {took:.1f} s, "
          f"longest write gap {writer.longest_gap:.1f} s")  # fmt: skip


def test_switchover_refuses_a_candidate_that_is_not_a_healthy_replica(ha: HaEnv):
    current = leader()
    result = ha.play("playbooks/switchover.yml", candidate=current)
    assert result.returncode != 0
    assert any(m.startswith("candidate: expected a running replica") for m in failure_messages(result)), output(result)
    assert leader() == current
