#!/usr/bin/env python3
"""Scale figures on a throwaway local cluster (real control plane, kwok nodes), in one run:

- growth with the number of releases: a generated catalog (test data, not the platform's: the
  same small service repeated) of 9 and of 50 services, each deployed by deploy.yml cold and
  no-op, beside the plain sequential `helm upgrade --install --wait` loop over the same
  releases: how both grow from 9 to 50;
- growth with the cluster: the platform's nine with production's sizing (replicas 2, the
  catalog's autoscaling bounds) on 3 nodes, then on 100 nodes, then with five times the
  replicas and bounds on 100 nodes: deploy time and pods Ready;
- the autoscalers of that last release set: simulated CPU load high (kwok's usage annotations,
  read by metrics-server) until every HPA sits at its maximum, then low until every one is back
  at its minimum (scale-down window shortened to SCALE_DOWN_WINDOW s and the rate raised to
  SCALE_DOWN_PODS_PER_MINUTE for the bench; the chart's defaults are 300 s and one pod a minute,
  which would take the gateway 35 minutes from 50 pods to 15).

Prints one line per figure and the ratios, and writes them to bench/results/scale.json.
Not part of `make test` (no timing is asserted). Heavy: run it under the machine's lock.

    python bench/bench_scale.py [--keep] [--parts releases,nodes,hpa]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helm_loop import plain_helm_loop, run, tear_down  # noqa: E402
from bench.results_file import RESULTS, write_results  # noqa: E402
from tests.helpers import recap, run_playbook  # noqa: E402

CLUSTER = "openpolicy-bench-scale"
SCALE_DOWN_WINDOW = 30
SCALE_DOWN_PODS_PER_MINUTE = 100
PLAY_TIMEOUT = 3600
# Helm's wait per release: a rollout of 50 pods while the autoscaler still adds more takes minutes
# on two busy cores.
RELEASE_TIMEOUT = 1200


def generated_catalog(count: int, path: Path) -> list[str]:
    """The platform's catalog with its services replaced by `count` copies of one small service
    (no schema, no Redis, no secrets: what grows is the number of releases, nothing else)."""
    catalog = yaml.safe_load((REPO / "catalog" / "services.yml").read_text())
    names = [f"bench-svc-{n:02d}" for n in range(1, count + 1)]
    catalog["services"] = [
        {
            "name": name,
            "tier": "core",
            "language": "python-fastapi",
            "port": 8000,
            "schema": None,
            "needs": [],
            "calls": [],
            "secrets": [],
            "env": ["SERVICE_PORT", "PORT", "LOG_LEVEL"],
            "migration": False,
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "128Mi"}},
            "autoscaling": None,
        }
        for name in names
    ]
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return names


def test_data_charts(names: list[str], folder: Path) -> Path:
    """A copy of the charts whose service chart accepts the generated names too (its values
    schema lists the catalog's nine, on purpose: a typo fails before Helm renders anything)."""
    shutil.copytree(REPO / "charts", folder)
    schema_file = folder / "openpolicy-service" / "values.schema.json"
    schema = json.loads(schema_file.read_text())
    schema["definitions"]["serviceName"]["enum"] += names
    schema_file.write_text(json.dumps(schema, indent=2))
    return folder


class Bench:
    def __init__(self, state: Path):
        self.state = state
        self.cluster_args = [
            "--name",
            CLUSTER,
            "--workdir",
            str(state / "cluster"),
            "--kubeconfig",
            str(state / "kubeconfig"),
        ]
        self.kube = ["kubectl", "--kubeconfig", str(state / "kubeconfig"), "--context", f"kwok-{CLUSTER}"]
        self.helm = ["helm", "--kubeconfig", str(state / "kubeconfig"), "--kube-context", f"kwok-{CLUSTER}"]
        self.base = {
            "k8s_cluster_name": CLUSTER,
            "k8s_cluster_workdir": str(state / "cluster"),
            "k8s_cluster_kubeconfig": str(state / "kubeconfig"),
            "service_releases_credentials_dir": str(state / "credentials"),
            # The bench's own vault (roles/secrets), encrypted with the tests' throwaway password.
            "secrets_vault_file": str(state / "vault.yml"),
            # No backup host here: bench_restore_point.py measures the restore point.
            "service_releases_restore_point": False,
            "service_releases_timeout": RELEASE_TIMEOUT,
        }

    def cluster(self, nodes: int) -> float:
        started = time.monotonic()
        local_cluster = [sys.executable, str(REPO / "scripts" / "local_cluster.py")]
        run([*local_cluster, "up", *self.cluster_args, "--nodes", str(nodes)])
        # deploy.yml's k8s_cluster brings the cluster to the inventory's node count (3) first:
        # without this, the 100-node runs measured taking 97 nodes away and ran on three.
        self.base["k8s_cluster_nodes"] = nodes
        return time.monotonic() - started

    def deploy(self, namespace: str, **extra) -> tuple[float, int]:
        """deploy.yml into `namespace`: seconds and the run's changed count."""
        started = time.monotonic()
        result = run_playbook(
            "deploy.yml", extra_vars=self.base | {"openpolicy_namespace": namespace} | extra, timeout=PLAY_TIMEOUT
        )
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"deploy.yml into {namespace}: exit {result.returncode}\n{result.stdout[-3000:]}")
        return elapsed, sum(counts["changed"] for counts in recap(result).values())

    def json(self, *args: str) -> dict:
        return json.loads(run([*self.kube, *args, "-o", "json"]))

    def pods_ready(self, namespace: str) -> int:
        def ready(pod: dict) -> bool:
            conditions = pod.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        return sum(ready(p) for p in self.json("get", "pods", "-n", namespace)["items"])

    def wait(self, what: str, done: Callable[[], bool], timeout: float) -> float:
        started = time.monotonic()
        while not done():
            if time.monotonic() - started > timeout:
                raise SystemExit(f"{what}: not after {timeout:.0f} s")
            time.sleep(2)
        return time.monotonic() - started


