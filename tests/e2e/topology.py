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
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.helpers import REPO, Kube, recap, toolchain_env

# SSH and server ports per environment; none is used by Molecule (55432-58441), the local
# inventory (5432, 6379, 5433, 52201-52202, 58440-58441) or another e2e module.
PORT_BASES = {"staging": 52300, "production": 52400}
# Offsets within an environment's hundred: +host index for each kind of port on every host,
# then one port each for the monitoring host's servers (their clients read one value).
SSH, POSTGRESQL, REDIS, PGBACKREST_TLS, SCRATCH = 0, 10, 20, 30, 40
NODE_EXPORTER, POSTGRES_EXPORTER, REDIS_EXPORTER = 50, 60, 70
PROMETHEUS, ALERTMANAGER, HOST_LOGS_COLLECTOR = 90, 91, 92
# A cold site.yml on five hosts took 30 minutes on this 2-core machine under load: a run stopped
# earlier tells nothing (its output is kept under logs/ either way).
PLAYBOOK_TIMEOUT = 3600
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

    def __post_init__(self) -> None:
        self.inventory = self.root / "inventories" / self.env
        shutil.copytree(
            REPO / "inventories" / self.env, self.inventory, ignore=shutil.ignore_patterns("credentials", "vault.yml")
        )
        self.overlay = self.root / "overlay"
        self.ssh_dir = self.root / "ssh"
        self.key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self.hosts = inventory_hosts(self.inventory / "hosts.yml")
        base = PORT_BASES[self.env]
        self.ports = {
            host: {
                "ansible_port": base + SSH + i,
                "postgresql_port": base + POSTGRESQL + i,
                # roles/pgbackrest reads the db hosts' ports through this name (default: postgresql_port).
                "pgbackrest_pg_port": base + POSTGRESQL + i,
                "redis_port": base + REDIS + i,
                "pgbackrest_tls_server_port": base + PGBACKREST_TLS + i,
                "pgbackrest_scratch_port": base + SCRATCH + i,
                "node_exporter_port": base + NODE_EXPORTER + i,
                "postgres_exporter_port": base + POSTGRES_EXPORTER + i,
                "redis_exporter_port": base + REDIS_EXPORTER + i,
            }
            for i, host in enumerate(self.hosts, start=1)
        }
        self.monitoring_ports = {
            "prometheus_port": base + PROMETHEUS,
            "alertmanager_port": base + ALERTMANAGER,
            "host_logs_collector_port": base + HOST_LOGS_COLLECTOR,
        }
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
        cluster = {
            "k8s_cluster_provider": "existing",
            "k8s_cluster_kubeconfig": str(self.kube.kubeconfig),
            "k8s_cluster_context": self.kube.context,
            # The hosts' addresses moved to loopback, and with them the network they are in.
            "openpolicy_data_networks": ["127.0.0.1/32"],
        }
        (target / "group_vars" / "all" / "cluster.yml").write_text(yaml.safe_dump(cluster))
        (target / "group_vars" / "all" / "monitoring.yml").write_text(yaml.safe_dump(self.monitoring_ports))
        # Until the shared platform-inputs layer (issue 10) gives every environment the catalog's
        # schemas, roles and users, take the local inventory's derivations of them, if it has any.
        derived = {}
        for name in ("postgresql.yml", "redis.yml"):
            local = yaml.safe_load((REPO / "inventories/local/group_vars/all" / name).read_text()) or {}
            for key in ("openpolicy_catalog_services", "postgresql_service_schemas", "postgresql_role_passwords"):
                if key in local:
                    derived[key] = local[key]
            for key in ("redis_users", "redis_user_passwords"):
                if key in local:
                    derived[key] = local[key]
        if "postgresql_service_schemas" in derived:
            derived.setdefault("postgresql_connection_limits", {"etl": 40, "scraper": 40})
        inputs = target / "group_vars" / "all" / "platform_inputs.yml"
        inputs.write_text(yaml.safe_dump(derived, sort_keys=False) if derived else "---\n")
        return target

    # --- runs ---------------------------------------------------------------------------------

    def playbook(
        self,
        playbook: str,
        *args: str,
        extra_vars: dict | None = None,
        inventory: Path | None = None,
        overlay: Path | None = None,
    ) -> subprocess.CompletedProcess:
        path = playbook if "/" in playbook else f"playbooks/{playbook}"
        sources = ["-i", str(inventory or self.inventory), "-i", str(overlay or self.overlay)]
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
        log = self.root / "logs" / f"{len(self.runs):02d}-{Path(path).stem}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{result.stdout}\n--- stderr\n{result.stderr}")
        print(f"{' '.join(cmd[:6])}: exit {result.returncode}, output in {log}")
        return result

    def start_hosts(self) -> subprocess.CompletedProcess:
        """Make the podman hosts with the toolkit's own role, as `make up` makes the local ones."""
        return self.playbook("tests/e2e/topology_hosts.yml", extra_vars=self.hosts_vars("present"))

    def stop_hosts(self) -> subprocess.CompletedProcess:
        return self.playbook("tests/e2e/topology_hosts.yml", extra_vars=self.hosts_vars("absent"))

    def hosts_vars(self, state: str) -> dict:
        return {
            "podman_hosts_state": state,
            "podman_hosts_groups": ["ssh_hosts"],
            "podman_hosts_environment": f"e2e-{self.env}",
            "podman_hosts_ssh_key": str(self.key),
            "podman_hosts_known_hosts": str(self.known_hosts),
            # Every host from the db image: PostgreSQL, pgBackRest and Redis already installed.
            "podman_host_flavor": "db",
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

    def changed(self, result: subprocess.CompletedProcess) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in recap(result).items()}


@contextlib.contextmanager
def running(env: str, kube: Kube, root: Path) -> Iterator[Topology]:
    """The topology of an environment: vault seeded, cluster prepared, hosts up; removed after."""
    topology = Topology(env, root, kube)
    seed_vault(topology.inventory)
    topology.prepare_cluster()
    started = topology.start_hosts()
    assert started.returncode == 0, started.stdout[-4000:]
    try:
        yield topology
    finally:
        topology.remove_releases()
        topology.stop_hosts()


def seed_vault(inventory: Path) -> None:
    """The environment's vault before its first run (see seed_vault_file)."""
    seed_vault_file(inventory / "group_vars" / "all" / "vault.yml")


def seed_vault_file(vault: Path) -> None:
    """A vault before its first run, encrypted with the tests' password: what a provider issues
    (SMTP password, Slack webhook), as an operator adds it with ansible-vault. Stand-ins, named
    as such: nothing here sends mail or posts to Slack."""
    token = secrets.token_urlsafe(24)
    values = {
        "vault_smtp_password": f"Stand-in-smtp-{token}-1!",
        "vault_slack_webhook_url": f"https://hooks.slack.example/services/T0STANDIN/B0STANDIN/{token}",
        # PagerDuty's Events API v2 routing key: 32 characters.
        "vault_pagerduty_routing_key": secrets.token_hex(16),
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


__all__ = ["Topology", "inventory_hosts", "monitoring_crds", "running", "seed_vault", "seed_vault_file"]
