"""Roles stand alone: no role refers to a path outside itself or reads another role's variables,
but through the shared layer (playbooks/group_vars/all/openpolicy.yml) and the exceptions below,
each named with why."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO

ROLES_DIR = REPO / "roles"
ROLES = sorted(path.name for path in ROLES_DIR.iterdir() if path.is_dir())
# Names every role may read: the shared layer, the environment's name and namespace, the vault's
# values (roles/secrets hands them to every host) and the connection the cluster role publishes.
SHARED = {
    "openpolicy_platform",
    "openpolicy_catalog_file",
    "openpolicy_charts_dir",
    "openpolicy_versions_file",
    "openpolicy_environment",
    "openpolicy_namespace",
    "k8s_cluster_connection",
}
# (role, variable of another role): why the role may read it.
ALLOWED = {
    ("pgbackrest", "postgresql_version"): "archives the PostgreSQL of the same db host: follows its version unless set",
    ("pgbackrest", "postgresql_cluster_name"): "same server: the Debian cluster whose data directory it backs up",
    ("pgbackrest", "postgresql_port"): "same server: the port its archive and backup commands connect to",
    ("pgbackrest", "postgresql_database"): "same server: the database the row-count manifest reads",
    ("pgbackrest", "postgresql_reporting_role"): "same server: the read-only role the manifest logs in as",
    ("pgbackrest", "host_baseline_textfile_dir"): "same host: node_exporter's textfile directory the baseline made",
    ("pgbackrest", "host_baseline_group"): "same host: the ops group the baseline made, owner of that directory",
    ("postgresql", "pgbackrest_stanza"): "asks its deployment's repository about the stanza: same name unless set",
    ("secrets", "secrets_checksums"): "its own output fact (secrets_ is its prefix)",
    ("node_exporter", "host_baseline_textfile_dir"): "same host: the textfile directory the baseline made",
    ("postgres_exporter", "postgresql_advertise_address"): "same db host: the server it reads statistics from",
    ("postgres_exporter", "postgresql_port"): "same db host: the port of that server",
    ("postgres_exporter", "postgresql_database"): "same db host: the database it connects to",
    ("postgres_exporter", "postgresql_replica_of"): "same db host: a replica gets its login role from the primary",
    ("postgres_exporter", "postgresql_primary_host"): "the fact roles/postgresql's entry point `primary` sets",
    ("pgbackrest", "postgresql_primary_host"): "the fact roles/postgresql's entry point `primary` sets",
    ("pgbackrest", "postgresql_primary_port"): "the fact roles/postgresql's entry point `primary` sets",
    ("pgbackrest", "postgresql_answered_hosts"): "the fact roles/postgresql's entry point `primary` sets",
    ("postgresql", "pki_issued"): "the fact roles/pki's entry point `certificate` sets (the one CA's files)",
    ("pgbackrest", "pki_issued"): "the fact roles/pki's entry point `certificate` sets (the one CA's files)",
    ("etcd_cluster", "pki_issued"): "the fact roles/pki's entry point `certificate` sets (the one CA's files)",
    ("redis_exporter", "redis_port"): "same db host: the Redis it reads statistics from",
    ("prometheus", "alertmanager_listen_address"): "same monitoring host: the Alertmanager it sends alerts to",
    ("prometheus", "alertmanager_port"): "same monitoring host: the port of that Alertmanager",
}
# Paths outside the role: `..` through role_path, the playbook's or the repository's folders.
OUTSIDE = re.compile(r"role_path\s*(?:\}\}\s*)?[~+]?\s*['\"]?/\.\.|\.\./|playbook_dir")
VARIABLE = re.compile(r"(?<![.\w])(" + "|".join(sorted(ROLES, key=len, reverse=True)) + r")_[a-z0-9_]+\b")
QUOTED = re.compile(r"'[^'\n]*'")
EXPRESSION = re.compile(
    r"\{\{([\s\S]*?)\}\}|\{%([\s\S]*?)%\}|^\s*(?:when|that|failed_when|changed_when|loop):(.*)$|^\s+- (.*)$", re.M
)


def role_files(role: str):
    for path in sorted((ROLES_DIR / role).rglob("*")):
        if (
            path.is_file()
            and path.suffix in (".yml", ".yaml", ".j2")
            and "files" not in path.relative_to(ROLES_DIR / role).parts
        ):
            yield path


def code(path) -> str:
    """The file without its comment lines (they may name what they like)."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def outside_paths(role: str) -> list[str]:
    return [
        f"{path.relative_to(ROLES_DIR)}: {match.group(0)}"
        for path in role_files(role)
        if path.parent.name != "meta"
        for match in OUTSIDE.finditer(code(path))
    ]


def foreign_variables(role: str) -> list[str]:
    found = []
    for path in role_files(role):
        if path.parent.name == "meta" or path.name == "README.md":
            continue
        for match in EXPRESSION.finditer(code(path)):
            # Quoted words are keys and messages, not variables.
            expression = QUOTED.sub("", next(group for group in match.groups() if group is not None))
            for name in [m.group(0) for m in VARIABLE.finditer(expression)]:
                owner = next(r for r in sorted(ROLES, key=len, reverse=True) if name.startswith(r + "_"))
                if owner != role and name not in SHARED and (role, name) not in ALLOWED:
                    found.append(f"{path.relative_to(ROLES_DIR)}: {name} (a variable of role {owner})")
    return sorted(set(found))


@pytest.mark.parametrize("role", ROLES)
def test_no_path_outside_the_role(role: str):
    assert outside_paths(role) == []


@pytest.mark.parametrize("role", ROLES)
def test_no_other_roles_variables(role: str):
    assert foreign_variables(role) == []


def test_the_scan_finds_what_it_forbids(tmp_path, monkeypatch):
    """A path through role_path/.. and another role's variable are both reported."""
    fake = tmp_path / "roles"
    (fake / "alpha" / "tasks").mkdir(parents=True)
    (fake / "beta" / "tasks").mkdir(parents=True)
    (fake / "alpha" / "tasks" / "main.yml").write_text(
        '- name: Copy\n  ansible.builtin.copy:\n    src: "{{ role_path }}/../../scripts/x.py"\n'
        '    dest: "{{ beta_dest }}"\n'
    )
    monkeypatch.setitem(globals(), "ROLES_DIR", fake)
    monkeypatch.setitem(globals(), "VARIABLE", re.compile(r"(?<![.\w])(alpha|beta)_[a-z0-9_]+\b"))
    monkeypatch.setitem(globals(), "ROLES", ["alpha", "beta"])
    assert "alpha/tasks/main.yml: role_path }}/.." in outside_paths("alpha")
    assert foreign_variables("alpha") == ["alpha/tasks/main.yml: beta_dest (a variable of role beta)"]
