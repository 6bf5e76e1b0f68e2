"""kube-apiserver SIGKILLed in the middle of a deploy (issue 16): the run ends with one line per
release in flight naming the cluster, the control plane is restarted the documented way
(provision_cluster.yml, what `make up` runs), and the next deploy.yml returns the releases left
pending-upgrade to their last deployed revision by itself, converges, and a rerun is changed=0.

The two releases in flight wait in the two places a Helm waits: policy-service on its Deployment
(Helm's watch of it fails when the server goes), auth-service on its migration hook (Helm waits
there until its timeout: the deploy's own watch of the pods stops it once the server has not
answered for the failure grace). Pods that cannot be scheduled hold both, not pods that crash:
those the deploy stops by itself after the same grace.

The tests build on each other in file order; two core-tier services keep the module lean.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.deploy_env import DeployEnv, failure_messages, output, release_hosts_changed
from tests.helpers import Kube, run_playbook

pytestmark = pytest.mark.cluster

NAMESPACE = "openpolicy-e2e-interrupted"
CONTEXT = "kwok-openpolicy-e2e"
SERVICES = ("auth-service", "policy-service")
# No simulated node has this label: the pods stay Pending, which no grace counts as failing.
UNSCHEDULABLE = {"nodeSelector": {"openpolicy.dev/no-such-node": "true"}}
HELD = {
    "auth-service": UNSCHEDULABLE,  # its migration Job's pod: Helm waits on the hook
    "policy-service": {**UNSCHEDULABLE, "migration": {"enabled": False}},  # Helm waits on the Deployment
}
# Seconds the API server may not answer before the deploy stops the Helm waiting on the hook;
# Helm's own timeout is far beyond it.
GRACE = 5
TIMEOUT = 120


@pytest.fixture(scope="module")
def env(kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory):
    """The two services deployed once, removed at the end."""
    deployed = DeployEnv(kube, cluster_vars, NAMESPACE, tmp_path_factory.mktemp("credentials"))
    try:
        cold = deployed.deploy(services=",".join(SERVICES))
        assert cold.returncode == 0, output(cold)
        yield deployed
    finally:
        deployed.remove()


def pending(env: DeployEnv) -> set[str]:
    return {name for name, entries in env.history().items() if entries[-1][1].startswith("pending-")}


def migration_jobs(env: DeployEnv) -> set[str]:
    """The uids of auth-service's migration Jobs (the cold deploy's stays: before-hook-creation)."""
    jobs = env.kube.json("get", "jobs", "-n", NAMESPACE)["items"]
    return {job["metadata"]["uid"] for job in jobs if job["metadata"]["name"] == "auth-service-migration"}


def kill_the_api_server(cluster_vars: dict) -> int:
    pid_files = list(Path(cluster_vars["k8s_cluster_workdir"]).rglob("pids/kube-apiserver.pid"))
    assert len(pid_files) == 1, pid_files
    pid = int(pid_files[0].read_text().strip())
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.fixture(scope="module")
def interrupted(env: DeployEnv, cluster_vars: dict) -> dict:
    """A deploy whose two upgrades are in Helm's wait when kube-apiserver is SIGKILLed."""
    runs: list = []
    held = {
        "services": ",".join(SERVICES),
        "service_releases_timeout": TIMEOUT,
        "service_releases_failure_grace": GRACE,
        "service_releases_values_overrides": HELD,
    }
    before = migration_jobs(env)
    deploy = threading.Thread(target=lambda: runs.append(env.deploy(**held)), daemon=True)
    deploy.start()
    deadline = time.monotonic() + 300
    # Both pending, and auth-service's new migration Job created: its Helm waits on the hook (a
    # kill before that Job would fail its Helm's create at once, not test the deploy's stop).
    while pending(env) != set(SERVICES) or not migration_jobs(env) - before:
        assert deploy.is_alive() and time.monotonic() < deadline, "the upgrades never reached Helm's wait"
        time.sleep(0.5)
    kill_the_api_server(cluster_vars)
    killed = time.monotonic()
    deploy.join(timeout=600)
    assert runs, "the interrupted deploy never ended"
    return {"result": runs[0], "ended_after": time.monotonic() - killed}


def test_the_interrupted_run_names_the_cluster_and_each_service_in_flight(interrupted: dict):
    result = interrupted["result"]
    assert result.returncode != 0, output(result)
    messages = failure_messages(result)
    for service in SERVICES:
        # The cause in a few words depends on where Helm was when the server went (connection
        # refused, cluster unreachable, ...).
        line = re.compile(rf"^service {service}: cluster {CONTEXT} became unreachable \([^)]+\) while its deploy")
        assert any(line.match(m) for m in messages), output(result)
    # Helm's raw errors are not printed: the one line per service says it.
    assert "Failure when executing Helm command" not in result.stdout + result.stderr, output(result)
    assert "dial tcp" not in "\n".join(messages), messages
    print(f"\nthe interrupted deploy ended {interrupted['ended_after']:.0f} s after the kill")


def test_the_helm_waiting_on_a_hook_is_stopped_before_its_timeout(interrupted: dict):
    # Without the deploy's stop, auth-service's Helm waited on its hook for the whole timeout
    # (a deploy ended 145 s after the kill, with a 120 s timeout): the run ends a few seconds
    # after the grace, far from the timeout.
    assert interrupted["ended_after"] < TIMEOUT / 2, f"ended {interrupted['ended_after']:.0f} s after the kill"


@pytest.fixture(scope="module")
def restarted(interrupted: dict, cluster_vars: dict):
    result = run_playbook("provision_cluster.yml", extra_vars=cluster_vars)
    assert result.returncode == 0, output(result)
    return result


def test_the_next_deploy_returns_the_pending_releases_and_converges(env: DeployEnv, restarted):
    assert pending(env) == set(SERVICES), env.history()
    result = env.deploy(services=",".join(SERVICES))
    assert result.returncode == 0, output(result)
    said = " ".join(result.stdout.split())
    for service in SERVICES:
        line = f"service {service}: revision 2 was left pending-upgrade by an interrupted run; returned to revision 1"
        assert line in said, output(result)
    assert not pending(env), env.history()
    ready = env.ready()
    assert all(ready[s][0] == ready[s][1] >= 1 for s in SERVICES), ready
    assert all(env.image_tag(s) == "1.4.2" for s in SERVICES)


def test_a_rerun_changes_nothing(env: DeployEnv, restarted):
    # The recovery's rollback leaves the pending revision's pods terminating for a while.
    before = env.settled_snapshot()
    again = env.deploy(services=",".join(SERVICES))
    assert again.returncode == 0, output(again)
    changed = release_hosts_changed(again)
    assert changed and all(count == 0 for count in changed.values()), changed
    # The recovery's one line, not the task names of recover.yml ("... that was left pending and ...").
    said = " ".join(again.stdout.split())
    assert not re.search(r"revision \d+ was left pending-\S+ by an interrupted run", said), output(again)
    assert env.snapshot() == before
