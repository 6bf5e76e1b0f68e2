"""Unit tests of the workload filters roles/pgbackrest scales around a restore
(plugins/filter/pgbackrest_workloads.py): one listing per namespace and kind, one watch."""

from __future__ import annotations

from tests.helpers import load_filter_plugin

workloads = load_filter_plugin("pgbackrest_workloads")

TARGETS = [
    {"namespace": "openpolicy", "kind": "Deployment", "name": "auth-service"},
    {"namespace": "openpolicy", "name": "policy-service"},
    {"namespace": "jobs", "kind": "StatefulSet", "name": "etl"},
]


def deployment(name: str, want: int, **status: int) -> dict:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    return {
        "metadata": {"namespace": "openpolicy", "name": name, "generation": 2},
        "spec": {"replicas": want, "selector": {"matchLabels": labels}},
        "status": {"observedGeneration": 2, **status},
    }


def listing(kind: str, namespace: str, *resources: dict) -> dict:
    # k8s_info's items carry no kind: the loop item names it.
    return {"item": {"kind": kind, "namespace": namespace}, "resources": list(resources)}


STATEFULSET = {
    "metadata": {"namespace": "jobs", "name": "etl", "generation": 1},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "etl"}}},
}
LISTINGS = [
    listing(
        "Deployment",
        "openpolicy",
        deployment("auth-service", 2),
        deployment("policy-service", 1),
        deployment("search-service", 1),
    ),
    listing("StatefulSet", "jobs", STATEFULSET),
]


def test_one_listing_per_namespace_and_kind() -> None:
    assert workloads.pgbackrest_workload_groups(TARGETS) == [
        {"namespace": "openpolicy", "kind": "Deployment"},
        {"namespace": "jobs", "kind": "StatefulSet"},
    ]


def test_missing_workloads_are_named() -> None:
    assert workloads.pgbackrest_workloads_missing(LISTINGS, TARGETS) == []
    assert workloads.pgbackrest_workloads_missing(LISTINGS[:1], TARGETS) == ["StatefulSet jobs/etl"]


def test_replicas_and_selectors_are_kept() -> None:
    plan = workloads.pgbackrest_workloads(LISTINGS, TARGETS)
    assert [(item["name"], item["replicas"]) for item in plan] == [
        ("auth-service", 2),
        ("policy-service", 1),
        ("etl", 1),
    ]
    assert plan[2]["selector"] == {"app": "etl"}


def pod(namespace: str, name: str, **labels: str) -> dict:
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels}}


def test_pods_of_the_workloads_only() -> None:
    plan = workloads.pgbackrest_workloads(LISTINGS, TARGETS)
    pods = [
        listing("Pod", "openpolicy",
                pod("openpolicy", "auth-1", **{"app.kubernetes.io/name": "auth-service",
                                               "app.kubernetes.io/instance": "auth-service", "pod-template-hash": "x"}),
                pod("openpolicy", "search-1", **{"app.kubernetes.io/name": "search-service",
                                                 "app.kubernetes.io/instance": "search-service"}),
                pod("openpolicy", "other", app="etl")),
        listing("Pod", "jobs", pod("jobs", "etl-0", app="etl")),
    ]  # fmt: skip
    assert workloads.pgbackrest_pods_of(pods, plan) == ["openpolicy/auth-1", "jobs/etl-0"]
    assert workloads.pgbackrest_pods_of([listing("Pod", "openpolicy", pods[0]["resources"][1])], plan) == []


def test_a_failed_listing_counts_as_waiting() -> None:
    plan = workloads.pgbackrest_workloads(LISTINGS, TARGETS)
    failed = {"item": "openpolicy", "msg": "connection refused"}
    assert workloads.pgbackrest_pods_of([failed], plan) == ["openpolicy: connection refused"]
    assert workloads.pgbackrest_workloads_waiting([failed], plan[:1])[0] == "openpolicy: connection refused"


def test_ready_when_every_replica_is_updated_ready_and_available() -> None:
    plan = workloads.pgbackrest_workloads(LISTINGS, TARGETS)[:2]
    full = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    ready = [listing("Deployment", "openpolicy", deployment("auth-service", 2, **full),
                     deployment("policy-service", 1, **{k: 1 for k in full}))]  # fmt: skip
    assert workloads.pgbackrest_workloads_waiting(ready, plan) == []
    rolling = [listing("Deployment", "openpolicy", deployment("auth-service", 2, **{**full, "availableReplicas": 1}),
                       deployment("policy-service", 1, **{**{k: 1 for k in full}, "replicas": 2}))]  # fmt: skip
    assert workloads.pgbackrest_workloads_waiting(rolling, plan) == [
        "Deployment openpolicy/auth-service 1/2",
        "Deployment openpolicy/policy-service 1/1",
    ]
    stale = [listing("Deployment", "openpolicy", {**deployment("auth-service", 2, **full),
                                                  "status": {**full, "observedGeneration": 1}})]  # fmt: skip
    assert workloads.pgbackrest_workloads_waiting(stale, plan[:1]) == ["Deployment openpolicy/auth-service 2/2"]
