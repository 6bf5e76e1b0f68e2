"""The logic behind the filters of roles/service_releases and roles/release_set (plugins/module_utils)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform
from ansible_collections.openpolicy.deploy.plugins.module_utils import inputs as checks
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_state

from tests.charts import render
from tests.helpers import load_filter_plugin

REPO = Path(__file__).resolve().parents[2]

CATALOG = yaml.safe_load((REPO / "catalog" / "services.yml").read_text())


def render_settings(name: str, environment: str) -> dict:
    """The inventory settings that stand for tests/charts/render.py's test stand-ins."""
    return render.settings(name, environment)


@pytest.mark.parametrize("environment", ["local", "dev", "staging", "production"])
@pytest.mark.parametrize("name", [s["name"] for s in CATALOG["services"]])
def test_values_mirror_the_chart_tests_mapping(name: str, environment: str):
    values = platform.service_values(CATALOG, name, render_settings(name, environment))
    expected = render.service_values(name, environment)
    values.pop("secretChecksum")
    assert values == expected


def test_overrides_are_merged_last_and_version_is_the_tag():
    settings = render_settings("auth-service", "local") | {
        "version": "1.5.0",
        "overrides": {"podLabels": {"openpolicy.dev/simulate": "crashloop"}, "migration": {"backoffLimit": 0}},
    }
    values = platform.service_values(CATALOG, "auth-service", settings)
    assert values["image"]["tag"] == "1.5.0"
    assert values["podLabels"] == {"openpolicy.dev/simulate": "crashloop"}
    assert values["migration"]["backoffLimit"] == 0 and values["migration"]["enabled"] is True


def test_autoscaling_true_only_where_the_catalog_has_bounds():
    base = render_settings("health-service", "dev") | {"autoscaling": True}
    assert "autoscaling" not in platform.service_values(CATALOG, "health-service", base)
    auth = platform.service_values(CATALOG, "auth-service", base)
    assert auth["autoscaling"]["minReplicas"] == 2 and auth["autoscaling"]["maxReplicas"] == 10


def test_checksum_ignores_key_order():
    assert platform.values_checksum({"a": 1, "b": [1, 2]}) == platform.values_checksum({"b": [1, 2], "a": 1})
    assert platform.values_checksum({"a": 1}) != platform.values_checksum({"a": 2})


def helm_history_item(revision: int, status: str, tag: str, description: str = "") -> dict:
    """One item of `helm history NAME -o json`."""
    return {
        "revision": revision,
        "updated": f"2026-01-01T00:00:0{revision}Z",
        "status": status,
        "chart": "openpolicy-service-0.1.0",
        "app_version": "0.1.0",
        "description": description,
    }


def history(*entries: tuple) -> dict:
    """{name: release} from Helm's history and each revision's values (`helm get values -o json`)."""
    items = [helm_history_item(*entry) for entry in entries]
    values = {entry[0]: {"image": {"tag": entry[2]}} for entry in entries}
    return {"auth-service": release_state.release(items, values)}


def test_release_history_reads_into_history_and_deployed():
    releases = history(
        (2, "failed", "1.5.0", "Upgrade failed: hook"),
        (1, "superseded", "1.4.2"),
        (3, "deployed", "1.4.2", "Rollback to 1"),
    )
    release = releases["auth-service"]
    assert [e["revision"] for e in release["history"]] == [1, 2, 3]
    assert release["deployed"]["revision"] == 3 and release["deployed"]["app_version"] == "1.4.2"
    assert release["history"][0]["values_checksum"] == release["history"][2]["values_checksum"]


def test_failed_upgrade_names_failed_and_serving_revision():
    releases = history(
        (1, "superseded", "1.4.2"),
        (2, "failed", "1.5.0", "Upgrade failed:\n hook"),
        (3, "deployed", "1.4.2", "Rollback to 1"),
    )
    line = release_state.failed_upgrade("auth-service", releases["auth-service"])
    assert (
        line == "service auth-service: revision 2 failed, revision 3 is serving (Rollback to 1): Upgrade failed: hook"
    )
    assert "no revision is serving" in release_state.failed_upgrade("auth-service", None, "timed out")


