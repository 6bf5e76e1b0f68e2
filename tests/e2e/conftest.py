"""A local kwok cluster for the end-to-end tests, brought up by the toolkit's own playbook.

It is a cluster of its own (name openpolicy-e2e, state under pytest's temporary folder), so
the tests neither need nor disturb the cluster of `make up`.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers import Kube, recap, run_playbook

E2E_CLUSTER = "openpolicy-e2e"


# Minutes a module took on this 2-core machine under load (make test-e2e prints --durations).
# The longest start first, so that the two workers finish close together.
MODULE_MINUTES = {
    # Two podman hosts provisioned with v1 deployed in one run (15.3 min), the rollback with
    # restore (5.8 min, was 8.5 with the services scaled one by one) and six shorter runs:
    # 7 passed in 33.3 min alone at a load average of 10 to 17 (2026-12-02, the cluster included).
    "test_restore_point": 33,
    # The staging topology (seven SSH hosts) converged once by site.yml, the environments' and the
    # HA cases on it (was test_environments, opt-in, and test_ha 70 with five hosts of its own):
    # 16 of 17 passed in 46.1 min at a load of 7-12 (2026-12-02: hosts 3.8, cold site.yml 21.2,
    # the second site.yml 13.7); 17 passed in 24.7 min within a whole make test-e2e at a load of
    # 2-7 (2026-12-02: the converge 9.7, the old primary's return with the second site.yml 9.0).
    # Alone on a quiet machine: cold site.yml 5.1 min, the second 5.1. Kept the longest: first.
    "test_staging": 50,
    "test_monitoring": 39,
    "test_faults": 26,  # 7 passed in 25m26s with the crash and rebuild cases, at a load of 7-16 (2026-12-02)
    # One staging environment for all its cases: 8 passed in 20.4 min at a load of 8-12 (13.7 min
    # in an earlier run with one case failing, at a load of 6-13); 27.6 min at a load of 6-16
    # (2026-12-02, on release_tier; the drift repair's deploy of staging alone 5.3 min).
    "test_drift_promote": 28,
    # 17 passed in 24 min at a load of 15-80 (2026-12-01, with the HPA-conflict case); 18.6 min
    # at a load of 11-15 with every release of a tier at once (release_tier, 2026-12-02).
    "test_deploy": 19,
    # 7 passed in 9.4 min at a load of 4-9 (26.5 min at a load of about 15), 2026-12-02.
    "test_environments_production": 15,
    "test_secrets": 10,
    # 3 passed in 12 min at a load of 13-17 (2026-12-02, 7 of them the interrupted cold deploy).
    "test_interrupted_deploy": 12,
    # 5 passed in 12.7 min at a load of 10-15 (2026-12-02; 5.5 of them the two sets' deploys).
    "test_rollback": 13,
    "test_secrets_rotation": 6,
    "test_bad_input": 6,  # 10 cases in 5.8 min at a load of 13-17 (2026-12-02)
    "test_local_cluster": 5,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: -MODULE_MINUTES.get(item.module.__name__.rsplit(".", 1)[-1], 1))


@pytest.fixture(scope="module", autouse=True)
def one_run_of_this_module_at_a_time(request: pytest.FixtureRequest):
    """Each module's hosts and ports are fixed: two checkouts on one machine (CI's and a
    developer's) run the same module one after the other instead of into each other."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    with (Path(tempfile.gettempdir()) / f"openpolicy-e2e-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def cluster_vars(tmp_path_factory: pytest.TempPathFactory) -> dict:
    state = tmp_path_factory.mktemp("cluster")
    return {
        "k8s_cluster_name": E2E_CLUSTER,
        "k8s_cluster_workdir": str(state / "cluster"),
        "k8s_cluster_kubeconfig": str(state / "kubeconfig"),
        "k8s_cluster_nodes": int(os.environ.get("OPENPOLICY_E2E_NODES", "3")),
        # Every playbook reads the secrets first (playbooks/preflight.yml): the tests' vault, never
        # inventories/local's, encrypted with the tests' throwaway password (tests/helpers.py).
        "secrets_vault_file": str(state / "vault.yml"),
    }


@pytest.fixture(scope="session")
def cluster_first_run(cluster_vars: dict):
    """Bring the cluster up with provision_cluster.yml; tear it down after the session."""
    result = run_playbook("provision_cluster.yml", extra_vars=cluster_vars)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    yield result
    down = run_playbook("teardown_local.yml", extra_vars={**cluster_vars, "podman_hosts_groups": []})
    assert down.returncode == 0, down.stdout[-3000:]
    assert not Path(cluster_vars["k8s_cluster_workdir"]).exists(), "make down must remove the cluster state"


@pytest.fixture(scope="session")
def kube(cluster_first_run, cluster_vars: dict) -> Kube:
    return Kube(Path(cluster_vars["k8s_cluster_kubeconfig"]), f"kwok-{E2E_CLUSTER}")


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest):
    """A fresh namespace per test, deleted afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


__all__ = ["recap"]
