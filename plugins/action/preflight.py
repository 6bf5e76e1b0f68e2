"""Check every input of the roles a run will use, before anything is contacted or changed.

    openpolicy.deploy.preflight:
      roles: [k8s_cluster, service_releases, ...]   # the roles whose inputs are checked
      labels: {pgbackrest_backup_type: type}        # the -e name an operator typed for a role variable
      catalog: "{{ openpolicy_platform.catalog }}"
      chart_keys: [...]                              # top-level values of the service chart
      secrets_read: false                            # true once the secrets role read the vault

For each role, its variables as the role would see them (its defaults/main.yml under the
inventory, the playbook's vars and the extra-vars) are checked against the entry point
`validate` (else `main`) of its meta/argument_specs.yml, then against the rules of
module_utils/inputs.py. Every problem is one line naming the setting and the expected form;
all of them come back in one run (``errors``), and the task fails when there is any. Nothing is
contacted: no module runs, no host is reached. ``covered`` names the roles whose tasks/validate.yml
checks nothing more than those rules did (the preflight does not run those tasks again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.vars import combine_vars
from ansible_collections.openpolicy.deploy.plugins.module_utils import inputs, monitoring_inputs

ROLES = Path(__file__).resolve().parents[2] / "roles"


def _role_inputs(role: str, values: dict[str, Any]) -> dict[str, Any]:
    """The role's variables without their prefix (what module_utils/inputs.py checks)."""
    prefix = role + "_"
    return {name[len(prefix) :]: value for name, value in values.items() if name.startswith(prefix)}


# The roles whose tasks/validate.yml calls no rule but those of role_errors, those that also
# need the service catalog, then k8s_cluster and pgbackrest (rules_cover_validate_tasks).
ROLES_WITH_RULES = frozenset((*monitoring_inputs.RULES, "platform_baseline", "secrets", "podman_hosts"))
ROLES_WITH_CATALOG_RULES = frozenset(("service_releases", "release_set"))
# The settings those rules read (without the role's prefix): with one of them unknown here (a fact
# set later in the run), the rules are not checked and the role's validate tasks run.
RULE_SETTINGS = {
    "k8s_cluster": ("provider", "state", "nodes", "name", "kubeconfig"),
    "platform_baseline": ("namespace",),
    "secrets": ("backend", "kv_url", "kv_path", "password_length", "passphrase_length", "password_min_length"),
    "podman_hosts": ("groups", "ssh_address", "ssh_user", "default_flavor", "hosts"),
    "pgbackrest": (
        "stanza",
        "db_group",
        "repo_group",
        "scratch_group",
        *inputs.BACKUP_SCHEDULES,
        "restore_host",
        "restore_set",
        "restore_target_time",
    ),
}
# Settings the rules read that the entry point checked here does not declare: pgbackrest's
# `validate` leaves out the passphrase (the secrets role may read it only later), which its
# validate.yml checks when it is known.
RULE_EXTRA_SETTINGS = {"pgbackrest": ("pgbackrest_repo_cipher_pass",)}
# What role_errors reads of each podman host (inputs.host_problems), worked out by the action as
# one more value of the role, podman_hosts_hosts ({host: those of its settings that are set}).
PODMAN_HOST_SETTINGS = ("ansible_connection", "ansible_host", "ansible_user", "ansible_port", "podman_host_flavor")


def rules_cover_validate_tasks(role: str, catalog: dict, control_is_local: bool, values: dict[str, Any]) -> bool:
    """Whether role_errors checked every rule of the role's tasks/validate.yml (the same functions
    of module_utils/inputs.py and monitoring_inputs.py), given the role's values worked out here:
    the preflight then skips those tasks. k8s_cluster's looks for a kubeconfig on the control host:
    here only when that is this machine; pgbackrest's compare a backup set or a target time with
    the repository: only when neither is asked for."""
    own = _role_inputs(role, values)
    if not _settings_known(role, own):
        return False
    if role == "k8s_cluster":
        return control_is_local
    if role == "pgbackrest":
        return not own["restore_set"] and not own["restore_target_time"]
    return role in ROLES_WITH_RULES or (bool(catalog) and role in ROLES_WITH_CATALOG_RULES)


def _settings_known(role: str, own: dict[str, Any]) -> bool:
    """Whether every setting the role's rules read was worked out (RULE_SETTINGS)."""
    return all(name in own for name in RULE_SETTINGS.get(role, ()))


