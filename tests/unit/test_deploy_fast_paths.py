"""The deploy's two fast paths (module_utils/release_state.py; modules helm_releases and
release_tiers): the no-op proof from one look at the namespace, and the tier that starts every
release at once and stops an upgrade whose pods cannot start.

Recording stand-ins answer for helm and kubectl (no cluster runs in tests/unit); the e2e
modules test_deploy.py and test_interrupted_deploy.py run both against the real cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_state

from tests.unit.test_helm_releases import run_module
from tests.unit.test_release_labels import (
    VALUES,
    listed,
    storage,
)

SERVICE = "auth-service"


def deployed_state(values: dict = VALUES, replicas: int = 2, sets: bool = True) -> dict:
    """What helm_releases (labelled, namespace_objects) reads of a namespace where SERVICE runs
    revision 3 with ``values`` and a set records it."""
    labels = release_state.digest_labels(values, 3)
    releases = {
        SERVICE: release_state.labelled_release(listed(SERVICE, 3), storage(SERVICE, 3, labels)["metadata"]["labels"])
    }
    live = release_state.live_services(releases)
    items = [
        {
            "kind": "Deployment",
            "metadata": {
                "name": SERVICE,
                "labels": {"app.kubernetes.io/instance": SERVICE, "app.kubernetes.io/managed-by": "Helm"},
            },
            "spec": {"replicas": replicas},
            "status": {"readyReplicas": replicas},
        }
    ]
    if sets:
        items.append(
            {
                "kind": "ConfigMap",
                "metadata": {"name": "openpolicy-release-set-1", "labels": {release_state.SET_LABEL: "1"}},
                "data": {"set": "1", "previous": "0", "services.json": json.dumps(live)},
            }
        )
    return {"releases": releases, "listing": {"kind": "List", "items": items}, "secret_names": [f"{SERVICE}-secrets"]}


def plan(values: dict = VALUES, state: dict | None = None) -> dict:
    deployed = release_state.deployed_summary((state or deployed_state())["releases"])
    same = deployed.get(SERVICE, {}).get("values_checksum") == platform.values_checksum(values)
    return {SERVICE: {"tier": "core", "values": values, "changed": not same}}


def reasons(values: dict = VALUES, state: dict | None = None, needed: tuple = (f"{SERVICE}-secrets",)) -> list[str]:
    state = state or deployed_state()
    return release_state.deploy_reasons(plan(values, state), state, list(needed), "ns")


def test_nothing_to_do_when_releases_deployments_secrets_and_the_set_match():
    assert reasons() == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("values", f"{SERVICE} changes"),
        ("scaled by hand", f"{SERVICE} changes"),
        ("secret missing", "Secret billing-secrets is missing"),
        ("no set", "the live release set is not recorded"),
    ],
)
def test_each_difference_is_a_reason(case: str, expected: str):
    if case == "values":
        found = reasons(values={**VALUES, "replicaCount": 3})
    elif case == "scaled by hand":
        found = reasons(state=deployed_state(replicas=5))
    elif case == "secret missing":
        found = reasons(needed=(f"{SERVICE}-secrets", "billing-secrets"))
    else:
        found = reasons(state=deployed_state(sets=False))
    assert expected in found, found


def test_namespace_objects_name_the_secrets_beside_the_listing():
    listing = {"items": [{"kind": "Deployment", "metadata": {"name": "auth-service"}, "spec": {}}]}
    line = "auth-service-secrets   Opaque   4   1m   app.kubernetes.io/part-of=openpolicy\n"
    secrets = release_state.secret_table(line)
    found = release_state.namespace_objects(json.dumps(listing), secrets)
    assert found["secret_names"] == ["auth-service-secrets"]
    assert [i["kind"] for i in found["listing"]["items"]] == ["Deployment"]


def test_storage_labels_are_those_of_the_deployed_revision():
    superseded = storage(SERVICE, 2, {"x": "old"})
    superseded["metadata"]["labels"]["status"] = "superseded"
    found = release_state.storage_labels([storage(SERVICE, 3, {"x": "new"}), superseded])
    assert found[SERVICE]["x"] == "new"


def pod(name: str, release: str, reason: str = "", deleting: bool = False) -> dict:
    state = {"waiting": {"reason": reason}} if reason else {"running": {}}
    metadata = {"name": name, "labels": {"app.kubernetes.io/instance": release}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-01T08:00:00Z"
    return {"metadata": metadata, "status": {"containerStatuses": [{"name": "app", "state": state}]}}


def test_pods_that_cannot_start_are_named_per_release():
    listing = {
        "items": [
            pod("auth-1", SERVICE, "CrashLoopBackOff"),
            pod("gw-1", "api-gateway", "ContainerCreating"),
            pod("cfg-1", "config-service", "ImagePullBackOff", deleting=True),
            pod("pol-1", "policy-service", "ErrImagePull"),
            pod("other-1", "search-service", "CrashLoopBackOff"),
        ]
    }
    found = release_state.pods_failing(listing, [SERVICE, "api-gateway", "config-service", "policy-service"])
    assert found == {SERVICE: "pod auth-1 in CrashLoopBackOff", "policy-service": "pod pol-1 in ErrImagePull"}


def test_a_watch_reason_is_the_failed_upgrade_line():
    history = [
        {"revision": 1, "status": "superseded", "description": "Install complete"},
        {"revision": 2, "status": "failed", "description": 'Upgrade "auth-service" failed: context canceled'},
        {"revision": 3, "status": "deployed", "description": "Rollback to 1"},
    ]
    release = {"history": history, "deployed": history[-1]}
    line = release_state.failed_upgrade(SERVICE, release, "", "pod auth-1 in CrashLoopBackOff for 15 s")
    assert line == (
        "service auth-service: revision 2 failed, revision 3 is serving (Rollback to 1): "
        "pod auth-1 in CrashLoopBackOff for 15 s"
    )


# helm upgrade stand-in: a release named "crash*" hangs in Helm's wait until SIGTERM (then it
# exits 1 as Helm does after its rollback); any other ends at once. kubectl's watch shows a crashing pod.
FAKE_TIER = r"""#!/usr/bin/env python3
import json, os, signal, sys, time
args = sys.argv[1:]
here = os.path.dirname(sys.argv[0])
with open(os.path.join(here, "calls"), "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\n")
if os.path.basename(sys.argv[0]) == "kubectl":
    # A watch (--watch --output-watch-events -o json): the crashing pod's event, then it waits
    # as kubectl does until it is stopped.
    assert "--watch" in args and "--output-watch-events" in args, args
    waiting = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    pod = {"metadata": {"name": "crash-1", "labels": {"app.kubernetes.io/instance": "crash"}},
           "status": {"containerStatuses": [waiting]}}
    print(json.dumps({"type": "ADDED", "object": pod}), flush=True)
    time.sleep(60)
    sys.exit(0)
