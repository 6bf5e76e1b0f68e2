"""The workloads roles/pgbackrest scales to zero around a restore onto the original db host.

One listing per namespace and kind gives every workload of `pgbackrest_restore_scale_down`
(its replicas and pod selector); one listing of pods, or of the workloads, repeated, tells
what is still waiting after all of them were scaled. A wait per workload took minutes for
eight services.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Resource = Mapping[str, Any]  # a k8s_info result, a resource or a list item

COUNTS = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")


def _targets(targets: Iterable[Resource]) -> list[dict[str, str]]:
    return [
        {"kind": str(item.get("kind") or "Deployment"), "namespace": str(item["namespace"]), "name": str(item["name"])}
        for item in targets
    ]


def _key(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}"


def _failure(listing: Resource) -> str:
    """A listing that failed (the API did not answer): nothing is known, so it still waits."""
    return f"{listing.get('item', '')}: {listing.get('msg', 'no listing')}"


def pgbackrest_workload_groups(targets: Iterable[Resource]) -> list[dict[str, str]]:
    """The distinct (namespace, kind) pairs to list, in their first order."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for item in _targets(targets):
        groups.setdefault((item["namespace"], item["kind"]), {"namespace": item["namespace"], "kind": item["kind"]})
    return list(groups.values())


def _found(listings: Iterable[Resource]) -> dict[str, Mapping[str, Any]]:
    """Every resource of the k8s_info results, by kind, namespace and name."""
    found: dict[str, Mapping[str, Any]] = {}
    for listing in listings:
        item = listing.get("item")
        kind = item.get("kind", "") if isinstance(item, Mapping) else ""
        for resource in listing.get("resources") or []:
            metadata = resource.get("metadata", {})
            key = _key(resource.get("kind") or kind, metadata.get("namespace", ""), metadata.get("name", ""))
            found[key] = resource
    return found


def pgbackrest_workloads_missing(listings: Iterable[Resource], targets: Iterable[Resource]) -> list[str]:
    """The workloads of the list that the cluster does not have ("Deployment ns/name")."""
    found = _found(listings)
    return [key for item in _targets(targets) if (key := _key(**item)) not in found]


def pgbackrest_workloads(listings: Iterable[Resource], targets: Iterable[Resource]) -> list[dict[str, Any]]:
    """Each workload with its replicas now and its pod selector (matchLabels)."""
    found = _found(listings)
    workloads = []
    for item in _targets(targets):
        spec = found[_key(**item)].get("spec", {})
        replicas = spec.get("replicas")
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        workloads.append({**item, "replicas": 1 if replicas is None else int(replicas), "selector": dict(selector)})
    return workloads


def pgbackrest_pods_of(listings: Iterable[Resource], workloads: Iterable[Resource]) -> list[str]:
    """Pods (terminating ones too) that a workload's selector matches: "ns/name"."""
    selectors = [(item["namespace"], item["selector"]) for item in workloads if item["selector"]]
    pods = []
    for listing in listings:
        if "resources" not in listing:  # the listing failed: nothing is known to be gone
            pods.append(_failure(listing))
        for pod in listing.get("resources") or []:
            metadata = pod.get("metadata", {})
            labels = metadata.get("labels") or {}
            namespace = metadata.get("namespace", "")
            if any(
                namespace == ns and all(labels.get(k) == v for k, v in selector.items()) for ns, selector in selectors
            ):
                pods.append(f"{namespace}/{metadata.get('name', '')}")
    return pods


def pgbackrest_workloads_waiting(listings: Iterable[Resource], workloads: Iterable[Resource]) -> list[str]:
    """Workloads not yet at their replicas, every pod updated, ready and available ("Kind ns/name 1/2")."""
    listings = list(listings)
    found = _found(listings)
    waiting = [_failure(item) for item in listings if "resources" not in item]
    for item in workloads:
        key = _key(item["kind"], item["namespace"], item["name"])
        resource = found.get(key, {})
        # The spec's count, not the one patched in: an autoscaler may have moved it since.
        spec, status = resource.get("spec") or {}, resource.get("status") or {}
        want = spec.get("replicas", item["replicas"]) if resource else item["replicas"]
        generation = (resource.get("metadata") or {}).get("generation", 0)
        counts = [status.get(field) or 0 for field in COUNTS]
        if not (resource and (status.get("observedGeneration") or 0) >= generation and all(n == want for n in counts)):
            waiting.append(f"{key} {status.get('availableReplicas') or 0}/{want}")
    return waiting


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "pgbackrest_workload_groups": pgbackrest_workload_groups,
            "pgbackrest_workloads_missing": pgbackrest_workloads_missing,
            "pgbackrest_workloads": pgbackrest_workloads,
            "pgbackrest_pods_of": pgbackrest_pods_of,
            "pgbackrest_workloads_waiting": pgbackrest_workloads_waiting,
        }
