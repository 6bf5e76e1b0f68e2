"""ansible.cfg names no inventory: a run without -i stops in its first play, in one line."""

from __future__ import annotations

import subprocess

from tests.helpers import REPO, failure_messages, toolchain_env


def test_a_run_without_an_inventory_stops_naming_the_option():
    result = subprocess.run(
        ["ansible-playbook", "playbooks/site.yml"],
        cwd=REPO, env=toolchain_env(), text=True, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert failure_messages(result) == ["no inventory: give -i inventories/<env>"], result.stdout[-2000:]
