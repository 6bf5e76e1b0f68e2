"""The database inputs: the local inventory follows the catalog, and bad settings fail in the preflight.

The preflight runs on the control host only (playbooks/preflight.yml), here with the validate
entry points of the two database roles alone: no container or secret is needed, and nothing is
started or changed when it fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform

from tests.helpers import REPO, failure_messages, run_playbook

INVENTORIES = REPO / "inventories"
# What follows from the catalog and the vault: the same in every environment, so in no inventory.
SHARED_VARS = yaml.safe_load((REPO / "playbooks" / "group_vars" / "all" / "databases.yml").read_text())
DERIVED = ("postgresql_service_schemas", "postgresql_role_passwords", "redis_users", "redis_user_passwords")
ONLY_DATABASES = {"preflight_roles_to_validate": ["postgresql", "redis"]}


def own_vault(tmp_path: Path) -> dict:
    """The preflight stores the secrets it generates: into the test's own vault, never into
    inventories/local's (the tests' password would lock `make up` out of it)."""
    return {"secrets_vault_file": str(tmp_path / "vault.yml")}


BAD_INPUTS = {
    "version the source lacks": ({"postgresql_version": 16}, "postgresql_version", "expected one of 15"),
    "pgdg on an unknown version": (
        {"postgresql_package_source": "pgdg", "postgresql_version": 9},
        "postgresql_version",
        "package source pgdg",
    ),
    "duplicate schema": (
        {"postgresql_service_schemas": [{"name": "a_service", "schema": "x"}, {"name": "b_service", "schema": "x"}]},
        "postgresql_service_schemas",
        "duplicated: x",
    ),
    "duplicate role": (
        {"postgresql_service_schemas": [{"name": "a_service", "schema": "a"}, {"name": "a_service", "schema": "b"}]},
        "postgresql_service_schemas",
        "duplicated: a_service",
    ),
    "service name carrying SQL": (
        {"postgresql_service_schemas": [{"name": "auth; DROP TABLE x", "schema": "auth"}]},
        "postgresql_service_schemas",
        "lowercase SQL identifiers",
    ),
    "service name with a dash": (
        {"postgresql_service_schemas": [{"name": "auth-service", "schema": "auth"}]},
        "postgresql_service_schemas",
        "auth-service",
    ),
    "schema with a quote": (
        {"postgresql_service_schemas": [{"name": "auth_service", "schema": 'auth"x'}]},
        "postgresql_service_schemas",
        "lowercase SQL identifiers",
    ),
    "reserved schema": (
        {"postgresql_service_schemas": [{"name": "auth_service", "schema": "public"}]},
        "postgresql_service_schemas",
        "public",
    ),
    "replica without a primary": ({"postgresql_replica_of": "nowhere"}, "postgresql_replica_of", "nowhere"),
    "replica of itself": ({"postgresql_replica_of": "openpolicy-local-db1"}, "postgresql_replica_of", "none other"),
    "unknown package source": ({"postgresql_package_source": "ubuntu"}, "postgresql_package_source", ""),
    "limits beyond max_connections": ({"postgresql_max_connections": 50}, "postgresql_max_connections", "at least"),
    "redis default user": ({"redis_users": [{"name": "default"}]}, "redis_users", "default"),
    "redis duplicate user": (
        {"redis_users": [{"name": "auth_service"}, {"name": "auth_service"}]},
        "redis_users",
        "duplicated: auth_service",
    ),
    "redis rules setting a password": (
        {"redis_user_default_commands": "+@all >secret"},
        "redis_users",
        ">secret",
    ),
    "redis key prefix with a glob": (
        {"redis_users": [{"name": "auth_service", "key_prefix": "*"}]},
        "redis_users",
        "key_prefix",
    ),
    "redis unknown eviction policy": ({"redis_maxmemory_policy": "lru"}, "redis_maxmemory_policy", ""),
    "redis bad maxmemory": ({"redis_maxmemory": "lots"}, "redis_maxmemory", "lots"),
}


def test_the_databases_follow_the_catalog_in_every_inventory() -> None:
    """The schemas, login roles and Redis users come from the catalog through the shared layer
    (openpolicy_platform, playbooks/group_vars/all/databases.yml), never from a copy of the
    catalog in an inventory."""
    catalog = yaml.safe_load((REPO / "catalog" / "services.yml").read_text())
    expected = [{"name": s["schema"], "schema": s["schema"]} for s in catalog["services"] if "postgresql" in s["needs"]]
    derived = platform.platform_inputs(catalog)
    assert [{k: e[k] for k in ("name", "schema")} for e in derived["postgresql_schemas"]] == expected
    assert derived["redis_users"] == [
        {"name": s["name"].replace("-", "_")} for s in catalog["services"] if "redis" in s["needs"]
    ]
    assert "openpolicy_platform" in SHARED_VARS["postgresql_service_schemas"]
    assert "openpolicy_platform" in SHARED_VARS["redis_users"]
    for path in sorted(INVENTORIES.glob("*/group_vars/all/*.yml")):
        copied = set(yaml.safe_load(path.read_text()) or {}) & {*DERIVED, "openpolicy_catalog_services"}
        assert not copied, f"{path.relative_to(REPO)} copies {sorted(copied)}: they come from databases.yml"


def test_database_passwords_come_from_the_vault() -> None:
    # Never a literal: vault_ keys (roles/secrets generates or checks them).
    for key in ("postgresql_role_passwords", "redis_user_passwords"):
        value = SHARED_VARS[key]
        assert isinstance(value, str), f"{key} must be a template, not literal passwords"
        assert "vault_" in value, f"{key}: from the vault only"
    assert "inventories/*/credentials/" in (REPO / ".gitignore").read_text()


def test_local_inventory_passes_the_preflight(tmp_path: Path) -> None:
    result = run_playbook("preflight.yml", extra_vars={**ONLY_DATABASES, **own_vault(tmp_path)})
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_in_the_preflight_in_one_line(case: str, tmp_path: Path) -> None:
    extra, setting, detail = BAD_INPUTS[case]
    result = run_playbook("preflight.yml", extra_vars={**ONLY_DATABASES, **own_vault(tmp_path), **extra})
    assert result.returncode != 0, result.stdout[-2000:]
    messages = [m for m in failure_messages(result) if m.startswith("preflight:")]
    assert messages, result.stdout[-3000:] + result.stderr[-2000:]
    final = messages[-1]
    assert setting in final, final
    assert detail in final, final
    assert "\n" not in final, f"not one line: {final!r}"


def test_the_catalog_text_gives_the_same_inputs_parsed_once_and_copied() -> None:
    """openpolicy_platform hands the filter the catalog file's text: parsed once per process,
    the same inputs as from the parsed catalog, and each caller gets a copy of its own."""
    text = (REPO / "catalog" / "services.yml").read_text()
    platform.platform_inputs_of_text.cache_clear()
    first = platform.platform_inputs(text)
    assert first == platform.platform_inputs(yaml.safe_load(text))
    first["services"].append("changed-by-a-caller")
    assert "changed-by-a-caller" not in platform.platform_inputs(text)["services"]
    assert platform.platform_inputs_of_text.cache_info().misses == 1
