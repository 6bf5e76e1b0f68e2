#!/usr/bin/env python3
"""Deploy figures on a throwaway local cluster, in one run:

- deploy.yml of the nine services, cold and then no-op (nothing changed);
- a plain sequential `helm upgrade --install --wait` loop over the same charts and values
  (same baseline, same Secrets, tier order) into a namespace of its own, as the peer, and the
  same loop run in parallel (`xargs -P`, every service at once) into a third namespace;
- a failed upgrade (pods never Ready) until the previous revision serves again, with the
  timeout used here;
- rollback.yml of the whole environment to the previous release set.

Prints one line per figure and the ratios, and writes them to bench/results/deploy.json.
Not part of `make test` (no timing is asserted). Heavy: run it under the machine's lock.

    python bench/bench_deploy.py [--keep]   # --keep leaves the cluster up for a look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helm_loop import plain_helm_loop, run  # noqa: E402
from bench.results_file import write_results  # noqa: E402
from tests.helpers import recap, run_playbook  # noqa: E402

CLUSTER = "openpolicy-bench-deploy"
ANSIBLE_NS = "openpolicy-bench-ansible"
PLAIN_NS = "openpolicy-bench-plain"
PARALLEL_NS = "openpolicy-bench-parallel"
TIER_ORDER = (
    "etl-service",
    "scraper-service",
    "auth-service",
    "config-service",
    "policy-service",
    "search-service",
    "notification-service",
    "health-service",
    "api-gateway",
)
FAILING_TIMEOUT = 30


def timed_playbook(name: str, extra: dict, expect_ok: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = run_playbook(name, extra_vars=extra, timeout=1800)
    elapsed = time.monotonic() - started
    if (result.returncode == 0) != expect_ok:
        raise SystemExit(f"{name}: unexpected exit {result.returncode}\n{result.stdout[-3000:]}")
    return elapsed, result


def changed_total(result: subprocess.CompletedProcess) -> int:
    return sum(counts["changed"] for counts in recap(result).values())


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
    try:
        cold, _ = timed_playbook("deploy.yml", extra)
        noop, again = timed_playbook("deploy.yml", extra)
        plain = plain_helm_loop(kube, helm, state, source=ANSIBLE_NS, namespace=PLAIN_NS, names=list(TIER_ORDER))
        parallel = plain_helm_loop(
            kube, helm, state, source=ANSIBLE_NS, namespace=PARALLEL_NS, names=list(TIER_ORDER), jobs=len(TIER_ORDER)
        )
        print(f"deploy.yml, nine services, cold:        {cold:6.1f} s")
        print(f"plain sequential helm --wait loop:      {plain:6.1f} s   (deploy.yml / loop = {cold / plain:.2f})")
        jobs = f"xargs -P {len(TIER_ORDER)}"
        print(f"plain helm loop, {jobs}:          {parallel:6.1f} s   (deploy.yml / it = {cold / parallel:.2f})")
        ratio = f"changed={changed_total(again)}; no-op / cold = {noop / cold:.2f}"
        print(f"deploy.yml, no-op rerun:                {noop:6.1f} s   ({ratio})")
        figures = {
            "deploy_cold_s": round(cold, 1),
            "deploy_noop_s": round(noop, 1),
            "deploy_noop_changed": changed_total(again),
            "helm_loop_sequential_s": round(plain, 1),
            "helm_loop_parallel_s": round(parallel, 1),
            "helm_loop_parallel_jobs": len(TIER_ORDER),
            "cold_over_sequential_loop": round(cold / plain, 2),
            "cold_over_parallel_loop": round(cold / parallel, 2),
        }

        failing = extra | {
            "services": "auth-service",
            "version": "1.5.0",
            "service_releases_timeout": FAILING_TIMEOUT,
            "service_releases_values_overrides": {
                "auth-service": {"podLabels": {"openpolicy.dev/simulate": "crashloop"}}
            },
        }
        failed, _ = timed_playbook("deploy.yml", failing, expect_ok=False)
        print(
            f"failed upgrade to previous revision Ready: {failed:6.1f} s (Helm timeout {FAILING_TIMEOUT} s; "
            f"{failed - FAILING_TIMEOUT:.1f} s beyond it)"
        )
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
            "failed_upgrade_to_previous_ready_s": round(failed, 1),
            "failed_upgrade_helm_timeout_s": FAILING_TIMEOUT,
            "deploy_upgrade_two_s": round(upgraded, 1),
            "rollback_environment_s": round(rollback, 1),
        }
        write_results("deploy", figures)
    finally:
        if not args.keep:
            run([sys.executable, str(REPO / "scripts" / "local_cluster.py"), "down", *cluster])
        else:
            print(f"kept: KUBECONFIG={state / 'kubeconfig'}")


if __name__ == "__main__":
    main()
