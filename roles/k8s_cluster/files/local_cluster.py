#!/usr/bin/env python3
"""Run the local Kubernetes cluster: a real control plane with nodes simulated by kwok.

The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), the kwok
controller and metrics-server are the binaries `make bootstrap` built from the Go module
proxy; kwokctl starts them as local processes bound to 127.0.0.1. Nodes are plain Node
objects that kwok keeps Ready. Pods are marked Running/Ready and Job pods Succeeded by kwok
stages, with two project stages that simulate failures:

    openpolicy.dev/simulate=crashloop  the pod runs but never becomes Ready
    openpolicy.dev/simulate=fail       a Job's pod ends Failed

Usage (VERSIONS: the versions.toml whose pins name the built binaries in the cache):
    local_cluster.py up     --versions VERSIONS --name NAME --workdir DIR --kubeconfig FILE [--nodes N] [--json]
    local_cluster.py down   --versions VERSIONS --name NAME --workdir DIR --kubeconfig FILE [--json]
    local_cluster.py status --versions VERSIONS --workdir DIR [--name NAME] [--kubeconfig FILE]

Shipped in roles/k8s_cluster/files (the role runs it on the control host); scripts/local_cluster.py
is the thin CLI of `make status`. Only the standard library, and PyYAML where it reads YAML (the
bootstrap's virtualenv has it): it runs under any Python 3.11.

`up` and `down` are idempotent and say (with --json, as one JSON line) whether they
changed anything, which is what the k8s_cluster role reports to Ansible.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

STAGES_DIR = Path(__file__).resolve().parent / "kwok-stages"
# The cache `make bootstrap` builds into, one folder per tool and pinned version.
CACHE_ROOT = Path(os.environ.get("OPENPOLICY_CACHE", Path.home() / ".cache" / "openpolicy-deploy"))
# Cache folder name -> the key of versions.toml's [go] table.
GO_TOOL_KEYS = {"kubernetes": "kubernetes", "etcd": "etcd", "kwok": "kwok", "metrics-server": "metrics_server"}
NODE_LABEL = "openpolicy.dev/simulated-node"
SIMULATE_LABEL = "openpolicy.dev/simulate"
# One line per node: its name and the status of its Ready condition.
NODE_READINESS = (
    "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}"
)
MAX_NODES = 1000
# The simulated nodes, as the API server lists them (what NODE_READINESS reads through kubectl).
NODES_PATH = "/api/v1/nodes?labelSelector=" + urllib.parse.quote(NODE_LABEL)
# kwok simulates the pods of a node only while it holds the node's Lease (kube-node-lease).
# kwokctl's own 200 s lease meant that a restarted kwok controller (a new holder) waited up to
# 200 s for the stopped one's leases to expire, trying again every 50 s: every pod stayed
# Pending meanwhile, and a deploy right after `make up` on a stopped cluster failed its
# migration hooks at Helm's timeout. At 40 s (a kubelet's) it tries every 10 s. The
# controller-manager's grace before it marks a node NotReady stays kwokctl's 200 s, so a
# busy machine that delays a renewal does not lose its nodes.
NODE_LEASE_SECONDS = 40
# One line per Lease of kube-node-lease: its name and when its holder last renewed it.
LEASE_RENEWALS = "jsonpath={range .items[*]}{.metadata.name} {.spec.renewTime}{'\\n'}{end}"
NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
# The default kwok stages this cluster uses (from the kwok module, copied by the bootstrap),
# and the simulation value each must leave to the project's failure stages.
KWOK_STAGES = {
    "node/fast/node-initialize.yaml": None,
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml": None,
    "pod/fast/pod-ready.yaml": "crashloop",
    "pod/fast/pod-complete.yaml": "fail",
    "pod/fast/pod-delete.yaml": None,
}


class ClusterError(Exception):
    """A one-line message for the operator; nothing was started when it is raised by checks."""


@dataclass(frozen=True)
class Toolchain:
    kube_bin: Path
    etcd: Path
    kwok_bin: Path
    metrics_server: Path
    metrics_server_manifests: Path
    kwok_stages: Path
    kube_version: str
    etcd_version: str

    @classmethod
    def from_cache(cls, versions_file: Path | None) -> Toolchain:
        if versions_file is None or not versions_file.is_file():
            raise ClusterError(f"versions: expected the versions.toml of the toolchain, got {versions_file}")
        with versions_file.open("rb") as handle:
            versions = tomllib.load(handle)

        def tool(name: str) -> Path:
            return CACHE_ROOT / f"{name}-{versions['go'][GO_TOOL_KEYS[name]]}"

        kube = tool("kubernetes")
        kwok = tool("kwok")
        metrics = tool("metrics-server")
        chain = cls(
            kube_bin=kube / "bin",
            etcd=tool("etcd") / "bin" / "etcd",
            kwok_bin=kwok / "bin",
            metrics_server=metrics / "bin" / "metrics-server",
            metrics_server_manifests=metrics / "manifests",
            kwok_stages=kwok / "stage",
            kube_version=versions["go"]["kubernetes"],
            etcd_version=versions["go"]["etcd"].lstrip("v"),
        )
        missing = [str(p) for p in chain.required_paths() if not p.exists()]
        if missing:
            raise ClusterError(f"toolchain not built: {', '.join(missing)} missing; run `make bootstrap`")
        return chain

    def required_paths(self) -> list[Path]:
        kube = [self.kube_bin / b for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")]
        return [
            *kube,
            self.etcd,
            self.kwok_bin / "kwok",
            self.kwok_bin / "kwokctl",
            self.metrics_server,
            self.metrics_server_manifests,
            self.kwok_stages,
        ]


# --- input checks (before anything starts) ------------------------------------------------


def parse_node_count(raw: str) -> int:
    """`nodes` must be a whole number from 1 to MAX_NODES."""
    try:
        count = int(str(raw).strip())
    except ValueError:
        raise ClusterError(f"nodes: expected a whole number from 1 to {MAX_NODES}, got {raw!r}") from None
    if not 1 <= count <= MAX_NODES:
        raise ClusterError(f"nodes: expected a whole number from 1 to {MAX_NODES}, got {raw!r}")
    return count


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ClusterError(f"name: expected lowercase letters, digits and '-' (at most 40), got {name!r}")
    return name


# --- manifests ----------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict]:
    import yaml  # the bootstrap's virtualenv has it; imported late so --help works anywhere

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def exclude_simulation(stage: dict, value: str) -> dict:
    """Keep a default kwok stage away from pods whose simulation label asks for `value`."""
    selector = stage["spec"].setdefault("selector", {})
    selector.setdefault("matchExpressions", []).append(
        {"key": f'.metadata.labels["{SIMULATE_LABEL}"]', "operator": "NotIn", "values": [value]}
    )
    return stage


def stages(chain: Toolchain) -> list[dict]:
    result = []
    for relative, simulated in KWOK_STAGES.items():
        for stage in load_yaml_documents(chain.kwok_stages / relative):
            result.append(exclude_simulation(stage, simulated) if simulated else stage)
    for path in sorted(STAGES_DIR.glob("*.yaml")):
        result.extend(load_yaml_documents(path))
    return result


def kwokctl_config(chain: Toolchain) -> list[dict]:
    options = {
        "runtime": "binary",
        "bindAddress": "127.0.0.1",
        "kubeVersion": chain.kube_version,
        "etcdVersion": chain.etcd_version,
        "kubeApiserverBinary": str(chain.kube_bin / "kube-apiserver"),
        "kubeControllerManagerBinary": str(chain.kube_bin / "kube-controller-manager"),
        "kubeSchedulerBinary": str(chain.kube_bin / "kube-scheduler"),
        "kubectlBinary": str(chain.kube_bin / "kubectl"),
        "etcdBinary": str(chain.etcd),
        "kwokControllerBinary": str(chain.kwok_bin / "kwok"),
        "metricsServerBinary": str(chain.metrics_server),
        "metricsServerManifests": [str(chain.metrics_server_manifests)],
        "enable": ["metrics-server"],
        # RBAC on, so that a ServiceAccount without a binding is really denied.
        "kubeAuthorization": True,
        "quietPull": True,
    }
    config = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": options,
        # One controller-manager and one scheduler, so no leader election. With it (the
        # default), a busy machine that delays the lease renewal past its 10-second deadline
        # makes the component exit, and kwokctl's binary runtime does not restart it: Jobs
        # then never complete and new namespaces get no default ServiceAccount.
        "componentsPatches": [
            *(
                {"name": name, "extraArgs": [{"key": "leader-elect", "value": "false"}]}
                for name in ("kube-controller-manager", "kube-scheduler")
            ),
            # kwokctl 0.8 ignores its own nodeLeaseDurationSeconds (the option and the flag):
            # the argument is replaced on the controller's command line instead.
            {
                "name": "kwok-controller",
                "extraArgs": [
                    {"key": "node-lease-duration-seconds", "value": str(NODE_LEASE_SECONDS), "override": True}
                ],
            },
        ],
    }
    return [config, *stages(chain)]


def node_manifest(index: int, name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"{name}-node-{index}",
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                # kwok serves every node's kubelet-style metrics on one port, under a path per
                # node; metrics-server reads the path from this annotation.
                "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{name}-node-{index}/metrics/resource",
            },
            "labels": {
                "kubernetes.io/hostname": f"{name}-node-{index}",
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                NODE_LABEL: "true",
                # Spread nodes over three zones so topology spread constraints have something to do.
                "topology.kubernetes.io/zone": f"zone-{index % 3}",
            },
        },
        # No status: kwok's node-initialize stage fills in capacity, addresses and conditions.
    }


@contextlib.contextmanager
def ports_of_one_cluster_at_a_time():
    """kwokctl picks free ports when it creates a cluster and binds them only as each process
    starts: two clusters created at once on one machine took the same ports (kwok-controller:
    `bind: address already in use`). A machine-wide lock until the cluster is up."""
    with (Path(tempfile.gettempdir()) / "openpolicy-kwokctl-ports.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- processes ----------------------------------------------------------------------------


class Cluster:
    def __init__(self, name: str, workdir: Path, kubeconfig: Path, chain: Toolchain | None = None):
        self.name = check_name(name)
        self.workdir = workdir.resolve()
        self.kubeconfig = kubeconfig.resolve()
        self.chain = chain

    @property
    def context(self) -> str:
        return f"kwok-{self.name}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "KWOK_WORKDIR": str(self.workdir), "KUBECONFIG": str(self.kubeconfig)}

    def kwokctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        binary = str(self.chain.kwok_bin / "kwokctl") if self.chain else shutil.which("kwokctl") or "kwokctl"
        result = subprocess.run(
            [binary, "--name", self.name, *args], env=self.env(), text=True, capture_output=True, check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kwokctl {' '.join(args)} failed: {last_line(result)}")
        return result

    def kubectl_argv(self, *args: str) -> list[str]:
        binary = str(self.chain.kube_bin / "kubectl") if self.chain else shutil.which("kubectl") or "kubectl"
        return [binary, "--kubeconfig", str(self.kubeconfig), "--context", self.context, *args]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self.kubectl_argv(*args),
            input=stdin,
            text=True,
            capture_output=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {last_line(result)}")
        return result

    @property
    def state_dir(self) -> Path:
        """Where kwokctl keeps this cluster: its kwok.yaml, binaries and component logs."""
        return self.workdir / "clusters" / self.name

    def exists(self) -> bool:
        return (self.state_dir / "kwok.yaml").is_file()

    def running(self) -> bool:
        if not self.exists() or not self.kubeconfig.is_file():
            return False
        return self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0

    def plan(self, nodes: int) -> dict:
        """What `up` would do, without doing it (Ansible's check mode)."""
        if not self.running():
            return {
                "changed": True,
                "actions": ["would start the cluster", f"would add {nodes} nodes"],
                "name": self.name,
                "context": self.context,
                "kubeconfig": str(self.kubeconfig),
                "server": None,
                "server_version": None,
                "ready_nodes": 0,
            }
        have = self.ready_nodes()
        actions = [] if have == nodes else [f"would change the node count from {have} to {nodes}"]
        return {"changed": bool(actions), "actions": actions, **self.describe(have)}

    def up(self, nodes: int) -> dict:
        changed = []
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        # A rerun finds the cluster serving: its version and nodes are read on one connection
        # (read_serving). Where that cannot be done, its nodes are read with kubectl, and the two
        # reads describe() makes run beside that read (three kubectl calls in the time of one).
        existing = self.exists() and self.kubeconfig.is_file()
        served = self.read_serving() if existing else None
        describing = self.describe_calls() if existing and served is None else []
        try:
            nodes_ready = readiness(served.nodes) if served else self.node_readiness() if describing else None
        except ClusterError:
            nodes_ready = None
        if nodes_ready is None:
            self.finish_calls(describing)
            describing = []
        if nodes_ready is None and not self.running():
            with ports_of_one_cluster_at_a_time():
                if self.exists():
                    # kwokctl's start leaves running components as they are and does not bring
                    # back one that died alone: a cluster whose API server was killed stayed
                    # down after start's five-minute wait. What still runs is stopped first.
                    self.kwokctl("stop", "cluster", check=False)
                    started_at = time.time()
                    self.kwokctl("start", "cluster", "--wait", "5m")
                    changed.append("started")
                    self.take_over_node_leases(started_at)
                else:
                    config = self.workdir / f"{self.name}.kwokctl.yaml"
                    config.write_text("\n---\n".join(json.dumps(doc) for doc in kwokctl_config(self.chain)) + "\n")
                    self.kwokctl(
                        "create",
                        "cluster",
                        "--config",
                        str(config),
                        "--kubeconfig",
                        str(self.kubeconfig),
                        "--wait",
                        "5m",
                    )
                    changed.append("created")
        if nodes_ready is None:
            nodes_ready = self.node_readiness()
        changed += self.reconcile_nodes(nodes, set(nodes_ready))
        # A rerun with every node in place and Ready asks nothing more of the API server.
        ready = sum(nodes_ready.values())
        if changed or ready < nodes:
            ready = self.wait_nodes_ready(nodes)
        return {
            "changed": bool(changed),
            "actions": changed,
            "seconds": round(time.monotonic() - started, 1),
            **self.describe(ready, describing, served if not changed else None),
        }

    def reconcile_nodes(self, wanted: int, have: set[str]) -> list[str]:
        expected = {f"{self.name}-node-{i}" for i in range(wanted)}
        actions = []
        missing = sorted(expected - have)
        if missing:
            manifests = [node_manifest(int(n.rsplit("-", 1)[1]), self.name) for n in missing]
            self.kubectl(
                "create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
            )
            actions.append(f"added {len(missing)} nodes")
        extra = sorted(have - expected)
        if extra:
            self.kubectl("delete", "node", *extra, "--wait=false")
            actions.append(f"removed {len(extra)} nodes")
        return actions

    def wait_nodes_ready(self, wanted: int, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while True:
            ready = self.ready_nodes()
            if ready >= wanted:
                return ready
            if time.monotonic() > deadline:
                raise ClusterError(f"only {ready} of {wanted} nodes Ready after {timeout:.0f}s")
            time.sleep(1)

    def take_over_node_leases(self, started_at: float, timeout: float = 120) -> None:
        """After a restart, until the new kwok controller holds every node's Lease.

        The leases still name the stopped controller and count as held until they expire; until
        the new one holds a node's lease, that node's pods stay Pending. Those renewed before the
        start are deleted, and the new controller creates its own at its next try.
        """
        renewed = self.lease_renewals()
        stale = sorted(name for name, when in renewed.items() if when < started_at)
        if stale:
            self.kubectl("delete", "lease", "--namespace", "kube-node-lease", "--ignore-not-found", *stale)
        nodes = set(self.node_readiness())
        deadline = time.monotonic() + timeout
        while True:
            renewed = self.lease_renewals()
            waiting = sorted(name for name in nodes if renewed.get(name, 0.0) < started_at)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the kwok controller did not take over the leases of {', '.join(waiting)} within "
                    f"{timeout:.0f}s of the restart: their pods would stay Pending "
                    f"(see {self.state_dir / 'logs' / 'kwok-controller.log'})"
                )
            time.sleep(0.5)

    def lease_renewals(self) -> dict[str, float]:
        """Each node Lease by name, and when it was last renewed (epoch seconds; 0 if never)."""
        out = self.kubectl("get", "leases", "--namespace", "kube-node-lease", "-o", LEASE_RENEWALS).stdout
        renewals = {}
        for line in out.splitlines():
            name, _, when = line.strip().partition(" ")
            if name:
                renewals[name] = datetime.fromisoformat(when).timestamp() if when else 0.0
        return renewals

    def node_readiness(self) -> dict[str, bool]:
        """Each simulated node by name, and whether it is Ready: one request."""
        out = self.kubectl(
            "get",
            "nodes",
            "-l",
            NODE_LABEL,
            "-o",
            NODE_READINESS,
        ).stdout
        return {name: rest == ["True"] for name, *rest in (line.split() for line in out.splitlines() if line.strip())}

    def ready_nodes(self) -> int:
        try:
            return sum(self.node_readiness().values())
        except ClusterError:
            return 0

    def read_serving(self) -> Served | None:
        """The server of the kubeconfig's context, its /version and its simulated nodes, read on
        one connection with the context's client certificate: a rerun's look at a serving cluster
        without the three kubectl processes it took (some 0.15 CPU-s, a tenth of a second of
        every run on two cores). None when the kubeconfig is not one kwokctl writes (certificates
        in files) or the server did not answer 200: the caller then asks kubectl."""
        try:
            import yaml  # the bootstrap's virtualenv has it; without it, kubectl reads the kubeconfig

            config = yaml.safe_load(self.kubeconfig.read_text()) or {}
            context = next(item["context"] for item in config["contexts"] if item["name"] == self.context)
            cluster = next(item["cluster"] for item in config["clusters"] if item["name"] == context["cluster"])
            user = next(item["user"] for item in config["users"] if item["name"] == context["user"])
            server = urllib.parse.urlsplit(cluster["server"])
            tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
            tls.load_cert_chain(user["client-certificate"], user["client-key"])
            connection = http.client.HTTPSConnection(server.hostname, server.port or 443, context=tls, timeout=10)
            try:
                answers = []
                for path in ("/version", NODES_PATH):
                    connection.request("GET", path, headers={"Accept": "application/json"})
                    response = connection.getresponse()
                    body = response.read()
                    if response.status != 200:
                        return None
                    answers.append(json.loads(body))
            finally:
                connection.close()
        except (ImportError, OSError, KeyError, TypeError, ValueError, StopIteration, http.client.HTTPException):
            return None  # ssl.SSLError is an OSError
        version, nodes = answers
        return Served(server=cluster["server"], version=version, nodes=nodes)

    def describe_calls(self) -> list[subprocess.Popen]:
        # Two independent kubectl calls (one reads the kubeconfig, one asks the server) at once.
        return [
            subprocess.Popen(self.kubectl_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for args in (
                ("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"),
                ("version", "-o", "json"),
            )
        ]

    @staticmethod
    def finish_calls(calls: list[subprocess.Popen]) -> list[str]:
        return [call.communicate()[0] for call in calls]

    def describe(
        self, ready: int | None = None, calls: list[subprocess.Popen] | None = None, served: Served | None = None
    ) -> dict:
        """The cluster's name, context, server and version: from what up() read of the serving
        cluster (`served`), else from `calls` (describe_calls()) when they were started already,
        with the cluster serving."""
        if served:
            server, server_version = served.server, served.version.get("gitVersion")
        else:
            server, version = self.finish_calls(calls or self.describe_calls())
            server_version = json.loads(version).get("serverVersion", {}).get("gitVersion") if version else None
        return {
            "name": self.name,
            "context": self.context,
            "kubeconfig": str(self.kubeconfig),
            "server": server.strip(),
            "server_version": server_version,
            "ready_nodes": self.ready_nodes() if ready is None else ready,
        }

    def down(self) -> dict:
        changed = False
        if self.exists():
            self.kwokctl("delete", "cluster", "--kubeconfig", str(self.kubeconfig), check=False)
            changed = True
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
            changed = True
        if self.kubeconfig.exists() and not self.kubeconfig.read_text().strip().count("server:"):
            self.kubeconfig.unlink()
        return {"changed": changed, "name": self.name}


class Served(NamedTuple):
    """What a rerun read of a serving cluster (Cluster.read_serving): its server, /version and
    simulated nodes."""

    server: str
    version: dict
    nodes: dict


def readiness(node_list: dict) -> dict[str, bool]:
    """Each node of a NodeList by name, and whether it is Ready (what node_readiness reads)."""
    return {
        item["metadata"]["name"]: any(
            condition.get("type") == "Ready" and condition.get("status") == "True"
            for condition in (item.get("status") or {}).get("conditions") or []
        )
        for item in node_list.get("items") or []
    }


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="openpolicy-local")
    parser.add_argument("--workdir", type=Path, required=True, help="cluster state (etcd data, certificates, logs)")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig to write (default: WORKDIR/../kubeconfig)")
    parser.add_argument("--nodes", default="3", help=f"simulated nodes, 1 to {MAX_NODES}")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--versions", type=Path, help="versions.toml naming the built tools (their cache folders)")
    args = parser.parse_args(argv)
    kubeconfig = args.kubeconfig or args.workdir.resolve().parent / "kubeconfig"
    try:
        if args.action == "up":
            nodes = parse_node_count(args.nodes)
            cluster = Cluster(args.name, args.workdir, kubeconfig, Toolchain.from_cache(args.versions))
            # Set by the k8s_cluster role in Ansible's check mode: report, start nothing.
            result = cluster.plan(nodes) if os.environ.get("OPENPOLICY_CHECK_MODE") else cluster.up(nodes)
        elif args.action == "down":
            result = Cluster(args.name, args.workdir, kubeconfig, Toolchain.from_cache(args.versions)).down()
        else:
            cluster = Cluster(args.name, args.workdir, kubeconfig, Toolchain.from_cache(args.versions))
            result = cluster.describe() if cluster.running() else {"name": args.name, "running": False}
    except ClusterError as error:
        if args.json:
            print(json.dumps({"failed": True, "msg": str(error)}))
        print(f"local_cluster: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