def releases_growth(bench: Bench, figures: dict) -> None:
    for count in (9, 50):
        names = generated_catalog(count, bench.state / f"catalog{count}.yml")
        namespace = f"openpolicy-bench-r{count}"
        charts = test_data_charts(names, bench.state / f"charts{count}")
        extra = {
            "openpolicy_catalog_file": str(bench.state / f"catalog{count}.yml"),
            "openpolicy_charts_dir": str(charts),
            "service_releases_enabled": names,
            **quota(3),
        }
        cold, _ = bench.deploy(namespace, **extra)
        noop, changed = bench.deploy(namespace, **extra)
        plain = {"source": namespace, "namespace": f"{namespace}-plain", "names": names, "charts": charts}
        loop = plain_helm_loop(bench.kube, bench.helm, bench.state, **plain)
        print(
            f"{count:2d} releases: deploy.yml cold {cold:6.1f} s, plain sequential loop {loop:6.1f} s "
            f"(ratio {cold / loop:.2f}); no-op {noop:6.1f} s (changed={changed})"
        )
        figures[f"releases_{count}"] = {
            "deploy_cold_s": round(cold, 1),
            "deploy_noop_s": round(noop, 1),
            "deploy_noop_changed": changed,
            "helm_loop_sequential_s": round(loop, 1),
            "cold_over_loop": round(cold / loop, 2),
        }
    small, large = figures["releases_9"], figures["releases_50"]
    growth = {
        key: round(large[key] / small[key], 2) for key in ("deploy_cold_s", "deploy_noop_s", "helm_loop_sequential_s")
    }
    figures["releases_growth_9_to_50"] = growth
    print(
        f"9 -> 50 releases: deploy.yml cold x{growth['deploy_cold_s']}, no-op x{growth['deploy_noop_s']}, "
        f"plain loop x{growth['helm_loop_sequential_s']}"
    )


def quota(times: int) -> dict:
    """Production's ResourceQuota (inventories/production) with every amount `times` as large:
    an operator who runs five times the pods, or fifty releases, raises it the same way."""
    platform = yaml.safe_load((REPO / "inventories" / "production" / "group_vars" / "all" / "platform.yml").read_text())
    hard = {}
    for key, amount in platform["platform_baseline_resource_quota"].items():
        number = amount.rstrip("Gi")
        hard[key] = f"{int(number) * times}{amount[len(number) :]}"
    return {"platform_baseline_resource_quota": hard}


def production_sizing(times: int) -> dict:
    """Production's sizing (inventories/production releases.yml: replicas 2, the catalog's
    autoscaling bounds) with replicas and bounds multiplied by `times`."""
    catalog = yaml.safe_load((REPO / "catalog" / "services.yml").read_text())
    settings = {}
    for service in catalog["services"]:
        bounds = (service.get("autoscaling") or {}).get("production")
        entry: dict = {"replicas": 2 * times}
        if bounds:
            entry["autoscaling"] = {"min": bounds["min"] * times, "max": bounds["max"] * times}
        settings[service["name"]] = entry
    return {"service_releases_autoscaling": True, "service_releases_service_settings": settings, **quota(times)}