values = json.load(sys.stdin)
name = args[2]
with open(os.path.join(here, name + ".gogc"), "w") as out:
    out.write(os.environ.get("GOGC", ""))
with open(os.path.join(here, name + ".values"), "w") as out:
    json.dump(values, out)
if name.startswith("crash"):
    signal.signal(signal.SIGTERM, lambda *_: (print("Release crash has been cancelled."), sys.exit(1)))
    time.sleep(60)
    sys.exit(2)
if name.startswith("slow"):
    time.sleep(3)
print("Release " + name + " has been upgraded.")
"""

# kubectl stand-ins whose watch fails at once, as kubectl 1.36 does: an API server that does not
# answer (its own words), and one that refuses the request.
KUBECTL_UNANSWERED = (
    "#!/bin/sh\necho 'The connection to the server 127.0.0.1:32764 was refused - did you specify the right "
    "host or port?' >&2\nexit 1\n"
)
KUBECTL_FORBIDDEN = (
    '#!/bin/sh\necho \'Error from server (Forbidden): pods is forbidden: User "deployer" cannot watch '
    'resource "pods"\' >&2\nexit 1\n'
)


def fake_tier_args(tmp_path: Path, releases: list[dict], **options) -> dict:
    """release_tiers's arguments with FAKE_TIER as helm and kubectl in tmp_path."""
    for name in ("helm", "kubectl"):
        (tmp_path / name).write_text(FAKE_TIER)
        (tmp_path / name).chmod(0o755)
    return {
        "namespace": "ns",
        "kubeconfig": str(tmp_path / "kubeconfig"),
        "chart": "charts/openpolicy-service",
        "releases": releases,
        "binary": str(tmp_path / "helm"),
        "kubectl": str(tmp_path / "kubectl"),
        **options,
    }


