"""What deploy.yml and rollback.yml do with a release an interrupted run left pending, and the
line a run ends with when the cluster stops answering (module_utils/release_state.py)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_state

from tests.helpers import REPO, toolchain_env

NS = "openpolicy-staging"
CTX = "staging"


def release(*statuses: str) -> dict:
    """A release whose revisions 1, 2, ... have these statuses, as helm history -o json says."""
    items = [
        {"revision": n, "status": status, "chart": "openpolicy-service-0.1.0", "app_version": "1.4.2"}
        for n, status in enumerate(statuses, start=1)
    ]
    return release_state.release(items, {})


@pytest.mark.parametrize(
    ("statuses", "target"),
    [
        (("deployed", "pending-upgrade"), 1),
        (("superseded", "deployed", "pending-upgrade"), 2),
        (("superseded", "failed", "deployed", "pending-rollback"), 3),
        # An upgrade that failed without --rollback-on-failure left no deployed revision: the
        # newest that served is the one to return to.
        (("superseded", "failed", "pending-upgrade"), 1),
        (("deployed", "superseded", "pending-upgrade"), 1),
    ],
)
def test_a_pending_release_returns_to_its_last_deployed_revision(statuses: tuple, target: int):
    plan = release_state.interrupted("auth-service", release(*statuses), NS, CTX)
    assert plan["action"] == "rollback" and plan["target"] == target
    assert plan["command"] == f"helm --kube-context {CTX} -n {NS} rollback auth-service {target}"
    assert plan["line"] == (
        f"service auth-service: revision {len(statuses)} was left {statuses[-1]} by an interrupted run; "
        f"returned to revision {target}, the last deployed ({plan['command']})"
    )


def test_a_first_install_left_pending_is_uninstalled():
    plan = release_state.interrupted("auth-service", release("pending-install"), NS, CTX)
    assert plan["action"] == "uninstall"
    assert plan["command"] == f"helm --kube-context {CTX} -n {NS} uninstall auth-service"
    assert "revision 1 was left pending-install" in plan["line"] and "this run installs it again" in plan["line"]


@pytest.mark.parametrize("statuses", [("failed", "pending-upgrade"), ("failed", "failed", "pending-rollback")])
def test_no_revision_that_served_stops_with_the_exact_command(statuses: tuple):
    plan = release_state.interrupted("auth-service", release(*statuses), NS, "")
    assert plan["action"] == "stop"
    assert f"clear it with: helm -n {NS} uninstall auth-service" in plan["line"]
    assert f"look at helm -n {NS} history auth-service" in plan["line"]
    assert "\n" not in plan["line"]


@pytest.mark.parametrize(
    "statuses", [("deployed",), ("superseded", "deployed"), ("deployed", "failed"), ("uninstalled",)]
)
def test_a_release_not_pending_is_left_alone(statuses: tuple):
    assert release_state.interrupted("auth-service", release(*statuses), NS, CTX) is None


def test_nothing_to_do_without_history():
    assert release_state.interrupted("auth-service", None, NS) is None
    assert release_state.interrupted_releases({}, NS) == []


def test_every_pending_release_of_the_namespace_by_name():
    releases = {
        "policy-service": release("deployed", "pending-upgrade"),
        "auth-service": release("pending-install"),
        "config-service": release("deployed"),
    }
    plans = release_state.interrupted_releases(releases, NS, CTX)
    assert [(p["service"], p["action"]) for p in plans] == [
        ("auth-service", "uninstall"),
        ("policy-service", "rollback"),
    ]


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            'helm list: Error: Kubernetes cluster unreachable: Get "https://127.0.0.1:32771/version": '
            "dial tcp 127.0.0.1:32771: connect: connection refused",
            "connection refused",
        ),
        ("Get https://10.0.0.1:6443/api: dial tcp 10.0.0.1:6443: i/o timeout", "no answer (i/o timeout)"),
        ("", "no answer"),
    ],
)
def test_an_unreachable_cluster_is_one_line_naming_cluster_and_service(error: str, cause: str):
    line = release_state.cluster_unreachable("auth-service", "kwok-openpolicy-local", "deploy", error)
    assert line.startswith(f"service auth-service: cluster kwok-openpolicy-local became unreachable ({cause})")
    assert "while its deploy was in flight;" in line
    assert "\n" not in line and "dial tcp" not in line and "Get " not in line


@pytest.mark.parametrize("command", ["rollback", "uninstall"])
def test_the_recovery_passes_only_flags_the_pinned_helm_has(command: str):
    tasks = yaml.safe_load((REPO / "roles" / "service_releases" / "tasks" / "recover.yml").read_text())
    commands = [t["ansible.builtin.command"]["argv"] for t in tasks if "ansible.builtin.command" in t]
    argv = next(a for a in commands if a[1] == command)
    helm = shutil.which("helm", path=toolchain_env()["PATH"])
    assert helm, "the pinned helm is not on the toolchain's PATH (make bootstrap)"
    shown = subprocess.run([helm, command, "--help"], text=True, capture_output=True, check=True).stdout
    for flag in (a.split("=", 1)[0] for a in argv if a.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(flag)}(?=[\s=]|$)", shown, re.MULTILINE), f"helm {command} has no {flag}"
