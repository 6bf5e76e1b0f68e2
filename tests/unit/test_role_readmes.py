"""Every role has a README whose inputs table (| Variable | Default | Description |) names
exactly the options of its meta/argument_specs.yml (every entry point), each default as there."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helpers import REPO

ROLES = sorted(path.parent.parent for path in (REPO / "roles").glob("*/meta/argument_specs.yml"))
ROW = re.compile(r"^\|\s*`(?P<name>[a-z0-9_]+)`\s*\|(?P<default>[^|]*)\|")


def spec_options(role) -> dict[str, dict]:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict] = {}
    for entry in specs.values():
        options.update((entry or {}).get("options") or {})
    return options


def table(role) -> dict[str, str]:
    text = (role / "README.md").read_text()
    section = text.split("| Variable | Default | Description |", 1)
    assert len(section) == 2, f"{role.name}/README.md has no | Variable | Default | Description | table"
    rows = {}
    for line in section[1].splitlines()[1:]:
        if not line.startswith("|"):
            break
        if match := ROW.match(line):
            rows[match["name"]] = match["default"].strip()
    return rows


def test_every_role_has_a_readme():
    roles = sorted(path.name for path in (REPO / "roles").iterdir() if path.is_dir())
    assert [r for r in roles if not (REPO / "roles" / r / "README.md").is_file()] == []
    assert [r for r in roles if not (REPO / "roles" / r / "meta" / "argument_specs.yml").is_file()] == []


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_readme_inputs_match_the_argument_specs(role):
    options, rows = spec_options(role), table(role)
    assert sorted(set(options) - set(rows)) == [], f"{role.name}/README.md lacks these inputs"
    assert sorted(set(rows) - set(options)) == [], f"{role.name}/README.md documents inputs the role does not take"