def test_tier_starts_every_release_and_stops_the_one_whose_pods_crash(tmp_path):
    releases = [
        {"name": "crash", "values": {"replicaCount": 1}, "labels": {"openpolicy.dev/values-revision": "2"}},
        {"name": "fine", "values": {"replicaCount": 2}, "labels": {}},
    ]
    module_args = fake_tier_args(tmp_path, releases, timeout=30, failure_grace=1, interval=0.2)
    started = time.monotonic()
    releases = run_module("release_tiers", tmp_path, module_args)["releases"]
    assert time.monotonic() - started < 20, "the crashing release was left to its timeout"
    assert releases["fine"]["rc"] == 0 and not releases["fine"]["stopped"]
    assert releases["crash"]["rc"] == 1
    assert releases["crash"]["stopped"].startswith("pod crash-1 in CrashLoopBackOff for ")
    assert json.loads((tmp_path / "fine.values").read_text()) == {"replicaCount": 2}
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    upgrade = next(c for c in calls if c[0] == "helm" and "crash" in c)
    for flag in (
        "--wait=watcher",
        "--rollback-on-failure",
        # An HPA that scaled owns .spec.replicas: without it the upgrade and its rollback stop.
        "--force-conflicts",
        # The API server checks the objects (tests/e2e/test_chart_dry_run.py), not Helm.
        "--disable-openapi-validation",
        "--timeout=30s",
        "--labels=openpolicy.dev/values-revision=2",
    ):
        assert flag in upgrade, upgrade
    assert not any("--labels" in arg for c in calls if "fine" in c for arg in c)
    # Helm's garbage collector runs a quarter as often while the tier's Helms share the CPU.
    assert (tmp_path / "fine.gogc").read_text() == "400"
    # One watch for the tier, not a kubectl per poll, and none left running.
    assert sum(1 for c in calls if c[0] == "kubectl") == 1
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "kubectl")], check=False).returncode == 1


def test_tier_ends_when_its_last_helm_ends_not_at_the_next_poll(tmp_path):
    releases = [{"name": "fine", "values": {"replicaCount": 1}, "labels": {}}]
    module_args = fake_tier_args(tmp_path, releases, interval=30.0)
    started = time.monotonic()
    releases = run_module("release_tiers", tmp_path, module_args)["releases"]
    assert releases["fine"]["rc"] == 0
    assert time.monotonic() - started < 15, "the tier waited for the poll's interval after Helm ended"


# helm upgrade stand-in that takes 0.3 s and logs when it started and ended.
SLOW_HELM = r"""#!/usr/bin/env python3
import json, os, sys, time
started = time.time()
json.load(sys.stdin)
time.sleep(0.3)
with open(os.path.join(os.path.dirname(sys.argv[0]), "spans"), "a") as log:
    log.write(json.dumps([sys.argv[3], started, time.time()]) + "\n")
"""


@pytest.mark.parametrize("parallel", [0, 2])
def test_tier_runs_at_most_parallel_helms_and_starts_the_next_as_one_ends(tmp_path, parallel):
    releases = [{"name": f"svc-{n}", "values": {}, "labels": {}} for n in range(5)]
    module_args = fake_tier_args(tmp_path, releases, parallel=parallel, failure_grace=0, interval=30.0)
    (tmp_path / "helm").write_text(SLOW_HELM)
    started = time.monotonic()
    results = run_module("release_tiers", tmp_path, module_args)["releases"]
    took = time.monotonic() - started
    assert sorted(results) == [r["name"] for r in releases] and all(r["rc"] == 0 for r in results.values())
    spans = sorted(json.loads(line)[1:] for line in (tmp_path / "spans").read_text().splitlines())
    most = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    if parallel:
        # Never more than two at once, and the next starts when one ends, not at the next poll.
        assert most <= 2
        assert took < 10, "a release waited for the 30 s poll before it started"
    else:
        # 0: four per core, so the five start at once on this machine's two cores or more.
        assert most == 5