def usage(cpu: str) -> dict:
    """Values for every service: kwok reports this CPU use for each pod (metrics-server reads it)."""
    catalog = yaml.safe_load((REPO / "catalog" / "services.yml").read_text())
    values = {
        "podAnnotations": {"kwok.x-k8s.io/usage-cpu": cpu, "kwok.x-k8s.io/usage-memory": "1Mi"},
        "autoscaling": {
            "scaleDownStabilizationSeconds": SCALE_DOWN_WINDOW,
            "scaleDownPodsPerMinute": SCALE_DOWN_PODS_PER_MINUTE,
        },
    }
    return {"service_releases_values_overrides": {s["name"]: values for s in catalog["services"]}}


def nodes_and_replicas(bench: Bench, figures: dict) -> None:
    runs = [("3 nodes, 1x", 3, 1, "openpolicy-bench-n3"), ("100 nodes, 1x", 100, 1, "openpolicy-bench-n100")]
    runs.append(("100 nodes, 5x", 100, 5, "openpolicy-bench-n100x5"))
    for label, nodes, times, namespace in runs:
        grown = bench.cluster(nodes)
        cold, _ = bench.deploy(namespace, **production_sizing(times), **usage("10m"))
        ready = bench.pods_ready(namespace)
        grew = f"cluster to {nodes} nodes {grown:.1f} s"
        print(f"{label:14s}: deploy.yml cold {cold:6.1f} s, {ready} pods Ready ({grew})")
        figures[label.replace(" ", "_").replace(",", "")] = {"deploy_cold_s": round(cold, 1), "pods_ready": ready}
    base = figures["3_nodes_1x"]["deploy_cold_s"]
    for key in ("100_nodes_1x", "100_nodes_5x"):
        figures[key]["over_3_nodes_1x"] = round(figures[key]["deploy_cold_s"] / base, 2)
    print(
        f"over 3 nodes 1x: 100 nodes x{figures['100_nodes_1x']['over_3_nodes_1x']}, "
        f"100 nodes with 5x replicas x{figures['100_nodes_5x']['over_3_nodes_1x']}"
    )


def autoscalers(bench: Bench, figures: dict) -> None:
    """On the release set of 100 nodes, 5x (deployed by the nodes part, or here)."""
    namespace = "openpolicy-bench-n100x5"
    bench.cluster(100)

    def hpas() -> list[dict]:
        return bench.json("get", "hpa", "-n", namespace)["items"]

    def at(bound: str) -> bool:
        items = hpas()
        return bool(items) and all(h.get("status", {}).get("currentReplicas") == h["spec"][bound] for h in items)

    sizing = production_sizing(5)
    # Each pod asks for its catalog request; 10x that in use is far past every target.
    bench.deploy(namespace, **sizing, **usage("1000m"))
    up = bench.wait("every HPA at its maximum", lambda: at("maxReplicas"), 1200)
    at_max = bench.pods_ready(namespace)
    bench.deploy(namespace, **sizing, **usage("1m"))
    down = bench.wait("every HPA back at its minimum", lambda: at("minReplicas"), 1200)
    at_min = bench.pods_ready(namespace)
    print(
        f"HPA, load high: every one at its maximum after {up:6.1f} s ({at_max} pods Ready); load low: back at "
        f"its minimum after {down:6.1f} s ({at_min} pods Ready; scale-down window {SCALE_DOWN_WINDOW} s, "
        f"{SCALE_DOWN_PODS_PER_MINUTE} pods a minute)"
    )
    figures |= {
        "to_max_s": round(up, 1),
        "pods_ready_at_max": at_max,
        "to_min_s": round(down, 1),
        "pods_ready_at_min": at_min,
        "scale_down_window_s": SCALE_DOWN_WINDOW,
        "scale_down_pods_per_minute": SCALE_DOWN_PODS_PER_MINUTE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the bench cluster up")
    parser.add_argument("--parts", default="releases,nodes,hpa", help="comma-separated: releases, nodes, hpa")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    state = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    bench = Bench(state)
    print(f"bench cluster up: {bench.cluster(3):.1f} s ({os.cpu_count()} cores)")
    # A part run alone replaces its own figures and keeps the others' (each says its load).
    earlier = RESULTS / "scale.json"
    figures: dict = json.loads(earlier.read_text())["figures"] if earlier.exists() else {}
    try:
        for part, measure in (("releases", releases_growth), ("nodes", nodes_and_replicas), ("hpa", autoscalers)):
            if part in parts:
                figures[part] = {"load_average_1m_at_start": round(os.getloadavg()[0], 2)}
                measure(bench, figures[part])
                write_results("scale", figures)
    finally:
        tear_down(bench.cluster_args, state, keep=args.keep)


if __name__ == "__main__":
    main()
