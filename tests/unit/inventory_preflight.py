"""The real playbooks/preflight.yml against an inventory, on the control host only, for the unit
tests of the real inventories (test_ha_inventories.py, test_environment_inventories.py).

The vault is kept in the test's folder, seeded with the providers' stand-ins as
tests/e2e/topology.py does; the managed hosts are not contacted unless `reach` asks for it. A
check playbook, when given, runs after the preflight with the playbooks' group_vars beside it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.e2e.topology import seed_vault_file
from tests.helpers import REPO, toolchain_env


def run_preflight(
    inventory: Path, root: Path, roles: list[str], check: list | None = None, reach: bool = False
) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    vault = root / "vault.yml"
    seed_vault_file(vault)
    playbooks = ["playbooks/preflight.yml"]
    if check:
        (root / "check.yml").write_text(yaml.safe_dump(check, sort_keys=False))
        # Beside the check, the playbooks' group_vars: Ansible reads them next to each playbook run.
        (root / "group_vars").symlink_to(REPO / "playbooks" / "group_vars")
        playbooks.append(str(root / "check.yml"))
    extra = {
        "preflight_roles_to_validate": roles,
        "preflight_hosts_reached": not reach,
        "secrets_vault_file": str(vault),
        # Production generates nothing unasked: its documented first run asks, as here.
        "secrets_generate_missing": True,
        # The shared layer finds the catalog next to the playbook that runs; a check runs from
        # the test's folder, so it is named here.
        "openpolicy_catalog_file": str(REPO / "catalog" / "services.yml"),
    }
    cmd = ["ansible-playbook", "-i", str(inventory), *playbooks, "-e", json.dumps(extra)]
    return subprocess.run(cmd, cwd=REPO, env=toolchain_env(), text=True, capture_output=True, timeout=900, check=False)
