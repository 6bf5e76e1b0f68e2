"""Checks of the operator's inputs (inventory values and extra-vars) that argument specs cannot
express: every problem one line, naming the setting the operator typed (`-e` name or inventory
key) and the expected form. Pure functions, unit-tested in tests/unit/test_inputs.py; the
preflight (plugins/action/preflight.py) and the roles' validate entry points call them.

Patterns match whole values (re.fullmatch), so "1.5.0\\n" is not a version.
"""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.openpolicy.deploy.plugins.module_utils.catalog import plain
from ansible_collections.openpolicy.deploy.plugins.module_utils.cron import cron_error

VERSION = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?")
WHOLE = re.compile(r"[1-9][0-9]*")
CPU = re.compile(r"[0-9]+m|[0-9]+(\.[0-9]+)?")
MEMORY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?")
SERVICE_SETTING_KEYS = ("replicas", "resources", "autoscaling")
AUTOSCALING_KEYS = ("min", "max", "cpu_pct", "memory_pct")
MAX_REPLICAS = 100
# Helms a tier may run at once (service_releases_parallel): far past what any control host runs well.
MAX_PARALLEL = 200


def matches(pattern: re.Pattern, value: Any) -> bool:
    """True when the whole value matches (no trailing newline slips through as with `$`)."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and bool(pattern.fullmatch(str(value)))


def names(value: Any) -> list[str]:
    """`-e services=a,b` (a string) or a list, as a list of names (blanks dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in items if str(item).strip()]