def test_tiers_run_in_order_each_once_the_one_before_has_ended(tmp_path):
    tiers = {"data": ["etl"], "core": ["auth", "policy"], "edge": ["gateway"]}
    releases = [
        {"name": name, "tier": tier, "values": {}, "labels": {}} for tier, names in tiers.items() for name in names
    ]
    # Listed out of order: the order is tier_order's, not the list's.
    module_args = fake_tier_args(tmp_path, releases[::-1], tier_order=list(tiers), failure_grace=0, interval=30.0)
    (tmp_path / "helm").write_text(SLOW_HELM)
    result = run_module("release_tiers", tmp_path, module_args)
    assert sorted(result["releases"]) == ["auth", "etl", "gateway", "policy"] and result["not_started"] == []
    spans = {name: (start, end) for name, start, end in map(json.loads, (tmp_path / "spans").read_text().splitlines())}
    assert max(spans[name][1] for name in tiers["data"]) <= min(spans[name][0] for name in tiers["core"])
    assert max(spans[name][1] for name in tiers["core"]) <= spans["gateway"][0]
    # The tier's releases start together.
    assert abs(spans["auth"][0] - spans["policy"][0]) < 0.25


def test_no_tier_starts_after_a_tier_with_a_failed_release(tmp_path):
    releases = [
        {"name": "crash", "tier": "data", "values": {}, "labels": {}},
        {"name": "fine", "tier": "core", "values": {}, "labels": {}},
    ]
    module_args = fake_tier_args(
        tmp_path, releases, tier_order=["data", "core"], timeout=30, failure_grace=1, interval=0.2
    )
    result = run_module("release_tiers", tmp_path, module_args)
    assert result["releases"]["crash"]["rc"] == 1 and "fine" not in result["releases"]
    assert result["not_started"] == ["fine"]
    assert not (tmp_path / "fine.values").exists(), "the next tier's Helm ran"


def test_a_release_outside_the_tier_order_is_refused(tmp_path):
    releases = [{"name": "auth", "tier": "middle", "values": {}, "labels": {}}]
    module_args = fake_tier_args(tmp_path, releases, tier_order=["data", "core", "edge"])
    # run_module asserts the module's exit status 0: its message holds the module's JSON.
    expected = "\"msg\": \"release auth: tier 'middle' is not one of ['data', 'core', 'edge']\""
    with pytest.raises(AssertionError, match=re.escape(expected)):
        run_module("release_tiers", tmp_path, module_args)
    assert not (tmp_path / "calls").exists()


def test_a_tier_stops_its_helms_when_the_api_server_does_not_answer(tmp_path):
    """Helm waiting on a hook waits out its timeout when the API server goes (a deploy whose
    kube-apiserver was killed during a migration hook ended 145 s later): the tier's watch stops
    the Helms once the server has not answered for the failure grace."""
    releases = [{"name": "crash", "values": {}}, {"name": "crash-too", "values": {}}]
    module_args = fake_tier_args(tmp_path, releases, timeout=30, failure_grace=2, interval=0.2)
    (tmp_path / "kubectl").write_text(KUBECTL_UNANSWERED)
    started = time.monotonic()
    results = run_module("release_tiers", tmp_path, module_args)["releases"]
    assert time.monotonic() - started < 15, "the Helms were left to their timeout"
    for name in ("crash", "crash-too"):
        assert results[name]["rc"] == 1
        assert re.fullmatch(
            r"the API server did not answer for \d+ s, stopped before Helm's 30 s timeout", results[name]["stopped"]
        ), results[name]


def test_a_watch_the_api_server_refuses_stops_nothing(tmp_path):
    """A refused watch (the deployer's role may not watch pods) is not an unreachable cluster."""
    releases = [{"name": "slow", "values": {}}]
    module_args = fake_tier_args(tmp_path, releases, timeout=30, failure_grace=1, interval=0.2)
    (tmp_path / "kubectl").write_text(KUBECTL_FORBIDDEN)
    results = run_module("release_tiers", tmp_path, module_args)["releases"]
    assert results["slow"]["rc"] == 0 and not results["slow"]["stopped"], results["slow"]
