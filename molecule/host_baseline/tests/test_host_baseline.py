"""Verify host_baseline on the scenario's two containers (run by Molecule's testinfra verifier).

The hosts are reached with testinfra's podman backend (`podman exec`): Molecule's inventory
uses the podman connection, which testinfra would otherwise run through Ansible, one slow
call per check.
"""

from __future__ import annotations

import pytest
import yaml  # Molecule brings PyYAML; the hosts do not need it

# What molecule.yml gives each platform: inventory groups and the timezone of host_vars.
EXPECTED = {
    "hb-systemd": {"groups": ["db"], "timezone": "Etc/UTC"},
    "hb-backup": {"groups": ["backup"], "timezone": "Europe/Berlin"},
}
testinfra_hosts = [f"podman://{name}" for name in EXPECTED]


@pytest.fixture
def expected(host) -> dict:
    return EXPECTED[host.backend.name]


def test_packages_installed(host) -> None:
    for package in ("acl", "ca-certificates", "procps", "tzdata"):
        assert host.package(package).is_installed, package


def test_extra_packages_only_where_asked(host) -> None:
    assert host.package("less").is_installed is (host.backend.name == "hb-backup")


def test_ops_group_is_a_system_group(host) -> None:
    group = host.group("openpolicy")
    assert group.exists
    assert group.gid < 1000


@pytest.mark.parametrize(
    ("path", "owner", "mode"),
    [
        ("/etc/openpolicy", "root", 0o750),
        ("/var/lib/openpolicy", "root", 0o750),
        ("/var/lib/node_exporter", "root", 0o755),
        ("/var/lib/node_exporter/textfile_collector", "root", 0o2775),
    ],
)
def test_ops_directories(host, path: str, owner: str, mode: int) -> None:
    directory = host.file(path)
    assert directory.is_directory
    assert directory.user == owner
    assert directory.mode == mode
    if path != "/var/lib/node_exporter":
        assert directory.group == "openpolicy"


def test_timezone(host, expected: dict) -> None:
    assert host.file("/etc/timezone").content_string == expected["timezone"] + "\n"
    localtime = host.file("/etc/localtime")
    assert localtime.is_symlink
    assert localtime.linked_to == "/usr/share/zoneinfo/" + expected["timezone"]


def test_facts_file(host, expected: dict) -> None:
    facts_file = host.file("/etc/openpolicy/host.yml")
    assert facts_file.mode == 0o640
    assert facts_file.group == "openpolicy"
    facts = yaml.safe_load(facts_file.content_string)
    assert facts["hostname"] == host.backend.name
    assert facts["environment"] == "local"
    assert facts["groups"] == expected["groups"]
    assert facts["timezone"] == expected["timezone"]
    assert facts["directories"]["textfile_collector"] == "/var/lib/node_exporter/textfile_collector"


def test_systemd_is_pid_1(host) -> None:
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    assert state in {"running", "degraded"}, state
