"""dev, sample, staging and production are complete for site.yml's databases, and a bad inventory
stops in one line naming the setting.

Each run is the real playbooks/preflight.yml (what site.yml runs first) against the real
inventory or a copy of it with one change, on the control host only: the vault is kept in the
test's folder (seeded with the providers' stand-ins, as tests/e2e/topology.py does) and the
managed hosts are not contacted (`preflight_hosts_reached`), so nothing can be started or
changed. An unreachable host is a real one: every host moved to a loopback port nothing listens
on, so its SSH login is refused at once.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.topology import BAD_STAGING_INVENTORIES, HOST_PORTS, SHARED_PORTS
from tests.helpers import REPO, failure_messages, toolchain_env
from tests.unit.inventory_preflight import run_preflight

DATABASE_ROLES = ["postgresql", "redis", "pgbackrest", "etcd_cluster", "patroni", "postgresql_router"]
# What every db host must resolve to, from the catalog and the vault (databases.yml), whatever
# the environment: a login role per service schema with its password, and a Redis user per
# service with its password.
CHECK = [
    {
        "name": "Environment inventory | every db host gets the catalog's schemas, roles and users",
        "hosts": "control",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Check what each db host will use",
                "ansible.builtin.assert": {
                    "that": [
                        "hostvars[item].postgresql_service_schemas | map(attribute='schema') | list == schemas",
                        "hostvars[item].postgresql_service_schemas | map(attribute='name')"
                        " | difference(hostvars[item].postgresql_role_passwords.keys()) | length == 0",
                        "hostvars[item].postgresql_role_passwords.values() | map('length') | min >= 32",
                        "hostvars[item].redis_users | map(attribute='name') | list == redis_users + ['redis_exporter']",
                        "hostvars[item].redis_user_passwords.values() | map('length') | min >= 32",
                        "hostvars[item].pgbackrest_repo_cipher_pass | length >= 40",
                    ],
                    "quiet": True,
                },
                "loop": "{{ groups['db'] }}",
                "vars": {
                    "schemas": "{{ openpolicy_platform.postgresql_schemas | map(attribute='schema') | list }}",
                    "redis_users": "{{ openpolicy_platform.redis_users | map(attribute='name') | list }}",
                },
                "no_log": True,
            }
        ],
    }
]


@pytest.mark.parametrize("env", ["dev", "sample", "staging", "production"])
def test_the_inventory_gives_every_db_host_the_catalogs_databases(env: str, tmp_path: Path):
    result = run_preflight(REPO / "inventories" / env, tmp_path, DATABASE_ROLES, check=CHECK)
    assert result.returncode == 0, f"{env}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert "Check what each db host will use" in result.stdout


# --- bad inventories: a copy of staging with one change -----------------------------------------

STAGING = REPO / "inventories" / "staging"
BAD = BAD_STAGING_INVENTORIES


@pytest.mark.parametrize("case", BAD)
def test_a_bad_inventory_stops_in_one_line_naming_the_setting(case: str, tmp_path: Path):
    change, setting = BAD[case]
    inventory = tmp_path / "staging"
    shutil.copytree(STAGING, inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    change(hosts)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    result = run_preflight(inventory, tmp_path, DATABASE_ROLES)
    assert result.returncode != 0, f"{case}: {result.stdout[-3000:]}"
    messages = failure_messages(result)
    assert any(setting in m and "\n" not in m for m in messages), (case, messages, result.stdout[-3000:])


def test_an_unreachable_host_stops_the_run_before_the_vault_changes(tmp_path: Path):
    """The secrets generated in the preflight are stored only once every host answered."""
    inventory = tmp_path / "staging"
    shutil.copytree(STAGING, inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    # Every SSH host on this machine's loopback, each server on a port of its own as in
    # tests/e2e/topology.py, above the ephemeral range where nothing listens: each login is refused
    # at once (never an address of the real staging network).
    base = 64600
    number = 0
    for group in hosts["all"]["children"]["ssh_hosts"]["children"].values():
        for name in group.get("hosts") or {}:
            number += 1
            ports = {key: base + offset + number for key, offset in HOST_PORTS.items()}
            group["hosts"][name] = {"ansible_host": "127.0.0.1", **ports}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    # The hosts' network and the router moved with them (as topology.py's overlay does).
    loopback = {
        "openpolicy_data_networks": ["127.0.0.1/32"],
        "openpolicy_db_router_address": "127.0.0.1",
        **{key: base + offset for key, offset in SHARED_PORTS.items()},
    }
    (inventory / "group_vars" / "all" / "topology.yml").write_text(yaml.safe_dump(loopback))
    vault = tmp_path / "vault.yml"
    result = run_preflight(inventory, tmp_path, DATABASE_ROLES, reach=True)
    assert result.returncode != 0, result.stdout[-3000:]
    messages = failure_messages(result)
    assert any("ansible_host/ansible_port of openpolicy-staging-" in m and "\n" not in m for m in messages), messages
    # The seeded vault holds the three providers' stand-ins only: nothing generated was stored.
    view = subprocess.run(
        ["ansible-vault", "view", str(vault)], env=toolchain_env(), text=True, capture_output=True, check=True
    )
    assert set(yaml.safe_load(view.stdout)) == {
        "vault_smtp_password",
        "vault_slack_webhook_url",
        "vault_pagerduty_routing_key",
        "vault_alertmanager_webhook_url",
    }
    assert "Check the inputs that carry the environment's secrets" in result.stdout, "the secrets were read first"
