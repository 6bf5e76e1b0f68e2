"""Drift and promotion: what the cluster runs against what the inventory would deploy.

Pure functions over what the helm CLI and kubectl print as JSON (``helm list -o json``,
``helm get values -o json``, ``helm get manifest``, ``kubectl get -o json``), used by the module
openpolicy_live_state (roles/release_drift, roles/release_promotion) and unit-tested in
tests/unit/test_drift.py. The values the inventory would deploy come from the deploy's own
filter (openpolicy_release_plan), never from a copy of its mapping.

A difference is a dict {kind, name, field, live, expected, message}; ``message`` is the one
line an operator reads, naming the release or object and what differs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

# Kinds whose objects the drift check reads back (kubectl get KINDS): what the service chart
# renders, minus Secrets (compared by checksum) and the monitoring CRDs (not on every cluster).
LIVE_KINDS = (
    "deployments,services,configmaps,cronjobs,serviceaccounts,networkpolicies,"
    "poddisruptionbudgets,horizontalpodautoscalers,ingresses"
)
_KIND_NAMES = {
    "Deployment",
    "Service",
    "ConfigMap",
    "CronJob",
    "ServiceAccount",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "Ingress",
}
# Values a deploy sets from the live Secret (compared as a Secret, not as a value).
SECRET_CHECKSUM_KEY = "secretChecksum"  # pragma: allowlist secret
HEALTHY_STATUS = "deployed"


def _canonical(value: Any) -> Any:
    """A plain JSON copy: equal values compare equal whatever container types they came in."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def difference(kind: str, name: str, field: str, *, live: Any, expected: Any, message: str) -> dict:
    return {"kind": kind, "name": name, "field": field, "live": live, "expected": expected, "message": message}