def role_errors(
    role: str,
    values: dict[str, Any],
    catalog: dict,
    chart_keys: list[str],
    *,
    secrets_known: bool = True,
    control_is_local: bool = False,
    groups: dict | None = None,
) -> list[str]:
    """The rules of module_utils/inputs.py (and monitoring_inputs.py) for the roles that have some.
    secrets_known: the secrets role has read the vault (a missing secret is then a problem);
    control_is_local: the control host is this machine (its kubeconfig is a file here); groups: the
    inventory's {group: hosts}."""
    own = _role_inputs(role, values)
    if role in monitoring_inputs.RULES:
        return monitoring_inputs.problems(role, own, secrets_known)
    # A rule whose settings are not all known yet (a fact another role sets) is left to the
    # role's own validate tasks when it starts, as the argument spec check leaves them.
    if not _settings_known(role, own):
        return []
    if role == "platform_baseline":
        return inputs.namespace_input_errors(own.get("namespace"))
    if role == "secrets":
        return inputs.secret_input_errors(own)
    if role == "pgbackrest":
        return inputs.backup_input_errors(own, groups or {})
    if role == "podman_hosts":
        hosts = own["hosts"]
        flavors = {name: settings.get("podman_host_flavor", own["default_flavor"]) for name, settings in hosts.items()}
        return inputs.host_problems(hosts, flavors, own["ssh_address"], own["ssh_user"])
    if role == "k8s_cluster" and control_is_local:
        kubeconfig = str(own.get("kubeconfig") or "")
        return inputs.cluster_input_errors(own, bool(kubeconfig) and Path(kubeconfig).expanduser().is_file())
    if not catalog:
        return []
    if role == "service_releases":
        checked = {
            "environment": own.get("environment"),
            "enabled": own.get("enabled"),
            "selected": own.get("selected"),
            "versions": own.get("versions"),
            "default_version": own.get("default_version"),
            "version_override": own.get("version_override"),
            "require_pinned": own.get("require_pinned_versions"),
            "confirm_required": own.get("confirm_required"),
            "confirm": own.get("confirm"),
            "timeout": own.get("timeout", 1),
            "history_max": own.get("history_max", 10),
            "parallel": own.get("parallel", 0),
            "placeholder_secrets": own.get("placeholder_secrets"),
            "replicas": own.get("replicas", 1),
            "service_settings": own.get("service_settings"),
            "values_overrides": own.get("values_overrides"),
            "chart_keys": chart_keys,
        }
        return inputs.release_input_errors(catalog, checked)
    if role == "release_set":
        checked = {
            "service": own.get("rollback_service"),
            "revision": own.get("rollback_revision"),
            "release_set": own.get("rollback_to"),
            "keep": own.get("keep", 2),
        }
        return inputs.rollback_input_errors(catalog, checked)
    return []


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def _spec(self, name: str) -> tuple[str, dict, dict]:
        """(role, options of its entry point, raw defaults) of "role" (entry point validate, else
        main) or "role:entry"."""
        role, _, wanted = name.partition(":")
        specs_file = ROLES / role / "meta" / "argument_specs.yml"
        defaults_file = ROLES / role / "defaults" / "main.yml"
        if not specs_file.is_file():
            raise AnsibleError(f"preflight: role {role} has no meta/argument_specs.yml")
        # unsafe: the loader's cached copy itself, not a deep copy of it (read here, never changed).
        specs = (self._loader.load_from_file(str(specs_file), unsafe=True) or {}).get("argument_specs") or {}
        entry = specs.get(wanted) if wanted else (specs.get("validate") or specs.get("main"))
        if entry is None:
            raise AnsibleError(f"preflight: role {role} has no entry point {wanted} in meta/argument_specs.yml")
        defaults = (
            self._loader.load_from_file(str(defaults_file), unsafe=True, trusted_as_template=True)
            if defaults_file.is_file()
            else {}
        )
        return role, dict(entry.get("options") or {}), dict(defaults or {})

    def _check_role(
        self, target: str, task_vars: dict, labels: dict, catalog: dict, chart_keys: list
    ) -> tuple[list[str], bool]:
        """The problems with one role's inputs, and whether the rules checked cover its validate tasks."""
        role, options, defaults = self._spec(target)
        variables = combine_vars(defaults, task_vars)
        templar = self._templar.copy_with_new_env(available_variables=variables)
        values: dict[str, Any] = {}
        errors: list[str] = []
        skipped: set[str] = set()
        for name in (*options, *RULE_EXTRA_SETTINGS.get(role, ())):
            if name not in variables:
                continue
            try:
                values[name] = templar.template(variables[name])
            except AnsibleUndefinedVariable:
                # Known only later in the run (a fact another role sets): the role checks it then.
                skipped.add(name)
            except AnsibleError as error:
                label = labels.get(name, name)
                first = str(error).splitlines()[0] if str(error) else type(error).__name__
                errors.append(f"{label}: cannot be worked out: {first}")
        # One validator for all the values worked out; only when it finds a problem, one per value,
        # to name each bad setting (a validator per value cost the preflight some 0.03 s).
        present = {name: attrs for name, attrs in options.items() if name in values and name not in skipped}
        together = ArgumentSpecValidator(present).validate(
            {name: values[name] for name in present}, validate_role_argument_spec=True
        )
        for name, attrs in options.items():
            if name in skipped:
                continue
            if name not in values:
                if attrs.get("required") and not any(e.startswith(labels.get(name, name) + ":") for e in errors):
                    errors.append(inputs.spec_error(name, labels.get(name, name), attrs, None, missing=True))
                continue
            result = (
                ArgumentSpecValidator({name: attrs}).validate({name: values[name]}, validate_role_argument_spec=True)
                if together.error_messages
                else together
            )
            if result.error_messages:
                errors.append(inputs.spec_error(name, labels.get(name, name), attrs, values[name]))
            else:
                values[name] = result.validated_parameters.get(name, values[name])
        # Left unknown when a host's login cannot be worked out: the role's validate tasks check it.
        hosts = self._podman_hosts(values, task_vars) if role == "podman_hosts" else None
        if hosts is not None:
            values["podman_hosts_hosts"] = hosts
        if not errors:
            errors += role_errors(
                role,
                values,
                catalog,
                chart_keys,
                secrets_known=self._secrets_read,
                control_is_local=self._control_is_local,
                groups=task_vars.get("groups"),
            )
        return errors, rules_cover_validate_tasks(role, catalog, self._control_is_local, values)

    @staticmethod
    def _podman_hosts(values: dict[str, Any], task_vars: dict) -> dict[str, dict] | None:
        """{host: its PODMAN_HOST_SETTINGS that are set} of the podman hosts (the hosts of
        podman_hosts_groups, as the role's validate.yml collects them), or None when a value
        cannot be worked out."""
        groups, hostvars = task_vars.get("groups") or {}, task_vars.get("hostvars") or {}
        names = [host for group in values.get("podman_hosts_groups") or [] for host in groups.get(group) or []]
        try:
            return {
                host: {key: hostvars[host][key] for key in PODMAN_HOST_SETTINGS if key in hostvars[host]}
                for host in dict.fromkeys(names)
                if host in hostvars
            }
        except AnsibleError:
            return None

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        labels = dict(args.get("labels") or {})
        catalog = args.get("catalog") or {}
        chart_keys = list(args.get("chart_keys") or [])
        # The secrets role reads (and generates) the vault after the first check; the second,
        # right after it (roles/preflight/tasks/secrets.yml), names a missing secret.
        self._secrets_read = bool(args.get("secrets_read"))
        self._control_is_local = str(task_vars.get("ansible_connection", "")) == "local"
        errors: list[str] = []
        # The roles whose validate tasks would only repeat what was checked here (every entry
        # point of a role named more than once).
        covered: dict[str, bool] = {}
        for role in args.get("roles") or []:
            found, covers = self._check_role(role, task_vars, labels, catalog, chart_keys)
            errors += [line for line in dict.fromkeys(found) if line not in errors]
            name = role.partition(":")[0]
            covered[name] = covered.get(name, True) and covers
        result["changed"] = False
        result["errors"] = errors
        result["covered"] = sorted(name for name, covers in covered.items() if covers)
        if errors:
            result["failed"] = True
            result["msg"] = "\n".join(f"preflight: {line}" for line in errors)
        else:
            result["msg"] = f"preflight: the inputs of {len(args.get('roles') or [])} roles are valid"
        return result
