"""A production-shaped topology on this machine, for an environment's real inventory.

One podman host per inventory host (roles/podman_hosts: systemd as PID 1, sshd on a loopback
port of its own, `deploy` with NOPASSWD sudo, root login and passwords refused, a key and a
known_hosts made for the run, host key checking on). The environment's inventory is copied
as it is (so generated credentials land beside the copy, not in the checkout) and a small
overlay inventory, given as a second `-i`, changes only how each host is reached (address,
SSH port, user, key) and the ports of its servers (the hosts share this machine's loopback),
and points provider `existing` at the tests' kwok cluster.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.helpers import REPO, Kube, recap, toolchain_env

# SSH and server ports per environment, two hundred each; none is used by Molecule
# (55432-58441), the local inventory (5432, 6379, 5433, 52201-52232) or
# another e2e module.
PORT_BASES = {"staging": 53000, "production": 53200}
# Offsets within an environment's range: +host index (1-9) for each kind of port on every host,
# named by the variable the roles read.
HOST_PORTS = {
    "ansible_port": 0,
    "postgresql_port": 10,
    # roles/pgbackrest reads the db hosts' ports through this name (default: postgresql_port).
    "pgbackrest_pg_port": 10,
    "redis_port": 20,
    "pgbackrest_tls_server_port": 30,
    "pgbackrest_scratch_port": 40,
    "node_exporter_port": 50,
    "postgres_exporter_port": 60,
    "redis_exporter_port": 70,
    # The HA pieces on the db (and etcd) hosts: Patroni's REST API, etcd, Redis Sentinel.
    "patroni_restapi_port": 80,
    "etcd_cluster_client_port": 90,
    "etcd_cluster_peer_port": 100,
    "redis_sentinel_port": 110,
    # etcd's plain-HTTP metrics port (Prometheus' `etcd` job).
    "etcd_cluster_metrics_port": 120,
}
# One port each for the servers that every client reaches by one value: the router's (read-write,
# read-only, Redis master) and the monitoring host's.
SHARED_PORTS = {
    # The inventory's names for the router's ports: the shared layer (playbooks/group_vars/all/ha.yml)
    # derives the roles' postgresql_router_port and the others from them, over any inventory value.
    "openpolicy_db_router_port": 180,
    "openpolicy_db_router_replica_port": 181,
    "openpolicy_db_router_redis_port": 182,
    # HAProxy's own Prometheus exporter on the router host.
    "postgresql_router_metrics_port": 183,
    "prometheus_port": 190,
    "alertmanager_port": 191,
    "host_logs_collector_port": 192,
}
# The flavor of each host's image (scripts/openpolicy_tools/podman.py): the ha image (PostgreSQL,
# pgBackRest, Redis, Patroni, Sentinel, HAProxy and the agents installed, as on a db host's
# image) for every host but the monitoring host, which starts from an image with the monitoring
# packages in it, like a cloud image would. The roles install the same packages (a no-op then).
HOST_FLAVOR = "ha"
GROUP_FLAVORS = {"monitoring": "monitoring"}
# A cold site.yml on seven hosts takes half an hour and more on this 2-core machine under load:
# a run stopped earlier tells nothing (its output is kept under logs/ either way).
PLAYBOOK_TIMEOUT = 3600
# Keep a topology up after the module, or take one a run kept (see running()).
KEEP = "OPENPOLICY_E2E_ENV_KEEP"
REUSE = "OPENPOLICY_E2E_ENV_REUSE"
# Minimal CustomResourceDefinitions of the Prometheus operator's kinds: the environments
# deploy a ServiceMonitor and a PrometheusRule per service (service_releases_monitoring).
MONITORING_CRDS = ("servicemonitors", "ServiceMonitor"), ("prometheusrules", "PrometheusRule")


def inventory_hosts(hosts_file: Path) -> list[str]:
    """Every host of an inventory's hosts.yml but the control host, in file order."""

    def walk(group: dict) -> list[str]:
        names = list((group.get("hosts") or {}).keys())
        for child in (group.get("children") or {}).values():
            names += walk(child or {})
        return names

    data = yaml.safe_load(hosts_file.read_text())
    seen: list[str] = []
    for name in walk(data["all"]):
        if name != "localhost" and name not in seen:
            seen.append(name)
    return seen