def test_a_failed_first_install_names_the_hook_resource_from_helms_error():
    """Helm 4's stderr when a migration hook never completes (its pod stayed Pending): the log
    line before its error used to take the whole message and cut off the Job and why."""
    stderr = (
        'level=INFO msg="error outputting logs for hook failure: failed to stream pod logs for pod: '
        'etl-service-migration-fcgnq, container: migration"\n'
        "Error: release etl-service failed, and has been uninstalled due to rollback-on-failure being set: "
        "failed pre-install: resource Job/s42/etl-service-migration not ready. status: InProgress, "
        "message: Job in progress\ncontext deadline exceeded\n"
    )
    line = release_state.failed_upgrade("etl-service", None, stderr)
    assert line == (
        "service etl-service: the upgrade failed, no revision is serving (the first install was removed): "
        "release etl-service failed, and has been uninstalled due to rollback-on-failure being set: "
        "failed pre-install: resource Job/s42/etl-service-migration not ready. status: InProgress, "
        "message: Job in progress context deadline exceeded"
    )
    assert release_state.helm_error("x" * 400).endswith("...")
    assert len(release_state.helm_error("x" * 400)) == release_state.HELM_ERROR_CHARS
    # The rollback's failure line (roles/service_releases/tasks/failed.yml) reads it as a filter.
    helm_error = load_filter_plugin("openpolicy_releases").FilterModule().filters()["openpolicy_helm_error"]
    assert helm_error(stderr) == line.split("(the first install was removed): ")[1]


def test_previous_revision_skips_failed_and_same_content():
    releases = history(
        (1, "superseded", "1.3.0"),
        (2, "superseded", "1.4.2"),
        (3, "failed", "1.5.0"),
        (4, "deployed", "1.4.2", "Rollback to 2"),
    )
    assert release_state.previous_revision(releases["auth-service"]) == 1
    assert release_state.previous_revision(history((1, "deployed", "1.4.2"))["auth-service"]) == 0


def set_configmap(number: int, previous: int, services: dict) -> dict:
    return {
        "metadata": {"name": f"openpolicy-release-set-{number}", "labels": {release_state.SET_LABEL: str(number)}},
        "data": {
            "set": str(number),
            "previous": str(previous),
            "reason": "deploy",
            "services.json": json.dumps(services),
        },
    }


def test_release_sets_sorted_and_compared_without_time():
    live = release_state.live_services(history((1, "deployed", "1.4.2")))
    sets = release_state.release_sets([set_configmap(2, 1, live), set_configmap(1, 0, {})])
    assert [s["number"] for s in sets] == [1, 2]
    assert release_state.same_set(live, sets[-1])
    moved = {"auth-service": live["auth-service"] | {"revision": 2}}
    assert not release_state.same_set(moved, sets[-1])
    assert not release_state.same_set(live, None)


def test_rollback_targets_only_what_differs_and_reports_what_helm_dropped():
    releases = history((1, "superseded", "1.4.2"), (2, "deployed", "1.5.0"))
    target = {"services": release_state.live_services(history((1, "deployed", "1.4.2")))}
    assert release_state.rollback_targets(target, releases) == {"targets": {"auth-service": 1}, "missing": []}
    same = {"services": release_state.live_services(releases)}
    assert release_state.rollback_targets(same, releases) == {"targets": {}, "missing": []}
    gone = {"services": {"auth-service": target["services"]["auth-service"] | {"revision": 7}}}
    assert release_state.rollback_targets(gone, releases)["missing"] == ["auth-service revision 7"]


def test_placeholder_secrets_hold_only_the_keys_the_service_reads():
    names = ["auth-service", "api-gateway", "notification-service"]
    pairs = platform.placeholder_passwords(CATALOG, names)
    passwords = {f"{service}/{which}": f"pw-{service}-{which}" for service, which in pairs}
    secrets = platform.placeholder_secrets(CATALOG, names, passwords, "127.0.0.1", "127.0.0.1")
    by_name = {s["metadata"]["name"]: s for s in secrets}
    assert sorted(by_name) == ["auth-service-secrets", "notification-service-secrets"]
    auth = {k: base64.b64decode(v).decode() for k, v in by_name["auth-service-secrets"]["data"].items()}
    assert set(auth) == {"database_url", "redis_url", "jwt_signing_key"}
    assert auth["database_url"] == (
        "postgresql://auth:pw-auth-service-database_password@127.0.0.1:5432/openpolicy?sslmode=require"
    )
    assert auth["redis_url"] == "redis://auth_service:pw-auth-service-redis_password@127.0.0.1:6379/0"
    checksums = platform.secret_checksums(secrets)
    assert set(checksums) == {"auth-service", "notification-service"} and all(len(c) == 64 for c in checksums.values())