def _whole(value: Any, low: int, high: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return low <= value <= high
    return isinstance(value, str) and bool(re.fullmatch(r"-?[0-9]+", value)) and low <= int(value) <= high


def selection_errors(setting: str, value: Any, known: list[str], what: str = "a comma-separated list of") -> list[str]:
    """A list of service names typed by the operator: present, known, each once."""
    if value in (None, "", []):
        return []
    chosen = names(value)
    if not chosen:
        return [f"{setting}: expected {what}: {', '.join(known)}; got {str(value)!r}, which names no service"]
    errors = []
    if unknown := [n for n in chosen if n not in known]:
        errors.append(f"{setting}: unknown service {', '.join(unknown)}; expected {what}: {', '.join(known)}")
    if twice := sorted({n for n in chosen if chosen.count(n) > 1}):
        errors.append(f"{setting}: {', '.join(twice)} listed more than once; expected each service once")
    return errors


def resources_errors(setting: str, resources: Any) -> list[str]:
    """{requests: {cpu, memory}, limits: {cpu, memory}} with Kubernetes quantities."""
    if not isinstance(resources, dict):
        return [
            f"{setting}: expected a mapping {{requests: {{cpu, memory}}, limits: {{cpu, memory}}}}, got {resources!r}"
        ]
    errors = []
    for part, amounts in resources.items():
        if part not in ("requests", "limits") or not isinstance(amounts, dict):
            errors.append(f"{setting}.{part}: expected requests or limits, each {{cpu: 100m, memory: 256Mi}}")
            continue
        for kind, amount in amounts.items():
            pattern = {"cpu": CPU, "memory": MEMORY}.get(kind)
            if pattern is None:
                errors.append(f"{setting}.{part}.{kind}: unknown resource; expected cpu or memory")
            elif not matches(pattern, amount):
                form = "cores like 500m or 1.5" if kind == "cpu" else "bytes like 256Mi, 1Gi or 512M"
                errors.append(f"{setting}.{part}.{kind}: expected {form}, got {amount!r}")
    return errors


def autoscaling_errors(setting: str, bounds: Any) -> list[str]:
    """false/true, or {min, max, cpu_pct, memory_pct} with 1 <= min <= max <= 100."""
    if isinstance(bounds, bool) or bounds is None:
        return []
    if not isinstance(bounds, dict):
        return [f"{setting}: expected true, false or {{min: 2, max: 6}}, got {bounds!r}"]
    errors = [
        f"{setting}.{key}: unknown key; expected some of {', '.join(AUTOSCALING_KEYS)}"
        for key in bounds
        if key not in AUTOSCALING_KEYS
    ]
    for key in AUTOSCALING_KEYS:
        if key in bounds and not _whole(bounds[key], 1, 100):
            errors.append(f"{setting}.{key}: expected a whole number from 1 to 100, got {bounds[key]!r}")
    low, high = bounds.get("min"), bounds.get("max")
    if _whole(low, 1, 100) and _whole(high, 1, 100) and int(low) > int(high):
        errors.append(f"{setting}: min {low} is above max {high}; expected min <= max")
    return errors


def service_settings_errors(
    known: list[str], settings: Any, prefix: str = "service_releases_service_settings"
) -> list[str]:
    """Per-service replicas, resources and autoscaling: no unknown service or key (a typo such as
    `replicsa` would otherwise be dropped silently), each value in its form."""
    if not isinstance(settings, dict):
        return [f"{prefix}: expected a mapping {{service: {{replicas, resources, autoscaling}}}}, got {settings!r}"]
    errors = []
    for name, own in settings.items():
        where = f"{prefix}.{name}"
        if name not in known:
            errors.append(f"{where}: unknown service; expected names from catalog/services.yml: {', '.join(known)}")
            continue
        if not isinstance(own, dict):
            errors.append(f"{where}: expected a mapping with some of {', '.join(SERVICE_SETTING_KEYS)}, got {own!r}")
            continue
        for key, value in own.items():
            if key not in SERVICE_SETTING_KEYS:
                errors.append(f"{where}.{key}: unknown key; expected some of {', '.join(SERVICE_SETTING_KEYS)}")
            elif key == "replicas" and not _whole(value, 0, MAX_REPLICAS):
                errors.append(f"{where}.replicas: expected a whole number from 0 to {MAX_REPLICAS}, got {value!r}")
            elif key == "resources":
                errors += resources_errors(f"{where}.resources", value)
            elif key == "autoscaling":
                errors += autoscaling_errors(f"{where}.autoscaling", value)
    return errors


def overrides_errors(known: list[str], overrides: Any, chart_keys: list[str] | None) -> list[str]:
    """Chart values per service: known services, top-level keys the chart's schema knows."""
    if not isinstance(overrides, dict):
        return [
            f"service_releases_values_overrides: expected a mapping {{service: {{chart values}}}}, got {overrides!r}"
        ]
    errors = []
    for name, values in overrides.items():
        where = f"service_releases_values_overrides.{name}"
        if name not in known:
            errors.append(f"{where}: unknown service; expected names from catalog/services.yml")
        elif not isinstance(values, dict):
            errors.append(f"{where}: expected a mapping of chart values, got {values!r}")
        elif chart_keys:
            for key in values:
                if key not in chart_keys:
                    errors.append(
                        f"{where}.{key}: not a value of the service chart; expected one of the keys of "
                        "charts/openpolicy-service/values.yaml (docs/charts.md)"
                    )
    return errors


def release_input_errors(catalog: dict, inputs: dict) -> list[str]:
    """Every problem with the releases' settings and the operator's extra-vars, one line each,
    naming the setting and the expected form (roles/service_releases, tasks/validate.yml)."""
    catalog, inputs = plain(catalog), plain(inputs)
    known = [s["name"] for s in catalog["services"]]
    enabled = inputs.get("enabled") or []
    raw_selected = inputs.get("selected")
    selected = names(raw_selected)
    versions = inputs.get("versions") or {}
    default_version = inputs.get("default_version") or ""
    override = inputs.get("version_override") or ""
    environment = inputs.get("environment", "")
    errors = []
    if unknown := [n for n in enabled if n not in known]:
        errors.append(
            f"service_releases_enabled: unknown service {', '.join(unknown)}; "
            f"expected names from catalog/services.yml: {', '.join(known)}"
        )
    if problems := selection_errors("services", raw_selected, known):
        errors += problems
    elif disabled := [n for n in selected if n not in enabled]:
        errors.append(
            f"services: {', '.join(disabled)} not enabled in {environment}; "
            f"expected some of service_releases_enabled: {', '.join(enabled)}"
        )
    if unknown := [n for n in versions if n not in known]:
        errors.append(f"service_releases_versions: unknown service {', '.join(unknown)}; expected catalog names")
    for name, version in versions.items():
        if not matches(VERSION, version):
            errors.append(
                f"service_releases_versions.{name}: expected a version like 1.4.2 "
                f"(MAJOR.MINOR.PATCH, optional -suffix), got {str(version)!r}"
            )
    if default_version and not matches(VERSION, default_version):
        errors.append(
            f"service_releases_default_version: expected a version like 1.4.2 or empty, got {default_version!r}"
        )
    unpinned = [n for n in enabled if n not in versions]
    if unpinned and (not default_version or inputs.get("require_pinned")):
        errors.append(
            f"service_releases_versions: no version for {', '.join(unpinned)}; "
            f"{environment} pins every enabled service's version (name: MAJOR.MINOR.PATCH)"
        )
    if override and (len(selected) != 1 or not matches(VERSION, override)):
        errors.append(
            "version: expected a version like 1.4.2 for exactly one service (-e services=NAME -e version=1.4.2), "
            f"got {override!r} for {len(selected)} service(s)"
        )
    if inputs.get("confirm_required") and inputs.get("confirm") != environment:
        errors.append(
            f"confirm: a {environment} run needs -e confirm={environment} (got '{inputs.get('confirm') or ''}')"
        )
    if int(inputs.get("timeout", 1)) <= 0 or int(inputs.get("history_max", 10)) <= 1:
        errors.append(
            "service_releases_timeout/service_releases_history_max: expected a timeout above 0 seconds and a history "
            f"above 1, got {inputs.get('timeout')} and {inputs.get('history_max')}"
        )
    if "parallel" in inputs and not _whole(inputs["parallel"], 0, MAX_PARALLEL):
        errors.append(
            f"service_releases_parallel: expected a whole number from 0 (four per CPU core) to {MAX_PARALLEL}, "
            f"got {inputs['parallel']!r}"
        )
    if inputs.get("placeholder_secrets") and environment != "local":
        errors.append(
            "service_releases_placeholder_secrets: only the local environment may use placeholder Secrets; "
            f"{environment} reads the Secrets the secrets capability delivers"
        )
    if "replicas" in inputs and not _whole(inputs["replicas"], 0, MAX_REPLICAS):
        errors.append(
            f"service_releases_replicas: expected a whole number from 0 to {MAX_REPLICAS}, got {inputs['replicas']!r}"
        )
    errors += service_settings_errors(known, inputs.get("service_settings") or {})
    errors += overrides_errors(known, inputs.get("values_overrides") or {}, inputs.get("chart_keys"))
    return errors


def rollback_input_errors(catalog: dict, inputs: dict) -> list[str]:
    """Every problem with rollback.yml's extra-vars (service, revision, release_set), one line each."""
    catalog, inputs = plain(catalog), plain(inputs)
    known = [s["name"] for s in catalog["services"]]
    service = str(inputs.get("service") or "")
    revision = str(inputs.get("revision") or "")
    target = str(inputs.get("release_set") or "previous")
    errors = []
    if revision and not WHOLE.fullmatch(revision):
        errors.append(f"revision: expected a whole number from 1 (a Helm revision of the service), got {revision!r}")
    elif revision and not service:
        errors.append(f"revision: names a revision of one service; expected -e service=NAME -e revision={revision}")
    if target != "previous" and not WHOLE.fullmatch(target):
        errors.append(f"release_set: expected previous or the number of a recorded set, got {target!r}")
    if service and service not in known:
        errors.append(f"service: unknown service {service!r}; expected one of: {', '.join(known)}")
    if service and target != "previous":
        errors.append("release_set: rolls back the whole environment; leave out -e service=... (or -e release_set=...)")
    if int(inputs.get("keep", 2)) < 2:
        errors.append(
            f"release_set_keep: expected at least 2 (the live set and the one before), got {inputs.get('keep')}"
        )
    return errors


# A DNS label (RFC 1123), whole: the local cluster's name (at most 40: kwokctl adds to it) and a
# Kubernetes namespace (at most 63).
CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
KV_URL = re.compile(r"https?://.*", re.DOTALL)
MIN_PASSWORD_LENGTH = 12


def _as_int(value: Any) -> int:
    """A number as Jinja's int filter reads it (0 when it is none): the generated lengths are
    compared with each other, not with bounds (_whole)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def cluster_input_errors(inputs: dict, kubeconfig_is_file: bool) -> list[str]:
    """Every problem with roles/k8s_cluster's settings that its argument spec cannot express, one
    line each: {provider, state, nodes, name, kubeconfig}; kubeconfig_is_file tells whether the
    kubeconfig an existing cluster needs is a file on the control host."""
    inputs = plain(inputs)
    provider, state = inputs.get("provider"), inputs.get("state")
    errors = []
    nodes = inputs.get("nodes")
    if provider == "kwok" and not _whole(nodes, 1, 1000):
        errors.append(f"k8s_cluster_nodes: expected a whole number from 1 to 1000, got {nodes}")
    name = inputs.get("name")
    if not matches(CLUSTER_NAME, name):
        errors.append(f"k8s_cluster_name: expected lowercase letters, digits and '-' (at most 40), got {name}")
    if provider == "existing" and state == "present" and not kubeconfig_is_file:
        errors.append(
            f"k8s_cluster_kubeconfig: {inputs.get('kubeconfig')} does not exist; provider existing expects the "
            "path of a kubeconfig file for the cluster"
        )
    if provider == "existing" and state == "absent":
        errors.append(
            "k8s_cluster_state: absent is only for provider kwok; the toolkit never deletes an existing cluster"
        )
    return errors


def namespace_input_errors(namespace: Any) -> list[str]:
    """roles/platform_baseline's namespace, when it is not a DNS label."""
    if matches(NAMESPACE, namespace):
        return []
    return [
        "platform_baseline_namespace: expected a DNS label (lowercase letters, digits and '-', at most 63), "
        f"got {namespace}"
    ]


def secret_input_errors(inputs: dict) -> list[str]:
    """Every problem with roles/secrets' settings that its argument spec cannot express, one line
    each: {backend, kv_url, kv_path, password_length, passphrase_length, password_min_length}."""
    inputs = plain(inputs)
    errors = []
    url, path = inputs.get("kv_url"), inputs.get("kv_path")
    if inputs.get("backend") == "vault" and not (matches(KV_URL, url) and len(str(path or "")) > 0):
        errors.append(
            f"secrets_kv_url/secrets_kv_path: secrets_backend vault needs an http(s) URL and a path, got {url} {path}"
        )
    password, passphrase, minimum = (
        inputs.get(key) for key in ("password_length", "passphrase_length", "password_min_length")
    )
    if not (
        _as_int(password) >= _as_int(minimum)
        and _as_int(passphrase) >= 2 * _as_int(minimum)
        and _as_int(minimum) >= MIN_PASSWORD_LENGTH
    ):
        errors.append(
            "secrets_password_length/secrets_passphrase_length/secrets_password_min_length: generated passwords "
            f"must meet the minimum (>= {MIN_PASSWORD_LENGTH}), passphrases twice it; "
            f"got {password}/{passphrase}/{minimum}"
        )
    return errors


# roles/pgbackrest: the repository's passphrase (at least 20 characters, no space or '#': the
# configuration file's comment sign), the stanza, and the schedules its validate.yml checks.
CIPHER_PASS = re.compile(r"[^\s#]{20,}")
STANZA = re.compile(r"[a-z][a-z0-9_-]{0,62}")
BACKUP_SCHEDULES = ("schedule_full", "schedule_diff", "schedule_incr", "schedule_archive_status")


def backup_input_errors(inputs: dict, groups: dict) -> list[str]:
    """Every problem with roles/pgbackrest's settings that its argument spec cannot express and
    that needs no look at the repository, one line each: {stanza, db_group, repo_group,
    scratch_group, the four schedules, restore_host, and repo_cipher_pass when it is known};
    groups: the inventory's {group: hosts}. The backup set and target time are checked by the
    role's validate.yml (against the repository)."""
    inputs, groups = plain(inputs), plain(groups or {})
    errors = []
    if "repo_cipher_pass" in inputs and not matches(CIPHER_PASS, inputs["repo_cipher_pass"]):
        errors.append(
            "pgbackrest_repo_cipher_pass: missing or too weak; expected at least 20 characters without "
            "spaces or '#' (the local inventory generates it under credentials/)"
        )
    db_hosts = list(groups.get(inputs.get("db_group")) or [])
    repo_group = inputs.get("repo_group")
    repo_hosts = list(groups.get(repo_group) or [])
    if db_hosts and len(repo_hosts) != 1:
        errors.append(
            f"pgbackrest_repo_group: expected exactly one host in group {repo_group} to hold the repository, "
            f"got {len(repo_hosts)}"
        )
    for key in BACKUP_SCHEDULES:
        value = str(inputs.get(key) or "")
        reason = cron_error(value) if value else ""
        if reason:
            errors.append(f"pgbackrest_{key}: not a valid cron expression ({reason}), got '{value}'")
    stanza = inputs.get("stanza")
    if not matches(STANZA, stanza):
        errors.append(f"pgbackrest_stanza: expected lowercase letters, digits, '_' and '-', got '{stanza}'")
    host = str(inputs.get("restore_host") or "")
    scratch_group = inputs.get("scratch_group")
    if host and host not in db_hosts + list(groups.get(scratch_group) or []):
        errors.append(
            f"restore_host: {host} is in neither group {inputs.get('db_group')} nor {scratch_group}; a restore "
            "overwrites data only on those hosts"
        )
    return errors


# roles/podman_hosts: the images scripts/podman_images.py builds, one per flavor.
FLAVORS = ("systemd", "db", "ha", "monitoring")
SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh")


def _port(value: Any) -> str:
    return "" if value is None else str(value)


def host_problems(hosts: dict[str, Any], flavors: dict[str, str], address: str, user: str) -> list[str]:
    """One line per bad setting of every podman host ({name: its hostvars}), naming the setting,
    the host and what is expected: a flavor of FLAVORS, the SSH login every podman host shares
    (`address`, `user`), and an unprivileged port no other podman host uses (they share the
    machine's network). One check for all hosts: a loop of three asserts named only the first
    bad host, and cost the preflight a task per host each."""
    problems = []
    ports = [_port(settings.get("ansible_port")) for settings in hosts.values()]
    for name, settings in hosts.items():
        flavor = flavors.get(name, "")
        if flavor not in FLAVORS:
            problems.append(f"podman_host_flavor of {name}: expected one of {', '.join(FLAVORS)}, got {flavor}")
        login = tuple(
            str(settings.get(key, default))
            for key, default in (("ansible_connection", "ssh"), ("ansible_host", ""), ("ansible_user", ""))
        )
        if login[0] not in SSH_CONNECTIONS or login[1:] != (address, user):
            problems.append(
                f"ansible_connection/ansible_host/ansible_user of {name}: expected ssh, {address} and {user} "
                f"for a podman host, got {', '.join(login)}"
            )
        port = _port(settings.get("ansible_port"))
        if not (port.isdigit() and 1024 <= int(port) <= 65535 and ports.count(port) == 1):
            problems.append(
                f"ansible_port of {name}: expected a port from 1024 to 65535 that no other podman host uses "
                f"(they share the host's network), got {port}"
            )
    return problems


def _form(attrs: dict) -> str:
    """The expected form of one argument-spec option, in words."""
    kind = attrs.get("type", "str")
    words = {
        "int": "a whole number",
        "bool": "true or false",
        "str": "a string",
        "list": "a list",
        "dict": "a mapping",
        "path": "a path",
        "float": "a number",
        "raw": "a value",
    }.get(kind, kind)
    if attrs.get("choices"):
        words = "one of " + ", ".join(str(c) for c in attrs["choices"])
    elif kind == "list" and attrs.get("elements"):
        words += f" of {attrs['elements']}"
    description = attrs.get("description")
    if isinstance(description, list):
        description = " ".join(description)
    return f"{words} ({description.rstrip('.')})" if description else words


def spec_error(name: str, label: str, attrs: dict, value: Any, missing: bool = False) -> str:
    """One line for an option an argument spec refuses: the name the operator typed, the form."""
    if missing:
        return f"{label}: required; expected {_form(attrs)}"
    return f"{label}: expected {_form(attrs)}, got {value!r}"
