"""plugins/module_utils/release_diff.py: the plan of deploy.yml --check and the migrations that
take a restore point, on plain data."""

from __future__ import annotations

import json

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_diff, release_state

from tests.unit.test_drift import VALUES as DRIFT_VALUES

# The drift tests' values of auth-service, as a chart with a migration hook renders them.
VALUES = {
    **DRIFT_VALUES,
    "replicaCount": 1,
    "secretChecksum": "sha256:old",  # pragma: allowlist secret
    "migration": {"enabled": True},
}  # pragma: allowlist secret


def _values(**changes) -> dict:
    values = json.loads(json.dumps(VALUES))
    for key, value in changes.items():
        node = values
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return values


def _manifest(tag: str, replicas: int = 1, extra: str = "") -> str:
    return (
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "auth-service"},
                    "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": f"x:{tag}"}]}}},
                },
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "auth-service"}, "spec": {"port": 8080}},
            ]
        )
        + extra
    )


DEPLOYED = {"values": VALUES, "manifest": _manifest("1.4.2"), "chart_version": "0.1.0"}
SUMMARY = {"auth-service": {"revision": 2, "app_version": "1.4.2", "chart_version": "0.1.0"}}


def test_an_upgrade_names_versions_values_objects_and_the_migration():
    wanted = _values(image__tag="1.5.0", config__LOG_LEVEL="debug")
    change = release_diff.release_change(
        "auth-service", {"values": wanted, "changed": True}, DEPLOYED, {"manifest": _manifest("1.5.0")}, "0.1.0"
    )
    assert change["action"] == "upgrade" and change["migration"] is True
    assert change["values"] == ["config.LOG_LEVEL: info -> debug", "image.tag: 1.4.2 -> 1.5.0"]
    assert change["objects"] == ["~Deployment/auth-service"]
    assert change["line"] == (
        "auth-service: upgrade 1.4.2 -> 1.5.0; values config.LOG_LEVEL: info -> debug; image.tag: 1.4.2 -> 1.5.0;"
        " objects ~Deployment/auth-service; migration hook runs"
    )


def test_secret_keys_are_masked_and_objects_only_named():
    fake = "hunter2-not-a-real-one"  # pragma: allowlist secret
    wanted = _values(secretChecksum="sha256:new", config__DB_PASSWORD=fake)
    rendered = _manifest("1.4.2", extra="---\napiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {k: c2VjcmV0}\n")
    change = release_diff.release_change(
        "auth-service", {"values": wanted, "changed": True}, DEPLOYED, {"manifest": rendered}
    )
    text = json.dumps(change)
    assert "hunter2" not in text and "sha256:new" not in text and "c2VjcmV0" not in text
    assert change["values"] == ["config.DB_PASSWORD: changed (masked)", "secretChecksum: changed (masked)"]
    assert change["objects"] == ["+Secret/x"]
    assert change["diff"]["after"] == "config.DB_PASSWORD: (masked)\nsecretChecksum: (masked)\n"


@pytest.mark.parametrize(
    ("entry", "deployed", "action", "line"),
    [
        ({"values": VALUES, "changed": False}, DEPLOYED, "none", "auth-service: no change (1.4.2)"),
        ({"values": VALUES, "changed": True}, None, "install",
         "auth-service: install 1.4.2; objects +Deployment/auth-service, +Service/auth-service; migration hook runs"),
        ({"values": VALUES, "changed": True, "rescale": True, "helm": False, "live_replicas": 3}, DEPLOYED, "rescale",
         "auth-service: scale back; objects ~Deployment/auth-service (replicas 3 -> 1)"),
    ],
    ids=["unchanged", "install", "scaled by hand"],
)  # fmt: skip
def test_each_kind_of_change_has_its_line(entry, deployed, action, line):
    dry_run = {"manifest": _manifest("1.4.2")} if release_diff.helm_changes(entry) else None
    change = release_diff.release_change("auth-service", entry, deployed, dry_run)
    assert (change["action"], change["line"]) == (action, line)


def test_the_chart_version_shows_when_it_changes():
    change = release_diff.release_change(
        "auth-service", {"values": VALUES, "changed": True}, DEPLOYED, {"manifest": DEPLOYED["manifest"]}, "0.2.0"
    )
    assert change["line"] == "auth-service: upgrade 1.4.2 (chart 0.1.0 -> 0.2.0); values unchanged; migration hook runs"


def test_the_summary_says_nothing_changed_and_names_the_restore_point():
    changes = [
        release_diff.release_change("auth-service", {"values": VALUES, "changed": False}, DEPLOYED, None),
        release_diff.release_change(
            "policy-service", {"values": _values(image__tag="1.5.0"), "changed": True}, DEPLOYED, {"manifest": ""}
        ),
    ]
    lines = release_diff.plan_summary(changes, ["policy-service"], "openpolicy-staging")
    assert lines[-1] == (
        "plan for openpolicy-staging: 1 of 2 releases change, nothing was changed (--check);"
        " a restore point is taken first (migrations of policy-service)"
    )


@pytest.mark.parametrize(
    ("entry", "deployed", "migrating"),
    [
        ({"values": _values(image__tag="1.5.0"), "changed": True}, SUMMARY, True),
        ({"values": _values(image__tag="1.4.1"), "changed": True}, SUMMARY, True),
        ({"values": _values(migration={"enabled": False}, image__tag="1.5.0"), "changed": True}, SUMMARY, False),
        ({"values": _values(image__tag="1.5.0"), "changed": True}, {}, False),
        ({"values": _values(secretChecksum="sha256:new", replicaCount=2), "changed": True}, SUMMARY, False),
        ({"values": VALUES, "changed": True, "rescale": True, "helm": False}, SUMMARY, False),
        ({"values": _values(image__tag="1.5.0"), "changed": False}, SUMMARY, False),
    ],
    ids=["new version", "older version", "no migration hook", "first install", "settings only", "scaled by hand",
         "unchanged"],
)  # fmt: skip
def test_a_restore_point_is_taken_only_before_a_new_migration(entry, deployed, migrating):
    assert release_diff.migrations({"auth-service": entry}, deployed, "0.1.0") == (
        ["auth-service"] if migrating else []
    )


def test_a_new_chart_version_of_a_migrating_service_takes_a_restore_point():
    plan = {"auth-service": {"values": VALUES, "changed": True}}
    assert release_diff.migrations(plan, SUMMARY, "0.2.0") == ["auth-service"]


def test_a_set_records_the_restore_point_on_the_services_that_migrated_after_it():
    live = {"api-gateway": {"revision": 2}, "policy-service": {"revision": 3}}
    recorded = release_state.with_backup_label(live, "20261201-101500F_20261201-102210I", ["policy-service"])
    assert recorded == {
        "api-gateway": {"revision": 2, "backup_label": ""},
        "policy-service": {"revision": 3, "backup_label": "20261201-101500F_20261201-102210I"},
    }
