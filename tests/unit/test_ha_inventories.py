"""Staging and production run the databases highly available: their inventories' HA settings pass
the shared preflight (every HA role's argument specs and topology rules, on the control host
only), and the HA passwords come from the vault like every other secret.

Each run is the real playbooks/preflight.yml against the real inventory, with the vault kept in
the test's folder (seeded with the providers' stand-ins, as tests/e2e/topology.py does) and the
managed hosts not contacted (`preflight_hosts_reached`): nothing is started or changed.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.e2e.topology import inventory_hosts
from tests.helpers import REPO, toolchain_env
from tests.unit.inventory_preflight import run_preflight

HA_ENVIRONMENTS = ["staging", "production"]
HA_ROLES = ["etcd_cluster", "patroni", "postgresql_router", "redis_sentinel", "postgresql", "redis", "pgbackrest"]
# After the preflight, on the control host: the values the HA roles will see, resolved. The
# inventories choose HA and name the router host; the wiring comes from the shared layer
# (playbooks/group_vars/all/ha.yml): these are the values the inventories spelt out before.
EXPECTED = {
    "etcd_cluster_client_key_group": "postgres",
    "secrets_ha_passwords": ["patroni_superuser", "patroni_restapi", "redis_sentinel"],
    "patroni_synchronous_mode": True,
    "postgresql_router_port": 5432,
    "postgresql_router_replica_port": 5001,
    "redis_sentinel_router_port": 6379,
    "secrets_database_port": 5432,
    "secrets_redis_port": 6379,
    "pgbackrest_backup_standby": True,
    "pgbackrest_manifest_port": 5001,
}
AT_THE_ROUTER = [
    "postgresql_router_address",
    "redis_sentinel_router_address",
    "secrets_database_host",
    "secrets_redis_host",
    "pgbackrest_manifest_address",
]
CHECK = [
    {
        "name": "HA inventory | the HA pieces get the vault's passwords and the router's address",
        "hosts": "control",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Check what every host will use",
                "ansible.builtin.assert": {
                    "that": [
                        "hostvars[item].postgresql_ha == 'patroni' and hostvars[item].redis_ha == 'sentinel'",
                        "hostvars[item].patroni_superuser_password | length >= 32",
                        "hostvars[item].patroni_restapi_password | length >= 32",
                        "hostvars[item].redis_sentinel_password | length >= 32",
                        "hostvars[item].patroni_superuser_password != hostvars[item].patroni_restapi_password",
                        *(f"hostvars[item].{name} == router" for name in AT_THE_ROUTER),
                        *(f"hostvars[item].{name} | string == {str(value)!r}" for name, value in EXPECTED.items()),
                    ],
                    "quiet": True,
                },
                "loop": "{{ groups['all'] | difference(['localhost']) }}",
                "vars": {"router": "{{ hostvars[groups['db_router'] | first].ansible_host }}"},
                "no_log": True,
            }
        ],
    }
]
# What an HA inventory keeps: its choices. Everything else is the same in every HA environment.
CHOICES = {"postgresql_ha", "redis_ha", "patroni_synchronous_mode", "openpolicy_db_router_address"}


def groups(env: str) -> dict[str, list[str]]:
    data = yaml.safe_load((REPO / "inventories" / env / "hosts.yml").read_text())
    found: dict[str, list[str]] = {}

    def walk(group: dict) -> None:
        for name, child in (group.get("children") or {}).items():
            found[name] = list(((child or {}).get("hosts") or {}).keys())
            walk(child or {})

    walk(data["all"])
    return found


@pytest.mark.parametrize("env", HA_ENVIRONMENTS)
def test_the_inventory_asks_for_ha_with_a_topology_that_allows_it(env: str):
    ha = yaml.safe_load((REPO / "inventories" / env / "group_vars" / "all" / "ha.yml").read_text())
    assert ha["postgresql_ha"] == "patroni" and ha["redis_ha"] == "sentinel"
    found = groups(env)
    assert len(found["db"]) >= 3 and len(found["etcd"]) % 2 == 1 and len(found["etcd"]) >= 3, found
    assert len(found["db_router"]) == 1, found
    hosts = yaml.safe_load((REPO / "inventories" / env / "hosts.yml").read_text())
    assert "postgresql_replica_of" not in json.dumps(hosts), "Patroni chooses the primary, not the inventory"
    assert set(inventory_hosts(REPO / "inventories" / env / "hosts.yml")) >= set(found["db_router"])
    assert set(ha) <= CHOICES, f"wiring belongs in playbooks/group_vars/all/ha.yml: {set(ha) - CHOICES}"
    router = hosts["all"]["children"]["ssh_hosts"]["children"]["db_router"]["hosts"][found["db_router"][0]]
    assert ha["openpolicy_db_router_address"] == router["ansible_host"], "the router's address, as hosts.yml has it"


def test_local_stays_without_ha():
    local = REPO / "inventories" / "local" / "group_vars" / "all"
    assert not (local / "ha.yml").exists()
    assert "postgresql_ha" not in "".join(p.read_text() for p in local.glob("*.yml"))


def test_the_ha_settings_pass_the_preflight_and_take_their_passwords_from_the_vault(tmp_path: Path):
    with ThreadPoolExecutor(len(HA_ENVIRONMENTS)) as pool:

        def run(env: str):
            return run_preflight(REPO / "inventories" / env, tmp_path / env, HA_ROLES, check=CHECK)

        runs = pool.map(run, HA_ENVIRONMENTS)
        results = dict(zip(HA_ENVIRONMENTS, runs, strict=True))
    for env, result in results.items():
        assert result.returncode == 0, f"{env}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        # The topology rules really ran (not skipped): Patroni's check on the control host.
        assert "Check the HA topology (etcd members, db hosts, synchronous mode)" in result.stdout, env
        generated = subprocess.run(
            ["ansible-vault", "view", str(tmp_path / env / "vault.yml")],
            env=toolchain_env(), text=True, capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert set(yaml.safe_load(generated)["vault_ha_passwords"]) == {
            "patroni_superuser",
            "patroni_restapi",
            "redis_sentinel",
        }, env
