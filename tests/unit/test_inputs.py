"""The operator's inputs, checked before anything is contacted: each bad input a new user tried
gives one line naming the setting typed and the expected form; several problems give several
lines in one run. Pure rules through plugins/module_utils/inputs.py; argument-spec ones through
the preflight (playbooks/preflight.yml on the control host only, nothing else is reached)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import inputs

from tests.helpers import REPO, failure_messages, load_plugin, run_playbook
from tests.unit.inventory_preflight import run_preflight

rules_cover_validate_tasks = load_plugin("action", "preflight").rules_cover_validate_tasks
CATALOG = yaml.safe_load((REPO / "catalog" / "services.yml").read_text())
CHART_KEYS = list(
    yaml.safe_load((REPO / "charts" / "openpolicy-service" / "values.schema.json").read_text())["properties"]
)
ENABLED = [s["name"] for s in CATALOG["services"]]
GOOD = {
    "environment": "local",
    "enabled": ENABLED,
    "selected": "",
    "versions": {},
    "default_version": "1.4.2",
    "timeout": 300,
    "history_max": 10,
    "replicas": 1,
    "service_settings": {},
    "values_overrides": {},
    "chart_keys": CHART_KEYS,
}

# case: (changed inputs, the setting the line names, what it says is expected)
RELEASE_CASES = {
    "typo in a service's settings": (
        {"service_settings": {"auth-service": {"replicsa": 3}}},
        "service_releases_service_settings.auth-service.replicsa",
        "expected some of replicas, resources, autoscaling",
    ),
    "negative replicas": (
        {"service_settings": {"auth-service": {"replicas": -1}}},
        "service_releases_service_settings.auth-service.replicas",
        "whole number from 0",
    ),
    "HPA min above max": (
        {"service_settings": {"auth-service": {"autoscaling": {"min": 6, "max": 2}}}},
        "service_releases_service_settings.auth-service.autoscaling",
        "min <= max",
    ),
    "memory lots": (
        {"service_settings": {"auth-service": {"resources": {"limits": {"memory": "lots"}}}}},
        "service_releases_service_settings.auth-service.resources.limits.memory",
        "256Mi",
    ),
    "unknown chart key in the overrides": (
        {"values_overrides": {"auth-service": {"replicas": 3}}},
        "service_releases_values_overrides.auth-service.replicas",
        "keys of charts/openpolicy-service/values.yaml",
    ),
    "services of commas only": ({"selected": ",,,"}, "services", "names no service"),
    "negative parallel Helms": ({"parallel": -1}, "service_releases_parallel", "whole number from 0"),
    "parallel Helms as words": ({"parallel": "many"}, "service_releases_parallel", "whole number from 0"),
    "a service listed twice": ({"selected": "auth-service,auth-service"}, "services", "each service once"),
    "unknown service": ({"selected": "billing"}, "services", "comma-separated list"),
    "version ending in a newline": (
        {"selected": "auth-service", "version_override": "1.5.0\n"},
        "version",
        "a version like 1.4.2",
    ),
    "pinned version ending in a newline": (
        {"versions": {"auth-service": "1.5.0\n"}},
        "service_releases_versions.auth-service",
        "MAJOR.MINOR.PATCH",
    ),
    "production without confirmation": (
        {"environment": "production", "confirm_required": True, "confirm": "prod"},
        "confirm",
        "-e confirm=production",
    ),
}
ROLLBACK_CASES = {
    "revision ending in a newline": ({"service": "auth-service", "revision": "3\n"}, "revision", "whole number"),
    "set ending in a newline": ({"release_set": "2\n"}, "release_set", "previous or the number"),
    "unknown service": ({"service": "auth\n"}, "service", "one of"),
}


@pytest.mark.parametrize("case", list(RELEASE_CASES))
def test_release_inputs_name_the_setting_and_the_form(case: str):
    change, setting, expected = RELEASE_CASES[case]
    assert inputs.release_input_errors(CATALOG, GOOD) == []
    errors = inputs.release_input_errors(CATALOG, GOOD | change)
    assert len(errors) == 1, errors
    assert errors[0].startswith(setting + ":"), errors[0]
    assert expected in errors[0] and "\n" not in errors[0], errors[0]


@pytest.mark.parametrize("case", list(ROLLBACK_CASES))
def test_rollback_inputs_name_the_setting_and_the_form(case: str):
    change, setting, expected = ROLLBACK_CASES[case]
    errors = inputs.rollback_input_errors(CATALOG, change)
    assert errors and errors[0].startswith(setting + ":") and expected in errors[0], errors


def test_every_problem_is_reported_at_once():
    errors = inputs.release_input_errors(
        CATALOG,
        GOOD
        | {
            "selected": "auth-service,auth-service",
            "service_settings": {"auth-service": {"replicsa": 3, "replicas": -1}},
            "values_overrides": {"auth-service": {"replicas": 3}},
        },
    )
    assert [e.split(":")[0] for e in errors] == [
        "services",
        "service_releases_service_settings.auth-service.replicsa",
        "service_releases_service_settings.auth-service.replicas",
        "service_releases_values_overrides.auth-service.replicas",
    ]


def test_patterns_match_whole_values():
    assert inputs.matches(inputs.VERSION, "1.5.0")
    assert not inputs.matches(inputs.VERSION, "1.5.0\n")
    assert not inputs.matches(inputs.MEMORY, "256Mi\n")


# Argument-spec inputs, through the preflight: (playbook, extra-vars, the line's start, expected form)
PREFLIGHT_CASES = {
    "rotation of an unknown kind": (
        "rotate_secrets.yml",
        {"kind": "ssh_key"},
        "preflight: kind:",
        "one of database_password, jwt_signing_key, redis_password",
    ),
    "backup of an unknown type": ("backup.yml", {"type": "weekly"}, "preflight: type:", "one of full, diff, incr"),
    "nodes not a number": (
        "preflight.yml",
        {"k8s_cluster_nodes": "three"},
        "preflight: k8s_cluster_nodes:",
        "a whole number",
    ),
}


@pytest.mark.parametrize("case", list(PREFLIGHT_CASES))
def test_argument_spec_inputs_fail_in_one_line_naming_what_was_typed(case: str, tmp_path):
    playbook, extra, start, expected = PREFLIGHT_CASES[case]
    result = run_playbook(
        playbook,
        "--limit",
        "control",
        extra_vars={**extra, "secrets_vault_file": str(tmp_path / "vault.yml")},
    )
    assert result.returncode != 0, result.stdout[-2000:]
    lines = [m for m in failure_messages(result) if m.startswith("preflight:")]
    assert lines and lines[0].startswith(start) and expected in lines[0], result.stdout[-3000:]
    assert "argument_spec" not in result.stdout and "Validation of arguments failed" not in result.stdout
    assert not (tmp_path / "vault.yml").exists(), "the vault is written only after the preflight passed"


def test_the_preflight_runs_no_validate_task_that_repeats_the_rules_it_checked(tmp_path):
    """The rules of these roles are checked by the preflight's one task (plugins/action/preflight.py,
    `covered`); their validate tasks, which call the same rules, are not run again. pgbackrest's
    run only for a backup set or a target time, which are checked against the repository."""
    roles = [
        "k8s_cluster",
        "platform_baseline",
        "secrets",
        "service_releases",
        "release_set",
        "alertmanager",
        "pgbackrest",
    ]
    result = run_preflight(REPO / "inventories" / "local", tmp_path, roles)
    assert result.returncode == 0, result.stdout[-3000:]
    for repeated in (
        "pgbackrest : Check the passphrase, the repository host, the schedules, the stanza and the restore host",
        "k8s_cluster : Check the node count, the cluster name, the kubeconfig and the state",
        "platform_baseline : Check the namespace is a DNS label",
        "service_releases : Check the services, versions, confirmation and limits",
        "release_set : Check the rollback's service, revision and release set",
        "alertmanager : Check the receivers, routes and timings of Alertmanager",
    ):
        assert f"TASK [{repeated}]" not in result.stdout, repeated


CLUSTER = {"provider": "kwok", "state": "present", "nodes": 3, "name": "openpolicy-local", "kubeconfig": "/k"}
CLUSTER_CASES = {
    "no nodes": ({"nodes": 0}, True, ["k8s_cluster_nodes: expected a whole number from 1 to 1000, got 0"]),
    "too many nodes": ({"nodes": 1001}, True, ["k8s_cluster_nodes: expected a whole number from 1 to 1000, got 1001"]),
    "existing ignores nodes": ({"provider": "existing", "nodes": 0}, True, []),
    "bad name": (
        {"name": "Open_Policy"},
        True,
        ["k8s_cluster_name: expected lowercase letters, digits and '-' (at most 40), got Open_Policy"],
    ),
    "name of 41": (
        {"name": "a" * 41},
        True,
        [f"k8s_cluster_name: expected lowercase letters, digits and '-' (at most 40), got {'a' * 41}"],
    ),
    "missing kubeconfig": (
        {"provider": "existing"},
        False,
        [
            "k8s_cluster_kubeconfig: /k does not exist; provider existing expects the path of a kubeconfig file "
            "for the cluster"
        ],
    ),
    "kwok needs no kubeconfig yet": ({}, False, []),
    "remove existing": (
        {"provider": "existing", "state": "absent"},
        True,
        ["k8s_cluster_state: absent is only for provider kwok; the toolkit never deletes an existing cluster"],
    ),
}


@pytest.mark.parametrize("case", list(CLUSTER_CASES))
def test_cluster_inputs_name_the_setting_and_the_form(case: str):
    changed, kubeconfig_is_file, expected = CLUSTER_CASES[case]
    assert inputs.cluster_input_errors(CLUSTER | changed, kubeconfig_is_file) == expected


def test_namespace_and_secret_inputs_name_the_setting_and_the_form():
    assert inputs.namespace_input_errors("openpolicy-local") == []
    assert inputs.namespace_input_errors("Openpolicy") == [
        "platform_baseline_namespace: expected a DNS label (lowercase letters, digits and '-', at most 63), "
        "got Openpolicy"
    ]
    good = {"backend": "file", "kv_url": "", "kv_path": "", "password_length": 32, "passphrase_length": 48}
    assert inputs.secret_input_errors(good | {"password_min_length": 16}) == []
    assert inputs.secret_input_errors(good | {"password_min_length": 30}) == [
        "secrets_password_length/secrets_passphrase_length/secrets_password_min_length: generated passwords must "
        "meet the minimum (>= 12), passphrases twice it; got 32/48/30"
    ]
    assert inputs.secret_input_errors(
        good | {"password_min_length": 16, "backend": "vault", "kv_url": "vault:8200"}
    ) == ["secrets_kv_url/secrets_kv_path: secrets_backend vault needs an http(s) URL and a path, got vault:8200 "]


BACKUP = {
    "stanza": "openpolicy",
    "db_group": "db",
    "repo_group": "backup",
    "scratch_group": "db_scratch",
    "schedule_full": "30 1 * * 0",
    "schedule_diff": "",
    "schedule_incr": "30 0,2-23 * * *",
    "schedule_archive_status": "* * * * *",
    "restore_host": "",
    "repo_cipher_pass": "a-passphrase-of-24-chars",  # pragma: allowlist secret
}
GROUPS = {"db": ["db1"], "backup": ["backup1"], "db_scratch": ["scratch1"]}
BACKUP_CASES = {
    "weak passphrase": (
        {"repo_cipher_pass": "short"},  # pragma: allowlist secret
        GROUPS,
        "pgbackrest_repo_cipher_pass: missing or too weak; expected at least 20 characters without spaces or '#'",
    ),
    "two repository hosts": (
        {},
        GROUPS | {"backup": ["backup1", "backup2"]},
        "pgbackrest_repo_group: expected exactly one host in group backup to hold the repository, got 2",
    ),
    "bad schedule": (
        {"schedule_incr": "61 * * * *"},
        GROUPS,
        "pgbackrest_schedule_incr: not a valid cron expression (minute field '61'",
    ),
    "stanza with capitals": ({"stanza": "OpenPolicy"}, GROUPS, "pgbackrest_stanza: expected lowercase letters"),
    "restore host outside the groups": (
        {"restore_host": "backup1"},
        GROUPS,
        "restore_host: backup1 is in neither group db nor db_scratch",
    ),
}


@pytest.mark.parametrize("case", list(BACKUP_CASES))
def test_backup_inputs_name_the_setting_and_the_form(case: str):
    changed, groups, expected = BACKUP_CASES[case]
    found = inputs.backup_input_errors(BACKUP | changed, groups)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_backup_inputs_pass_as_the_inventories_set_them():
    assert inputs.backup_input_errors(BACKUP, GROUPS) == []
    # No db host: no repository needed. A passphrase not read yet (the vault comes later) is no error.
    assert inputs.backup_input_errors(BACKUP, {"backup": []}) == []
    unknown = {key: value for key, value in BACKUP.items() if key != "repo_cipher_pass"}
    assert inputs.backup_input_errors(unknown, GROUPS) == []
    assert inputs.backup_input_errors(BACKUP | {"restore_host": "scratch1"}, GROUPS) == []


def test_pgbackrest_validate_tasks_are_covered_only_without_a_set_or_a_time():
    values = {f"pgbackrest_{key}": value for key, value in BACKUP.items()}
    values |= {"pgbackrest_restore_set": "", "pgbackrest_restore_target_time": ""}
    assert rules_cover_validate_tasks("pgbackrest", {}, False, values)
    with_set = values | {"pgbackrest_restore_set": "20261126-013001F"}
    assert not rules_cover_validate_tasks("pgbackrest", {}, False, with_set)
    assert not rules_cover_validate_tasks(
        "pgbackrest", {}, False, values | {"pgbackrest_restore_target_time": "2026-11-26 01:30:00+00"}
    )
    # A setting not known in the preflight (set later in the run): the role's tasks check it.
    del values["pgbackrest_stanza"]
    assert not rules_cover_validate_tasks("pgbackrest", {}, False, values)


def test_the_preflight_checks_the_podman_hosts_in_its_one_task(tmp_path):
    """The podman hosts' logins are checked by the preflight's own task (inputs.host_problems,
    from every host's settings): a port two hosts share fails there, with the role's message,
    and the role's validate tasks do not run."""
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO / "inventories" / "local", inventory, ignore=shutil.ignore_patterns("credentials"))
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("ansible_port: 52202", "ansible_port: 52201"))
    result = run_preflight(inventory, tmp_path / "run", ["podman_hosts"])
    assert result.returncode != 0
    messages = failure_messages(result)
    assert any(
        m.startswith("preflight: ansible_port of openpolicy-local-db1: expected a port from 1024 to 65535")
        for m in messages
    ), messages
    assert "TASK [podman_hosts : Check every podman host's image flavor, SSH login and port]" not in result.stdout


def test_podman_hosts_are_covered_only_when_every_hosts_settings_were_worked_out():
    values = {
        "podman_hosts_groups": ["db"],
        "podman_hosts_ssh_address": "127.0.0.1",
        "podman_hosts_ssh_user": "deploy",
        "podman_hosts_default_flavor": "systemd",
    }
    hosts = {"db1": {"ansible_host": "127.0.0.1", "ansible_user": "deploy", "ansible_port": 52201}}
    assert rules_cover_validate_tasks("podman_hosts", {}, False, values | {"podman_hosts_hosts": hosts})
    # A host's login that could not be worked out in the preflight: the role's tasks check it.
    assert not rules_cover_validate_tasks("podman_hosts", {}, False, values)