def monitoring_crds() -> list[dict]:
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"plural": plural, "kind": kind, "singular": kind.lower(), "listKind": f"{kind}List"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                ],
            },
        }
        for plural, kind in MONITORING_CRDS
    ]


@dataclass
class Topology:
    """An environment's inventory copy, its overlay and its podman hosts."""

    env: str
    root: Path
    kube: Kube
    runs: list[subprocess.CompletedProcess] = field(default_factory=list)
    # False: the inventory copy (and its generated credentials) of an earlier run, under root.
    create: bool = True

    def __post_init__(self) -> None:
        self.inventory = self.root / "inventories" / self.env
        if self.create:
            shutil.copytree(
                REPO / "inventories" / self.env,
                self.inventory,
                ignore=shutil.ignore_patterns("credentials", "vault.yml"),
            )
        self.overlay = self.root / "overlay"
        # Numbers the runs' logs, after those of an earlier run (next() is safe across threads).
        self.log_numbers = itertools.count(len(list((self.root / "logs").glob("*.log"))) + 1)
        self.ssh_dir = self.root / "ssh"
        self.key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self.hosts = inventory_hosts(self.inventory / "hosts.yml")
        base = PORT_BASES[self.env]
        assert len(self.hosts) < 10, f"{self.env}: one port of each kind per host, nine hosts at most"
        self.ports = {
            host: {name: base + offset + i for name, offset in HOST_PORTS.items()}
            for i, host in enumerate(self.hosts, start=1)
        }
        self.shared_ports = {name: base + offset for name, offset in SHARED_PORTS.items()}
        self.write_overlay(self.overlay)

    # --- the overlay inventory --------------------------------------------------------------

    def host_vars(self, host: str) -> dict:
        return {
            "ansible_host": "127.0.0.1",
            "ansible_user": "deploy",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_host_key_checking": True,
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
            **self.ports[host],
        }

    def write_overlay(self, target: Path, **host_changes: dict) -> Path:
        """Write an overlay inventory to `target`; host_changes replaces some of a host's variables."""
        hosts = {host: {**self.host_vars(host), **host_changes.get(host, {})} for host in self.hosts}
        (target / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
        (target / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
        router = {
            # The services, the secrets role's logins and the backups' row counts reach the
            # databases through the router, on this machine's loopback like every host.
            "openpolicy_db_router_address": "127.0.0.1",
            "service_releases_database_host": "127.0.0.1",
            "service_releases_redis_host": "127.0.0.1",
            "service_releases_database_cidrs": ["127.0.0.1/32"],
            "service_releases_redis_cidrs": ["127.0.0.1/32"],
            # The inventory gives the router the servers' own ports (each host has its own
            # address there); here the router shares the loopback with the db hosts.
            "secrets_database_port": self.shared_ports["openpolicy_db_router_port"],
            "secrets_redis_port": self.shared_ports["openpolicy_db_router_redis_port"],
        }
        limits = {
            # What these podman hosts cannot do (not how a real host differs): create the mount
            # namespace of Debian's haproxy and systemd-journal-upload units (status 226/NAMESPACE:
            # the uploader failed on every host and each run started it again), or open more
            # than 1024 files (HAProxy needs about 2 per connection).
            "postgresql_router_unit_sandboxing": False,
            "host_logs_unit_sandboxing": False,
            "postgresql_router_maxconn": 150,
        }
        topology = {
            "k8s_cluster_provider": "existing",
            "k8s_cluster_kubeconfig": str(self.kube.kubeconfig),
            "k8s_cluster_context": self.kube.context,
            # The hosts' addresses moved to loopback, and with them the network they are in.
            "openpolicy_data_networks": ["127.0.0.1/32"],
            **router,
            **self.shared_ports,
            **limits,
        }
        (target / "group_vars" / "all" / "topology.yml").write_text(yaml.safe_dump(topology, sort_keys=False))
        return target

    # --- runs ---------------------------------------------------------------------------------

    def playbook(
        self,
        playbook: str,
        *args: str,
        extra_vars: dict | None = None,
        inventory: Path | None = None,
        overlay: Path | None = None,
        more_sources: tuple[Path, ...] = (),
    ) -> subprocess.CompletedProcess:
        path = playbook if "/" in playbook else f"playbooks/{playbook}"
        sources = ["-i", str(inventory or self.inventory), "-i", str(overlay or self.overlay)]
        for source in more_sources:
            sources += ["-i", str(source)]
        cmd = ["ansible-playbook", *sources, path, *args]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        try:
            result = subprocess.run(
                cmd,
                cwd=REPO,
                env=toolchain_env(),
                text=True,
                capture_output=True,
                check=False,
                timeout=PLAYBOOK_TIMEOUT,
            )
        except subprocess.TimeoutExpired as expired:
            # Keep what the run printed, so that the failure names the task it was at.
            out, err = (
                o.decode(errors="replace") if isinstance(o, bytes) else o or ""
                for o in (expired.stdout, expired.stderr)
            )
            result = subprocess.CompletedProcess(cmd, -9, f"{out}\n(timed out after {expired.timeout} s)", err)
        self.runs.append(result)
        # Each run's output beside the topology, for a failure's or a slow run's whole story.
        log = self.root / "logs" / f"{next(self.log_numbers):02d}-{Path(path).stem}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{result.stdout}\n--- stderr\n{result.stderr}")
        print(f"{' '.join(cmd[:6])}: exit {result.returncode}, output in {log}")
        return result

    def start_hosts(self) -> subprocess.CompletedProcess:
        """Make the podman hosts with the toolkit's own role, as `make up` makes the local ones."""
        return self.hosts_playbook("present")

    def stop_hosts(self) -> subprocess.CompletedProcess:
        return self.hosts_playbook("absent")

    def hosts_playbook(self, state: str) -> subprocess.CompletedProcess:
        # The image flavors only for the runs that make the hosts: a host naming a flavor is
        # one this machine creates, and the preflight of site.yml would not log in to it.
        flavors = self.root / "flavors.yml"
        hosts = {host: {"podman_host_flavor": flavor} for group, flavor in GROUP_FLAVORS.items()
                 for host in self.group(group)}  # fmt: skip
        flavors.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
        return self.playbook("tests/e2e/topology_hosts.yml", extra_vars=self.hosts_vars(state), more_sources=(flavors,))

    def hosts_vars(self, state: str) -> dict:
        return {
            "podman_hosts_state": state,
            "podman_hosts_groups": ["ssh_hosts"],
            "podman_hosts_environment": f"e2e-{self.env}",
            "podman_hosts_ssh_key": str(self.key),
            "podman_hosts_known_hosts": str(self.known_hosts),
            "podman_hosts_default_flavor": HOST_FLAVOR,
        }

    def remove_releases(self) -> None:
        """Uninstall what site.yml deployed (the namespace and the baseline release)."""
        namespace = f"openpolicy-{self.env}"
        baseline = f"openpolicy-platform-{self.env}"
        subprocess.run(
            ["helm", "--kubeconfig", str(self.kube.kubeconfig), "--kube-context", self.kube.context, "uninstall",
             baseline, "-n", "openpolicy-system", "--wait", "--timeout", "60s"],
            env=toolchain_env(), capture_output=True, check=False,
        )  # fmt: skip
        self.kube.run("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)

    def prepare_cluster(self) -> None:
        self.kube.apply(monitoring_crds())
        for plural, _ in MONITORING_CRDS:
            self.kube.run("wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com", "--timeout=60s")

    # --- looking at the hosts -------------------------------------------------------------------

    def ssh(self, host: str, command: str, check: bool = True, user: str = "deploy") -> subprocess.CompletedProcess:
        """Run a command on a host over SSH, as an operator would (the run's key and known_hosts)."""
        cmd = [
            "ssh",
            "-i",
            str(self.key),
            "-p",
            str(self.ports[host]["ansible_port"]),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            f"{user}@127.0.0.1",
            command,
        ]
        result = subprocess.run(cmd, text=True, capture_output=True, timeout=300, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{command} on {host}: rc {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def sql(self, host: str, query: str, database: str = "postgres") -> str:
        port = self.ports[host]["postgresql_port"]
        quoted = query.replace("'", "'\"'\"'")
        command = f"sudo -u postgres psql -X -At -p {port} -d {database} -c '{quoted}'"
        return self.ssh(host, command).stdout.strip()

    def group(self, name: str) -> list[str]:
        data = yaml.safe_load((self.inventory / "hosts.yml").read_text())

        def find(group: dict) -> list[str] | None:
            for child_name, child in (group.get("children") or {}).items():
                if child_name == name:
                    return list(((child or {}).get("hosts") or {}).keys())
                found = find(child or {})
                if found is not None:
                    return found
            return None

        return find(data["all"]) or []

    def record(self, **figures: float | int) -> None:
        """Keep figures of this topology's runs in its timings.json (bench_environments.py --reuse)."""
        path = self.root / "timings.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**known, **figures}, indent=2, sort_keys=True) + "\n")

    def changed(self, result: subprocess.CompletedProcess) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in recap(result).items()}


@contextlib.contextmanager
def running(env: str, kube: Kube, root: Path) -> Iterator[Topology]:
    """The topology of an environment: vault seeded, cluster prepared, hosts up; removed after.

    With OPENPOLICY_E2E_ENV_KEEP=FILE the topology is made in FILE.d and left up (hosts,
    inventory copy, credentials), and FILE names that folder; OPENPOLICY_E2E_ENV_REUSE=FILE
    takes such a topology instead of making one (bench/bench_environments.py measures on it, and
    a case runs again on it with -k), and leaves it up too."""
    reuse, keep = os.environ.get(REUSE), os.environ.get(KEEP)
    if reuse:
        topology = Topology(env, Path(Path(reuse).read_text().strip()), kube, create=False)
    else:
        if keep:
            # Beside the KEEP file, not under pytest's folders (a later session removes those).
            root = Path(keep + ".d")
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(mode=0o700, parents=True)
        topology = Topology(env, root, kube)
        seed_vault(topology.inventory)
    topology.prepare_cluster()
    if not reuse:
        began = time.monotonic()
        started = topology.start_hosts()
        assert started.returncode == 0, started.stdout[-4000:]
        topology.record(hosts=len(topology.hosts), hosts_start_s=round(time.monotonic() - began, 1))
    try:
        yield topology
    finally:
        topology.remove_releases()
        if keep and not reuse:
            Path(keep).write_text(f"{topology.root}\n")
        elif not reuse:
            topology.stop_hosts()


def seed_vault(inventory: Path) -> None:
    """The environment's vault before its first run (see seed_vault_file)."""
    seed_vault_file(inventory / "group_vars" / "all" / "vault.yml")


def seed_vault_file(vault: Path) -> None:
    """A vault before its first run, encrypted with the tests' password: what a provider issues
    (SMTP password, Slack and other webhooks), as an operator adds it with ansible-vault. Stand-ins, named
    as such: nothing here sends mail or posts to Slack."""
    token = secrets.token_urlsafe(24)
    values = {
        "vault_smtp_password": f"Stand-in-smtp-{token}-1!",
        "vault_slack_webhook_url": f"https://hooks.slack.example/services/T0STANDIN/B0STANDIN/{token}",
        # PagerDuty's Events API v2 routing key: 32 characters.
        "vault_pagerduty_routing_key": secrets.token_hex(16),
        # dev's webhook receiver (an address of the operator's own).
        "vault_alertmanager_webhook_url": f"https://alerts.example/openpolicy-dev/{token}",
    }
    vault.write_text(yaml.safe_dump(values))
    encrypted = subprocess.run(
        ["ansible-vault", "encrypt", "--encrypt-vault-id", "tests", str(vault)],
        env=toolchain_env(),
        text=True,
        capture_output=True,
        check=False,
    )
    assert encrypted.returncode == 0, encrypted.stderr


# --- bad staging inventories ---------------------------------------------------------------------
# Changes of inventories/staging/hosts.yml that the preflight refuses on the control host, before
# any host is contacted, each in one line naming the setting: tests/unit/test_environment_inventories.py
# runs them without hosts (the preflight on the control host only: nothing can change), so
# tests/e2e/test_staging.py runs on its fresh hosts only the case that needs them (an unreachable host).
STAGING_DB_HOSTS = [f"openpolicy-staging-db{n}" for n in (1, 2, 3)]


def ssh_group(hosts: dict, group: str) -> dict:
    return hosts["all"]["children"]["ssh_hosts"]["children"][group]


def keep_group_hosts(group: str, keep: int) -> Callable[[dict], None]:
    """Leave only the first `keep` hosts in a group of hosts.yml."""

    def change(hosts: dict) -> None:
        members = ssh_group(hosts, group)
        members["hosts"] = dict(list(members["hosts"].items())[:keep])

    return change


def set_host_var(group: str, host: str, name: str, value) -> Callable[[dict], None]:
    def change(hosts: dict) -> None:
        ssh_group(hosts, group)["hosts"][host][name] = value

    return change


def set_control_var(name: str, value) -> Callable[[dict], None]:
    """A variable of the control host, where the preflight checks the topology."""

    def change(hosts: dict) -> None:
        hosts["all"]["children"]["control"]["hosts"]["localhost"][name] = value

    return change


def chain(*changes: Callable[[dict], None]) -> Callable[[dict], None]:
    def change(hosts: dict) -> None:
        for one in changes:
            one(hosts)

    return change


# case: (change of hosts.yml, what the one line names)
BAD_STAGING_INVENTORIES: dict[str, tuple[Callable[[dict], None], str]] = {
    "no repository host": (keep_group_hosts("backup", 0), "pgbackrest_repo_group"),
    # Under Patroni no host is configured as a replica of another: Patroni chooses the primary.
    "a replica named under Patroni": (
        set_host_var("db", STAGING_DB_HOSTS[1], "postgresql_replica_of", STAGING_DB_HOSTS[0]),
        f"postgresql_replica_of of {STAGING_DB_HOSTS[1]}: expected empty with postgresql_ha: patroni",
    ),
    "an even number of etcd members": (keep_group_hosts("etcd", 2), "expected an odd number of"),
    "pg_hba networks leave out the cluster's nodes": (
        set_host_var("db", STAGING_DB_HOSTS[0], "postgresql_hba_networks", ["10.30.8.0/21"]),
        f"postgresql_hba_networks of {STAGING_DB_HOSTS[0]}",
    ),
    "empty host group": (keep_group_hosts("db", 0), "postgresql_hosts_group"),
    # Under Patroni the services reach the primary through the router host only.
    "no router host under Patroni": (keep_group_hosts("db_router", 0), "postgresql_router_hosts_group"),
    # Patroni needs a replica to fail over to, and a synchronous mode the replicas to confirm.
    "patroni with one db host": (
        keep_group_hosts("db", 1),
        "postgresql_ha: patroni needs at least two hosts in group db",
    ),
    "a synchronous mode without the replicas it names": (
        chain(keep_group_hosts("db", 2), set_control_var("patroni_synchronous_node_count", 2)),
        "patroni_synchronous_mode: a synchronous mode with patroni_synchronous_node_count 2 needs",
    ),
}


__all__ = [
    "BAD_STAGING_INVENTORIES",
    "KEEP",
    "REUSE",
    "Topology",
    "inventory_hosts",
    "monitoring_crds",
    "running",
    "seed_vault",
    "seed_vault_file",
]
