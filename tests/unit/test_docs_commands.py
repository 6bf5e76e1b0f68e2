"""Every playbook command of the operators' documentation names its inventory.

Without `-i` a command acts on whatever inventory ansible.cfg or the environment points at,
which outside local is the wrong environment: runbooks say `-i inventories/<env>` each time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
# `ansible-playbook` followed by its arguments, up to the end of a code span, a table cell or the line.
COMMAND = re.compile(r"ansible-playbook((?:[ \t]+[^\s`|]+)+)")


def commands(text: str) -> list[str]:
    return [match.group(0) for match in COMMAND.finditer(text)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_playbook_command_names_its_inventory(path: Path) -> None:
    missing = [c for c in commands(path.read_text()) if not re.search(r"(^|\s)(-i|--inventory)(\s|=)", c)]
    assert missing == [], f"{path.relative_to(REPO)}: ansible-playbook without -i: {missing}"


def test_the_check_sees_commands() -> None:
    assert commands("run `ansible-playbook playbooks/site.yml` now") == ["ansible-playbook playbooks/site.yml"]
    assert commands("every `ansible-playbook` call") == []
    assert sum(len(commands(p.read_text())) for p in DOCS) > 20