def value_changes(live: Any, expected: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, live, expected) for every leaf that differs; lists compare whole."""
    if isinstance(live, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(live) | set(expected)):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in live:
                out.append((path, None, expected[key]))
            elif key not in expected:
                out.append((path, live[key], None))
            else:
                out.extend(value_changes(live[key], expected[key], path))
        return out
    return [] if live == expected else [(prefix, live, expected)]


def chart_version(chart: str, chart_name: str) -> str:
    """``openpolicy-service-0.1.0`` (helm list's chart column) -> ``0.1.0``."""
    return chart[len(chart_name) + 1 :] if chart.startswith(chart_name + "-") else ""


def manifest_objects(manifest: str) -> list[dict]:
    """The objects of a release manifest (``helm get manifest``), comments and empty documents dropped."""
    return [doc for doc in yaml.safe_load_all(manifest or "") if isinstance(doc, dict) and doc.get("kind")]


def _images(pod_spec: dict) -> list[str]:
    return [c.get("image", "") for c in (pod_spec or {}).get("containers") or []]


def object_differences(release: str, rendered: list[dict], live_items: list[dict]) -> list[dict]:
    """The objects a release rendered that are missing or were changed by hand: Deployment
    replicas (unless an autoscaler of the release owns them: the chart only carries the HPA's
    count forward) and images, ConfigMap data."""
    live = {(i.get("kind"), i["metadata"]["name"]): i for i in live_items or []}
    autoscaled = {
        ((o.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
        for o in rendered
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    out = []
    for obj in rendered:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind not in _KIND_NAMES:
            continue
        ref = f"{kind}/{name}"
        current = live.get((kind, name))
        if current is None:
            out.append(
                difference(
                    "object",
                    ref,
                    "",
                    live=None,
                    expected="present",
                    message=f"{ref}: missing (release {release} renders it)",
                )
            )
            continue
        if kind == "Deployment":
            want, have = (obj.get("spec") or {}).get("replicas"), (current.get("spec") or {}).get("replicas")
            if want is not None and want != have and name not in autoscaled:
                out.append(
                    difference(
                        "object",
                        ref,
                        "spec.replicas",
                        live=have,
                        expected=want,
                        message=f"{ref}: {have} replicas, release {release} sets {want}",
                    )
                )
            want_images = _images(((obj.get("spec") or {}).get("template") or {}).get("spec"))
            have_images = _images(((current.get("spec") or {}).get("template") or {}).get("spec"))
            if want_images != have_images:
                out.append(
                    difference(
                        "object",
                        ref,
                        "images",
                        live=have_images,
                        expected=want_images,
                        message=f"{ref}: image {','.join(have_images)}, release {release} sets {','.join(want_images)}",
                    )
                )
        elif kind == "ConfigMap" and _canonical(obj.get("data") or {}) != _canonical(current.get("data") or {}):
            keys = [k for k, _, _ in value_changes(current.get("data") or {}, obj.get("data") or {})]
            out.append(
                difference(
                    "object",
                    ref,
                    "data",
                    live=sorted(keys),
                    expected=None,
                    message=f"{ref}: data differs from release {release} ({', '.join(sorted(keys))})",
                )
            )
    return out


def release_differences(
    name: str, release: dict | None, expected_values: dict, expected_chart_version: str, chart_name: str
) -> list[dict]:
    """How one service's release differs from what the inventory would deploy."""
    if release is None:
        return [
            difference(
                "release",
                name,
                "",
                live=None,
                expected="installed",
                message=f"release {name}: not installed (the inventory enables it)",
            )
        ]
    out = []
    if release["status"] != HEALTHY_STATUS:
        out.append(
            difference(
                "release",
                name,
                "status",
                live=release["status"],
                expected=HEALTHY_STATUS,
                message=f"release {name}: status {release['status']} at revision {release['revision']}",
            )
        )
    have_chart = chart_version(release["chart"], chart_name)
    if have_chart != expected_chart_version:
        out.append(
            difference(
                "release",
                name,
                "chart",
                live=have_chart,
                expected=expected_chart_version,
                message=f"release {name}: chart {release['chart']}, the inventory deploys {expected_chart_version}",
            )
        )
    live_values = {k: v for k, v in (release.get("values") or {}).items() if k != SECRET_CHECKSUM_KEY}
    want_values = {k: v for k, v in (expected_values or {}).items() if k != SECRET_CHECKSUM_KEY}
    changes = value_changes(_canonical(live_values), _canonical(want_values))
    if changes:
        detail = ", ".join(f"{key} {_short(live)} (inventory {_short(want)})" for key, live, want in changes)
        out.append(
            difference(
                "release",
                name,
                "values",
                live={k: v for k, v, _ in changes},
                expected={k: w for k, _, w in changes},
                message=f"release {name}: values differ from the inventory: {detail}",
            )
        )
    return out


def secret_differences(name: str, release: dict | None, secret_checksums: dict) -> list[dict]:
    """A service's Secret against the checksum its release was deployed with (secretChecksum):
    an edit made outside the toolkit changes the data but not the release."""
    values = (release or {}).get("values") or {}
    secret = values.get("existingSecret") or ""
    if not release or not secret:
        return []
    live = (secret_checksums or {}).get(name)
    if live is None:
        return [
            difference(
                "secret", f"Secret/{secret}", "", live=None, expected="present", message=f"Secret/{secret}: missing"
            )
        ]
    if live != values.get(SECRET_CHECKSUM_KEY, ""):
        return [
            difference(
                "secret",
                f"Secret/{secret}",
                "data",
                live=live,
                expected=values.get(SECRET_CHECKSUM_KEY, ""),
                message=f"Secret/{secret}: edited outside the toolkit (not release {name}'s secretChecksum)",
            )
        ]
    return []


def with_live_replicas(plan: dict, deployments: list[dict]) -> dict:
    """The deploy's plan with every release marked changed whose Deployment runs other replicas
    than its values set (scaled by hand; only without an autoscaler, which owns them then), so
    that the deploy runs it; ``rescale`` tells it to scale the Deployment back (Helm would find
    nothing to upgrade when the values are unchanged), ``helm`` whether Helm has a change of its own."""
    live = {
        (item.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/instance"): item
        for item in deployments or []
    }
    out = {}
    for service, entry in plan.items():
        values = entry.get("values") or {}
        current = live.get(service)
        scaled = (
            current is not None
            and not (values.get("autoscaling") or {}).get("enabled", False)
            and (current.get("spec") or {}).get("replicas") != values.get("replicaCount", 1)
        )
        # helm: whether Helm itself has something to install or upgrade (its hooks run then).
        out[service] = (
            {
                **entry,
                "changed": True,
                "rescale": True,
                "helm": bool(entry.get("changed")),
                "live_replicas": (current.get("spec") or {}).get("replicas"),
            }
            if scaled
            else entry
        )
    return out


def unready(live_items: list[dict]) -> list[dict]:
    """The Deployments whose Ready or updated replicas fall short of what they ask for."""
    out = []
    for item in live_items or []:
        if item.get("kind") != "Deployment":
            continue
        wanted = (item.get("spec") or {}).get("replicas", 1)
        status = item.get("status") or {}
        ready, updated = status.get("readyReplicas", 0), status.get("updatedReplicas", 0)
        if ready < wanted or updated < wanted:
            ref = f"Deployment/{item['metadata']['name']}"
            out.append(
                difference(
                    "health",
                    ref,
                    "readyReplicas",
                    live=ready,
                    expected=wanted,
                    message=f"{ref}: {ready}/{wanted} Ready",
                )
            )
    return out


def drift_report(
    state: dict, desired: dict, chart_version_expected: str, secret_checksums: dict, context: dict
) -> dict:
    """Everything that differs between the live ``state`` (openpolicy_live_state's result:
    releases by name, objects) and ``desired`` ({service: chart values}: the deploy's plan).

    ``context``: environment, namespace, chart_name. Returns {environment, namespace, chart_version,
    differences, unhealthy, live}; ``live`` is {service: {version, revision, status}}, what a
    promotion pins."""
    chart_name = context.get("chart_name", "openpolicy-service")
    releases = state.get("releases") or {}
    objects = state.get("objects") or []
    differences: list[dict] = []
    for name in sorted(desired or {}):
        release = releases.get(name)
        differences += release_differences(name, release, desired[name], chart_version_expected, chart_name)
        differences += secret_differences(name, release, secret_checksums)
        if release:
            differences += object_differences(name, release.get("objects") or [], objects)
    for name in sorted(set(releases) - set(desired or {})):
        differences.append(
            difference(
                "release",
                name,
                "",
                live="installed",
                expected=None,
                message=f"release {name}: installed, but the inventory does not enable it",
            )
        )
    unhealthy = [d for d in differences if d["field"] == "status"] + unready(objects)
    return {
        "environment": context.get("environment", ""),
        "namespace": context.get("namespace", ""),
        "chart_version": chart_version_expected,
        "differences": differences,
        "unhealthy": unhealthy,
        "live": {
            name: {
                "version": str(
                    ((release.get("values") or {}).get("image") or {}).get("tag") or release.get("app_version", "")
                ),
                "revision": release["revision"],
                "status": release["status"],
            }
            for name, release in sorted(releases.items())
        },
    }


def promotion_errors(report: dict, source: str, enabled_in_target: list[str]) -> list[str]:
    """Why the source's live set cannot be promoted, one line each (empty: it can)."""
    errors = []
    if report["unhealthy"]:
        errors.append(
            f"promote: {source}'s live set is not healthy: " + "; ".join(d["message"] for d in report["unhealthy"])
        )
    drift = [d for d in report["differences"] if d not in report["unhealthy"]]
    if drift:
        errors.append(
            f"promote: {source}'s live set differs from its inventory: " + "; ".join(d["message"] for d in drift)
        )
    if missing := [n for n in enabled_in_target or [] if n not in report["live"]]:
        errors.append(f"promote: {source} runs no release of {', '.join(missing)}, which the target enables")
    return errors


_PINS_KEY = re.compile(r"^service_releases_versions:.*$")


def pins_text(text: str, versions: dict) -> str:
    """The inventory file ``text`` (group_vars/all/services.yml) with its ``service_releases_versions``
    mapping replaced by ``versions`` (sorted, quoted), every other line and comment kept."""
    block = ["service_releases_versions:"] + [f'  {name}: "{versions[name]}"' for name in sorted(versions)]
    lines = text.splitlines()
    out, index, found = [], 0, False
    while index < len(lines):
        line = lines[index]
        if _PINS_KEY.match(line):
            found = True
            out += block
            index += 1
            # The old mapping's entries: indented lines (and blank lines inside it).
            while index < len(lines) and (lines[index].startswith((" ", "\t")) or not lines[index].strip()):
                if not lines[index].strip() and (index + 1 >= len(lines) or not lines[index + 1].startswith(" ")):
                    break
                index += 1
            continue
        out.append(line)
        index += 1
    if not found:
        out += block
    return "\n".join(out) + "\n"


def promotion_input_errors(inputs: dict) -> list[str]:
    """Every problem with promote.yml's extra-vars, one line each: from and to given, known, not
    the same, from is the environment of the inventory run against (its cluster is read), and
    the target's pins file exists. ``inputs``: from, to, environments, inventory_environment,
    pins_file, pins_file_exists."""
    source, target = str(inputs.get("from") or ""), str(inputs.get("to") or "")
    known = list(inputs.get("environments") or [])
    expected = f"expected one of {', '.join(known)}"
    errors = []
    for key, value in (("from", source), ("to", target)):
        if not value:
            errors.append(f"{key}: missing; run promote.yml -e from=<environment> -e to=<environment> ({expected})")
        elif value not in known:
            errors.append(f"{key}: unknown environment '{value}'; {expected}")
    if source and source == target:
        errors.append(
            f"to: expected another environment than from ({source}); a promotion copies versions to another one"
        )
    inventory = str(inputs.get("inventory_environment") or "")
    if source in known and inventory != source:
        errors.append(
            f"from: {source}, but the inventory is {inventory}'s; expected -i inventories/{source} (its cluster)"
        )
    if target in known and target != source and not inputs.get("pins_file_exists"):
        errors.append(f"to: no pins file {inputs.get('pins_file')}; expected the inventory of {target}")
    return errors
