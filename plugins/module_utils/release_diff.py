"""What a deploy would change, release by release (`deploy.yml --check --diff`), and which of its
upgrades run a migration (the restore point before them).

Pure functions over the deploy's plan (openpolicy_release_plan + openpolicy_with_live_replicas),
Helm's deployed user values and manifest (``helm get values -o json``, ``helm get manifest``) and
the release Helm would make (``helm upgrade --install --dry-run=server --hide-secret -o json``);
the module release_diff runs those commands. Values whose key names a secret are masked: a line
says the key changed, never its value. Unit-tested in tests/unit/test_release_diff.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ansible_collections.openpolicy.deploy.plugins.module_utils.openpolicy_drift import (
    manifest_objects,
    value_changes,
)

MASK = "(masked)"
# A key path with one of these words in one of its parts is masked (the chart takes no secret as a
# value, so this only hides names and checksums of Secrets: a safety net, not a vault).
_SECRET_WORDS = re.compile(r"password|passwd|secret|token|credential|private|apikey|api_key", re.IGNORECASE)


def masked(path: str) -> bool:
    return any(_SECRET_WORDS.search(part) for part in path.split("."))


def _text(value: Any, limit: int = 60) -> str:
    if value is None:
        return "(unset)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def values_changes(deployed: dict | None, wanted: dict | None) -> list[tuple[str, str, str]]:
    """(key, old, new) as text for every leaf of the chart values that differs, secrets masked."""
    plain = json.loads(json.dumps(deployed or {}, sort_keys=True, default=str))
    want = json.loads(json.dumps(wanted or {}, sort_keys=True, default=str))
    return [
        (key, MASK, MASK) if masked(key) else (key, _text(old), _text(new))
        for key, old, new in value_changes(plain, want)
    ]


def values_lines(changes: list[tuple[str, str, str]]) -> list[str]:
    return [f"{key}: changed {MASK}" if old == MASK else f"{key}: {old} -> {new}" for key, old, new in changes]


def _ref(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def object_changes(deployed: list[dict], rendered: list[dict]) -> list[str]:
    """The objects of a release that an upgrade adds (+), changes (~) or removes (-), by name
    only (never their content, so a Secret's data is never printed)."""
    before = {_ref(o): json.dumps(o, sort_keys=True, default=str) for o in deployed or []}
    after = {_ref(o): json.dumps(o, sort_keys=True, default=str) for o in rendered or []}
    out = [f"+{ref}" for ref in sorted(set(after) - set(before))]
    out += [f"~{ref}" for ref in sorted(set(after) & set(before)) if after[ref] != before[ref]]
    out += [f"-{ref}" for ref in sorted(set(before) - set(after))]
    return out


def runs_migration(entry: dict) -> bool:
    return bool(((entry.get("values") or {}).get("migration") or {}).get("enabled"))


def helm_changes(entry: dict) -> bool:
    """Whether Helm installs or upgrades the release (a Deployment scaled by hand whose values are
    unchanged is put back by the deploy without Helm, so without its migration hook)."""
    return bool(entry.get("helm", entry.get("changed")))


def migrations(plan: dict, deployed: dict, chart_version: str = "") -> list[str]:
    """The services whose upgrade in this run can change the schema: Helm upgrades the release,
    its chart runs a migration hook, and the version (image tag) or the chart changes, since only
    those bring a new migration. The restore point is taken before them. A first install migrates
    an empty schema, and an upgrade that only changes settings, replicas or a Secret reruns
    migrations already applied: neither needs one."""
    out = []
    for name, entry in sorted((plan or {}).items()):
        current = (deployed or {}).get(name)
        if not current or not helm_changes(entry) or not runs_migration(entry):
            continue
        version = str(((entry.get("values") or {}).get("image") or {}).get("tag", ""))
        if version != str(current.get("app_version", "")) or (
            chart_version and chart_version != current.get("chart_version")
        ):
            out.append(name)
    return out


def release_change(
    name: str, entry: dict, deployed: dict | None, dry_run: dict | None, chart_version: str = ""
) -> dict:
    """One release's change: {service, action (install, upgrade, rescale, none), version,
    values, objects, migration, line}. ``deployed`` is {values, manifest, chart_version} of the
    release serving now (None when not installed), ``dry_run`` the release Helm would make."""
    values = entry.get("values") or {}
    version = str((values.get("image") or {}).get("tag", ""))
    rendered = manifest_objects((dry_run or {}).get("manifest", ""))
    if deployed is None:
        action = "install"
    elif helm_changes(entry):
        action = "upgrade"
    elif entry.get("rescale"):
        action = "rescale"
    else:
        action = "none"
    before = str(((deployed or {}).get("values") or {}).get("image", {}).get("tag", "")) if deployed else ""
    changes = values_changes((deployed or {}).get("values"), values) if action in ("install", "upgrade") else []
    change = {
        "service": name,
        "action": action,
        "version": version,
        "from_version": before,
        "values": values_lines(changes),
        "objects": object_changes(manifest_objects((deployed or {}).get("manifest", "")), rendered)
        if action in ("install", "upgrade")
        else [],
        "migration": action in ("install", "upgrade") and runs_migration(entry),
        "chart": chart_version,
        "diff": diff(name, changes),
    }
    if action == "rescale":
        change["objects"] = [
            f"~Deployment/{name} (replicas {entry.get('live_replicas', '?')} -> {values.get('replicaCount', 1)})"
        ]
    change["line"] = change_line(change, deployed)
    return change


def diff(name: str, changes: list[tuple[str, str, str]]) -> dict:
    """The values change as Ansible's --diff shows it: the changed keys, serving and after."""
    return {
        "before_header": f"{name} (serving)",
        "after_header": f"{name} (after this deploy)",
        "before": "".join(f"{key}: {old}\n" for key, old, _ in changes),
        "after": "".join(f"{key}: {new}\n" for key, _, new in changes),
    }


def change_line(change: dict, deployed: dict | None) -> str:
    name, action = change["service"], change["action"]
    if action == "none":
        return f"{name}: no change ({change['version']})"
    if action == "install":
        head = f"{name}: install {change['version']}"
    elif action == "rescale":
        head = f"{name}: scale back"
    else:
        versions = (
            f"{change['from_version']} -> {change['version']}"
            if change["from_version"] != change["version"]
            else change["version"]
        )
        before = (deployed or {}).get("chart_version", "")
        chart = f" (chart {before} -> {change['chart']})" if change["chart"] and before != change["chart"] else ""
        head = f"{name}: upgrade {versions}{chart}"
    parts = [head]
    if action == "upgrade":
        parts.append("values " + ("; ".join(change["values"]) if change["values"] else "unchanged"))
    if change["objects"]:
        parts.append("objects " + ", ".join(change["objects"]))
    if change["migration"]:
        parts.append("migration hook runs")
    return "; ".join(parts)


def plan_summary(changes: list[dict], restore_point: list[str], namespace: str) -> list[str]:
    """The lines deploy.yml --check prints: one per release, then what it adds up to."""
    lines = [c["line"] for c in changes]
    moving = [c for c in changes if c["action"] != "none"]
    tail = f"plan for {namespace}: {len(moving)} of {len(changes)} releases change, nothing was changed (--check)"
    if restore_point:
        tail += f"; a restore point is taken first (migrations of {', '.join(restore_point)})"
    return [*lines, tail]