def test_table_aligns_columns():
    lines = release_state.table([{"service": "auth-service", "revision": 3}], ["service", "revision"])
    assert lines == ["service       revision", "auth-service  3"]


GOOD_INPUTS = {
    "environment": "production",
    "enabled": ["auth-service", "api-gateway"],
    "selected": "",
    "versions": {"auth-service": "1.4.2", "api-gateway": "1.4.2"},
    "default_version": "",
    "version_override": "",
    "require_pinned": True,
    "confirm_required": True,
    "confirm": "production",
    "timeout": 300,
    "history_max": 10,
    "placeholder_secrets": False,
}


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"selected": "auth-service,billing"}, "services"),
        ({"selected": ["policy-service"]}, "services"),
        ({"enabled": ["auth-service", "nope"]}, "service_releases_enabled"),
        ({"versions": {"auth-service": "latest", "api-gateway": "1.4.2"}}, "service_releases_versions.auth-service"),
        ({"versions": {"auth-service": "1.4.2"}}, "service_releases_versions"),
        ({"selected": "auth-service,api-gateway", "version_override": "1.5.0"}, "version"),
        ({"selected": "auth-service", "version_override": "1.5"}, "version"),
        ({"confirm": ""}, "confirm"),
        ({"timeout": 0}, "service_releases_timeout"),
        ({"placeholder_secrets": True}, "service_releases_placeholder_secrets"),
    ],
)
def test_release_input_errors_name_the_setting(change: dict, setting: str):
    assert checks.release_input_errors(CATALOG, GOOD_INPUTS) == []
    errors = checks.release_input_errors(CATALOG, GOOD_INPUTS | change)
    assert errors and setting in errors[0].split(":")[0].split("/"), errors
    assert all("\n" not in e for e in errors)


@pytest.mark.parametrize(
    ("inputs", "setting"),
    [
        ({"service": "auth-service", "revision": "two"}, "revision"),
        ({"revision": "3"}, "revision"),
        ({"release_set": "last"}, "release_set"),
        ({"service": "billing"}, "service"),
        ({"service": "auth-service", "release_set": "3"}, "release_set"),
        ({"keep": 1}, "release_set_keep"),
    ],
)
def test_rollback_input_errors_name_the_setting(inputs: dict, setting: str):
    assert checks.rollback_input_errors(CATALOG, {"service": "auth-service", "revision": "3"}) == []
    errors = checks.rollback_input_errors(CATALOG, inputs)
    assert errors and errors[0].startswith(f"{setting}:"), errors


def test_only_differing_placeholder_secrets_are_applied():
    pairs = platform.placeholder_passwords(CATALOG, ["auth-service", "config-service"])
    secrets = platform.placeholder_secrets(
        CATALOG,
        ["auth-service", "config-service"],
        dict.fromkeys((f"{a}/{b}" for a, b in pairs), "pw"),
        "127.0.0.1",
        "127.0.0.1",
    )
    listing = {"items": [secrets[0]]}
    assert [s["metadata"]["name"] for s in release_state.secrets_to_apply(secrets, listing)] == [
        "config-service-secrets"
    ]
    assert release_state.object_names(json.dumps(listing)) == ["auth-service-secrets"]
    changed = dict(secrets[0], data=dict.fromkeys(secrets[0]["data"], "Y2hhbmdlZA=="))
    by_verb = release_state.secrets_to_send([changed, secrets[1]], json.dumps(listing))
    assert {verb: [s["metadata"]["name"] for s in items] for verb, items in by_verb.items()} == {
        "create": ["config-service-secrets"],
        "replace": ["auth-service-secrets"],
    }
