#!/usr/bin/env python3
"""Deploy figures on a throwaway local cluster, in one run:

- deploy.yml of the nine services, cold (the median of five, each into a namespace of its own
  with its own secrets) and then no-op (nothing changed; the median of three);
- a plain sequential `helm upgrade --install --wait` loop over the same charts and values
  (same baseline, same Secrets, tier order) into a namespace of its own, as the peer (the median
  of five, each into a fresh namespace, each right after a cold run: the ratio of each pair is
  printed too), the same loop run in parallel (`xargs -P`, every service at once) into another,
  and tier by tier (each tier's at once: deploy.yml's order and
  waits without Ansible, the floor of a tiered deploy; deploy.yml's excess over it is the
  toolkit's own cost) into a third;
- a failed upgrade (pods never Ready) until the previous revision serves again, with the
  timeout used here: the whole run, and from the failed revision's start until Helm's rollback
  revision is deployed with its pods Ready (polled beside the run);
- rollback.yml of the whole environment to the previous release set.

Prints one line per figure and the ratios, and writes them to bench/results/deploy.json.
Not part of `make test` (no timing is asserted). Heavy: run it under the machine's lock.

    python bench/bench_deploy.py [--keep]   # --keep leaves the cluster up for a look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helm_loop import plain_helm_loop, run, tear_down  # noqa: E402
from bench.results_file import single_core_seconds, write_results  # noqa: E402
from tests.helpers import recap, run_playbook  # noqa: E402

CLUSTER = "openpolicy-bench-deploy"
ANSIBLE_NS = "openpolicy-bench-ansible"
PLAIN_NS = "openpolicy-bench-plain"
PARALLEL_NS = "openpolicy-bench-parallel"
TIERS = (
    ("etl-service", "scraper-service"),
    ("auth-service", "config-service", "policy-service", "search-service", "notification-service", "health-service"),
    ("api-gateway",),
)
TIER_ORDER = tuple(name for tier in TIERS for name in tier)
TIERED_NS = "openpolicy-bench-tiered"
FAILING_TIMEOUT = 30
# Five pairs: one pair's ratio moved from 0.48 to 0.54 within a run, as much as the margin measured.
COLD_RUNS = 5


def cold_extra(extra: dict, state: Path, run: int) -> dict:
    """deploy.yml's extra-vars for cold run `run`: the first into ANSIBLE_NS, the others into
    namespaces of their own, each with its own vault and credentials (nothing generated before)."""
    if run == 0:
        return extra
    return extra | {
        "openpolicy_namespace": f"{ANSIBLE_NS}-{run}",
        "service_releases_credentials_dir": str(state / f"credentials-{run}"),
        "secrets_vault_file": str(state / f"vault-{run}.yml"),
    }


def timed_playbook(name: str, extra: dict, expect_ok: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = run_playbook(name, extra_vars=extra, timeout=1800)
    elapsed = time.monotonic() - started
    if (result.returncode == 0) != expect_ok:
        raise SystemExit(f"{name}: unexpected exit {result.returncode}\n{result.stdout[-3000:]}")
    return elapsed, result


def cold_runs_and_loops(
    kube: list[str], helm: list[str], state: Path, extra: dict
) -> tuple[list[float], list[float], list[float]]:
    """COLD_RUNS pairs of a cold deploy and a sequential helm loop, one after the other: one
    cold run moved by a second with what else the machine did, a tenth of the ratio, and one
    core's speed here was seen to change by half within minutes (single_core_loop_s 0.28 to
    0.83): alternated, each pair sees about the same machine. Each cold run goes into an empty
    namespace with secrets of its own (the first is the namespace of every later figure, and the
    source of the loops' values), each loop into a fresh namespace. Returns the cold runs, the
    loops and one core's speed before each pair."""
    colds, plains, speeds = [], [], []
    for pair in range(COLD_RUNS):
        speeds.append(single_core_seconds())
        colds.append(timed_playbook("deploy.yml", cold_extra(extra, state, pair))[0])
        loop = {"source": ANSIBLE_NS, "namespace": f"{PLAIN_NS}-{pair}", "names": list(TIER_ORDER)}
        plains.append(plain_helm_loop(kube, helm, state, **loop))
    return colds, plains, speeds


def parallel_loops(kube: list[str], helm: list[str], state: Path) -> tuple[float, float]:
    """The plain loop with every release at once (xargs -P), then tier by tier."""
    names = list(TIER_ORDER)
    every = plain_helm_loop(kube, helm, state, source=ANSIBLE_NS, namespace=PARALLEL_NS, names=names, jobs=len(names))
    tiers = [list(tier) for tier in TIERS]
    tiered = plain_helm_loop(kube, helm, state, source=ANSIBLE_NS, namespace=TIERED_NS, names=names, tiers=tiers)
    return every, tiered


def against(cold: float, loop: float) -> str:
    return f"deploy.yml / it = {cold / loop:.2f}, {cold - loop:+.1f} s"


def listed(figures: list[float], digits: int = 1) -> str:
    return ", ".join(f"{figure:.{digits}f}" for figure in figures)


def changed_total(result: subprocess.CompletedProcess) -> int:
    return sum(counts["changed"] for counts in recap(result).values())


def failed_upgrade_to_previous(helm: list[str], kube: list[str], service: str, extra: dict) -> tuple[float, float]:
    """The failing deploy.yml run, and beside it the seconds from the moment Helm shows the new
    revision until a later revision that rolled back is deployed and the Deployment is Ready."""
    history_cmd = [*helm, "history", service, "-n", ANSIBLE_NS, "-o", "json"]
    before = max(int(e["revision"]) for e in json.loads(run(history_cmd)))
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(run=timed_playbook("deploy.yml", extra, expect_ok=False)))
    thread.start()
    appeared = served = None
    while served is None:
        alive = thread.is_alive()
        history = json.loads(run(history_cmd))
        now = time.monotonic()
        if appeared is None and any(int(e["revision"]) > before for e in history):
            appeared = now
        latest = history[-1]
        if appeared is not None and latest["status"] == "deployed" and int(latest["revision"]) > before + 1:
            status = json.loads(run([*kube, "get", "deployment", service, "-n", ANSIBLE_NS, "-o", "json"]))["status"]
            if status.get("readyReplicas", 0) == status.get("replicas", -1) and not status.get("unavailableReplicas"):
                served = now
        if not alive:
            break
        time.sleep(0.5)
    thread.join()
    if appeared is None or served is None:
        raise SystemExit(f"failed upgrade: no rollback revision served ({outcome})")
    return outcome["run"][0], served - appeared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the bench cluster up")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    cluster = ["--name", CLUSTER, "--workdir", str(state / "cluster"), "--kubeconfig", str(state / "kubeconfig")]
    started = time.monotonic()
    run([sys.executable, str(REPO / "scripts" / "local_cluster.py"), "up", *cluster, "--nodes", "3"])
    print(f"bench cluster up: {time.monotonic() - started:.1f} s ({os.cpu_count()} cores)")
    kube = ["kubectl", "--kubeconfig", str(state / "kubeconfig"), "--context", f"kwok-{CLUSTER}"]
    helm = ["helm", "--kubeconfig", str(state / "kubeconfig"), "--kube-context", f"kwok-{CLUSTER}"]
    extra = {
        "k8s_cluster_name": CLUSTER,
        "k8s_cluster_workdir": str(state / "cluster"),
        "k8s_cluster_kubeconfig": str(state / "kubeconfig"),
        "openpolicy_namespace": ANSIBLE_NS,
        "service_releases_credentials_dir": str(state / "credentials"),
        # The bench's own vault (roles/secrets), encrypted with the tests' throwaway password.
        "secrets_vault_file": str(state / "vault.yml"),
    }
    load_at_start = os.getloadavg()[0]
    try:
        colds, plains, speeds = cold_runs_and_loops(kube, helm, state, extra)
        cold, plain = statistics.median(colds), statistics.median(plains)
        # The median of three no-op runs: one run's figure moves by half a second with what
        # else the machine does, as much as the gap to the 5 s target.
        noops = [timed_playbook("deploy.yml", extra) for _ in range(3)]
        noop = statistics.median(elapsed for elapsed, _ in noops)
        again = max((result for _, result in noops), key=changed_total)
        parallel, tiered = parallel_loops(kube, helm, state)
        print(f"deploy.yml, nine services, cold:        {cold:6.1f} s   (median of {listed(colds)})")
        print(f"plain sequential helm --wait loop:      {plain:6.1f} s   (median of {listed(plains)})")
        pairs = [cold_run / loop for cold_run, loop in zip(colds, plains, strict=True)]
        print(f"deploy.yml cold / sequential loop:      {cold / plain:6.2f}   (each pair: {listed(pairs, digits=2)})")
        print(f"plain helm loop, xargs -P {len(TIER_ORDER)}:          {parallel:6.1f} s   ({against(cold, parallel)})")
        print(f"plain helm, tier by tier, each at once: {tiered:6.1f} s   ({against(cold, tiered)})")
        each = listed([elapsed for elapsed, _ in noops])
        ratio = f"median of {each}; changed={changed_total(again)}; no-op / cold = {noop / cold:.2f}"
        print(f"deploy.yml, no-op rerun:                {noop:6.1f} s   ({ratio})")
        figures = {
            "deploy_cold_s": round(cold, 1),
            "deploy_cold_runs_s": [round(elapsed, 1) for elapsed in colds],
            "deploy_noop_s": round(noop, 1),
            "deploy_noop_runs_s": [round(elapsed, 1) for elapsed, _ in noops],
            "deploy_noop_changed": changed_total(again),
            "helm_loop_sequential_s": round(plain, 1),
            "helm_loop_sequential_runs_s": [round(elapsed, 1) for elapsed in plains],
            "helm_loop_parallel_s": round(parallel, 1),
            "helm_loop_parallel_jobs": len(TIER_ORDER),
            "cold_over_sequential_loop": round(cold / plain, 2),
            # Each pair's own ratio, and one core's speed before it (the loop takes 10^7 steps).
            "cold_over_sequential_loop_pairs": [round(ratio, 2) for ratio in pairs],
            "single_core_loop_s_per_pair": speeds,
            "cold_over_parallel_loop": round(cold / parallel, 2),
            "helm_loop_tiered_s": round(tiered, 1),
            "cold_over_tiered_loop": round(cold / tiered, 2),
            # The machine is shared: the load when the runs started (the file has it at the end).
            "load_average_1m_at_start": round(load_at_start, 2),
        }
        # Written now too, so that an interrupted run (Ctrl-C) keeps the figures it has.
        write_results("deploy", figures)

        failing = extra | {
            "services": "auth-service",
            "version": "1.5.0",
            "service_releases_timeout": FAILING_TIMEOUT,
            # No backup host here: the restore point of a migrating upgrade is bench_restore_point.py's.
            "service_releases_restore_point": False,
            "service_releases_values_overrides": {
                "auth-service": {"podLabels": {"openpolicy.dev/simulate": "crashloop"}}
            },
        }
        failed, to_previous = failed_upgrade_to_previous(helm, kube, "auth-service", failing)
        print(
            f"failed upgrade, whole deploy.yml run:    {failed:6.1f} s (Helm timeout {FAILING_TIMEOUT} s; "
            f"{failed - FAILING_TIMEOUT:+.1f} s against it)"
        )
        print(f"failed upgrade: new revision to previous revision serving: {to_previous:6.1f} s")
        figures |= {
            "failed_upgrade_to_previous_ready_s": round(failed, 1),
            "failed_revision_to_previous_serving_s": round(to_previous, 1),
            "failed_upgrade_helm_timeout_s": FAILING_TIMEOUT,
        }
        write_results("deploy", figures)
        # The bench cluster has no backup host: the restore point a migrating upgrade takes is
        # measured by bench_restore_point.py, not here.
        upgrade = extra | {
            "service_releases_versions": {"auth-service": "1.5.0", "policy-service": "1.5.0"},
            "service_releases_restore_point": False,
        }
        upgraded, _ = timed_playbook("deploy.yml", upgrade)
        rollback, _ = timed_playbook("rollback.yml", extra)
        print(f"deploy.yml upgrading two services:      {upgraded:6.1f} s")
        ratio = f"two releases back; rollback / cold = {rollback / cold:.2f}"
        print(f"rollback.yml, environment to previous set: {rollback:6.1f} s ({ratio})")
        figures |= {
            "deploy_upgrade_two_s": round(upgraded, 1),
            "rollback_environment_s": round(rollback, 1),
        }
        write_results("deploy", figures)
    finally:
        tear_down(cluster, state, keep=args.keep)


if __name__ == "__main__":
    main()
