"""Tests of scripts/podman_images.py: flavor graph, input hashes, arguments, and a real cached build."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import podman_images  # scripts/ is on pytest's pythonpath (pyproject.toml)
from openpolicy_tools import podman

REPO = Path(__file__).resolve().parents[2]

SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def hashes(flavors=podman.FLAVORS, sources: str = SOURCES, suite: str = podman.SUITE) -> dict[str, str]:
    return {name: podman.flavor_hash(name, sources, flavors, suite) for name in flavors}


def with_flavor(name: str, **changes) -> dict:
    return {**podman.FLAVORS, name: dataclasses.replace(podman.FLAVORS[name], **changes)}


# --- hash keying ---------------------------------------------------------------------------


def test_hash_is_stable_and_short() -> None:
    first, second = hashes(), hashes()
    assert first == second
    assert all(re.fullmatch(r"[0-9a-f]{12}", digest) for digest in first.values())
    assert len(set(first.values())) == len(first)


def test_package_change_rekeys_the_flavor_and_its_descendants_only() -> None:
    before = hashes()
    after = hashes(with_flavor("db", packages=(*podman.FLAVORS["db"].packages, "less")))
    assert after["db"] != before["db"]
    assert after["systemd"] == before["systemd"]


def test_root_package_change_rekeys_every_flavor() -> None:
    before = hashes()
    after = hashes(with_flavor("systemd", packages=(*podman.FLAVORS["systemd"].packages, "less")))
    assert all(after[name] != before[name] for name in podman.FLAVORS)


def test_package_order_and_description_do_not_rekey() -> None:
    before = hashes()
    db = podman.FLAVORS["db"]
    after = hashes(with_flavor("db", packages=tuple(reversed(db.packages)), description="reworded"))
    assert after == before


def test_sources_and_suite_rekey_everything() -> None:
    before = hashes()
    other_sources = hashes(sources=SOURCES.replace("deb.debian.org", "mirror.example.org"))
    other_suite = hashes(suite="trixie")
    for name in podman.FLAVORS:
        assert other_sources[name] != before[name]
        assert other_suite[name] != before[name]


def test_disabled_services_and_finish_steps_are_part_of_the_key() -> None:
    assert hashes(with_flavor("db", disable_services=("redis-server",)))["db"] != hashes()["db"]
    assert hashes(with_flavor("db", finish=()))["db"] != hashes()["db"]


def test_image_references() -> None:
    assert podman.image_ref("db", "0123456789ab") == "localhost/openpolicy-host:db-0123456789ab"
    assert podman.alias_ref("systemd") == "localhost/openpolicy-host:systemd"


# --- flavor graph --------------------------------------------------------------------------


def test_lineage_is_root_first() -> None:
    assert podman.lineage("db") == ["systemd", "db"]
    assert podman.lineage("systemd") == ["systemd"]


def test_build_order_puts_parents_first_without_repeats() -> None:
    assert podman.build_order(["db"]) == ["systemd", "db"]
    everything = podman.build_order([])
    assert sorted(everything) == sorted(podman.FLAVORS)
    for name in everything:
        parent = podman.FLAVORS[name].parent
        assert parent is None or everything.index(parent) < everything.index(name)


def test_exactly_one_root_and_every_flavor_boots_systemd_with_sshd() -> None:
    roots = [flavor.name for flavor in podman.FLAVORS.values() if flavor.parent is None]
    assert roots == ["systemd"]
    for flavor in podman.FLAVORS.values():
        assert flavor.command == ("/sbin/init",)
        assert "systemd" in podman.lineage(flavor.name)
    assert {"systemd", "systemd-sysv", "openssh-server"} <= set(podman.FLAVORS["systemd"].packages)


def test_unknown_flavor_and_cycles_are_rejected() -> None:
    with pytest.raises(podman.ImageError, match="unknown image flavor 'nope'"):
        podman.lineage("nope")
    looped = with_flavor("systemd", parent="db")
    with pytest.raises(podman.ImageError, match="cycle"):
        podman.lineage("db", looped)
    with pytest.raises(podman.ImageError, match="cycle"):
        podman.flavor_hash("db", SOURCES, looped)


# --- build steps and commands --------------------------------------------------------------


def test_step_scripts_keep_services_from_starting_and_disable_them() -> None:
    db = podman.step_script(podman.FLAVORS["db"])
    assert db.index("policy-rc.d") < db.index("apt-get install")
    assert db.rstrip().splitlines()[-3] == "rm -f /usr/sbin/policy-rc.d"
    assert "systemctl disable postgresql.service" in db
    # No cluster baked in: each db host initialises its own (distinct system identifiers).
    assert db.index("apt-get install") < db.index("pg_dropcluster 15 main")
    # No host keys baked in and sshd off until roles/podman_hosts configures it.
    root = podman.step_script(podman.FLAVORS["systemd"])
    assert "systemctl disable ssh.service" in root
    assert root.index("apt-get install") < root.index("rm -f /etc/ssh/ssh_host_*")
    # The HA hosts' agents come installed, off until their roles have configured them.
    assert podman.lineage("ha") == ["systemd", "db", "ha"]
    ha = podman.step_script(podman.FLAVORS["ha"])
    for service in ("patroni", "redis-sentinel", "haproxy", "prometheus-node-exporter", "systemd-journal-upload"):
        assert f"systemctl disable {service}.service" in ha


def test_debootstrap_command_and_mirror() -> None:
    mirror = podman.mirror_from_sources(SOURCES)
    assert mirror == "http://deb.debian.org/debian"
    command = podman.debootstrap_command(Path("/tmp/root"), mirror)
    assert command[:2] == ["debootstrap", "--variant=minbase"]
    assert "--include=ca-certificates,python3,python3-apt,sudo" in command
    assert command[-3:] == ["bookworm", "/tmp/root", mirror]
    with pytest.raises(podman.ImageError, match="no apt source for suite 'bookworm'"):
        podman.mirror_from_sources(SOURCES.replace("bookworm", "trixie"))


def test_image_changes_set_command_signal_and_labels() -> None:
    systemd = podman.image_changes(podman.FLAVORS["systemd"], "0123456789ab")
    assert 'CMD ["/sbin/init"]' in systemd
    assert "STOPSIGNAL SIGRTMIN+3" in systemd
    assert f"LABEL {podman.LABEL_HASH}=0123456789ab" in systemd


def test_missing_tools_name_the_apt_package(tmp_path: Path) -> None:
    with pytest.raises(podman.ImageError, match=r"apt-get install -y podman debootstrap"):
        podman.require_tools(["podman", "debootstrap"], path=str(tmp_path))


# --- command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["build", "--flavor", "nope"], ["name"], ["name", "nope"], ["list", "extra"]],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        podman_images.main(argv)
    assert raised.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_build_accepts_repeated_flavors() -> None:
    args = podman_images.parse_args(["build", "--flavor", "db", "--flavor", "systemd"])
    assert args.flavor == ["db", "systemd"]
    assert podman_images.parse_args(["build"]).flavor == []


@pytest.mark.skipif(not podman.HOST_SOURCES.exists(), reason="not a Debian host")
def test_name_prints_the_pinned_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert podman_images.main(["name", "db"]) == 0
    expected = podman.image_ref("db", podman.flavor_hash("db", podman.read_host_sources()))
    assert capsys.readouterr().out.strip() == expected


# --- a real build --------------------------------------------------------------------------


def podman_image_id(ref: str) -> str:
    return subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.podman
@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (apt-get install -y podman)")
def test_second_build_is_cached_and_keeps_the_image() -> None:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "images/containers.conf"))}
    command = [sys.executable, str(REPO / "scripts/podman_images.py"), "build", "--flavor", "systemd"]
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    ref = subprocess.run(
        [sys.executable, str(REPO / "scripts/podman_images.py"), "name", "systemd"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    first_id = podman_image_id(ref)
    second = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    assert re.search(rf"systemd\s+cached\s+{re.escape(ref)}", second.stdout), second.stdout
    assert podman_image_id(ref) == first_id
    assert podman_image_id(podman.alias_ref("systemd")) == first_id
    run = subprocess.run(["podman", "run", "--rm", ref, "true"], check=False, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
