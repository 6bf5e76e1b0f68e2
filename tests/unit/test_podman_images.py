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
    after = hashes(with_flavor("systemd", packages=(*podman.FLAVORS["systemd"].packages, "less")))
    assert after["systemd"] != before["systemd"]
    assert after["db"] != before["db"]
    assert after["base"] == before["base"]
    assert after["db-plain"] == before["db-plain"]


def test_base_package_change_rekeys_every_flavor() -> None:
    before = hashes()
    after = hashes(with_flavor("base", packages=("python3", "sudo")))
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


def test_disabled_services_are_part_of_the_key() -> None:
    assert hashes(with_flavor("db", disable_services=("cron",)))["db"] != hashes()["db"]


def test_image_references() -> None:
    assert podman.image_ref("db-plain", "0123456789ab") == "localhost/openpolicy-host:db-plain-0123456789ab"
    assert podman.alias_ref("systemd") == "localhost/openpolicy-host:systemd"


# --- flavor graph --------------------------------------------------------------------------


def test_lineage_is_root_first() -> None:
    assert podman.lineage("db") == ["base", "systemd", "db"]
    assert podman.lineage("db-plain") == ["base", "db-plain"]
    assert podman.lineage("base") == ["base"]


def test_build_order_puts_parents_first_without_repeats() -> None:
    assert podman.build_order(["db", "db-plain"]) == ["base", "systemd", "db", "db-plain"]
    everything = podman.build_order([])
    assert sorted(everything) == sorted(podman.FLAVORS)
    for name in everything:
        parent = podman.FLAVORS[name].parent
        assert parent is None or everything.index(parent) < everything.index(name)


def test_exactly_one_root_and_systemd_follows_the_parent_chain() -> None:
    roots = [flavor.name for flavor in podman.FLAVORS.values() if flavor.parent is None]
    assert roots == ["base"]
    for flavor in podman.FLAVORS.values():
        if flavor.systemd and flavor.name != "systemd":
            assert "systemd" in podman.lineage(flavor.name)
        if not flavor.systemd:
            assert "systemd" not in podman.lineage(flavor.name)
    assert set(podman.FLAVORS["db"].packages) == set(podman.FLAVORS["db-plain"].packages)


def test_unknown_flavor_and_cycles_are_rejected() -> None:
    with pytest.raises(podman.ImageError, match="unknown image flavor 'nope'"):
        podman.lineage("nope")
    looped = with_flavor("base", parent="db")
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
    plain = podman.step_script(podman.FLAVORS["db-plain"])
    assert "systemctl" not in plain
    assert "service postgresql stop" in plain
    # The rootfs already holds base's packages (debootstrap --include); its step only fetches lists.
    assert "apt-get install" not in podman.step_script(podman.FLAVORS["base"])


def test_debootstrap_command_and_mirror() -> None:
    mirror = podman.mirror_from_sources(SOURCES)
    assert mirror == "http://deb.debian.org/debian"
    command = podman.debootstrap_command(podman.FLAVORS["base"], Path("/tmp/root"), mirror)
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
    plain = podman.image_changes(podman.FLAVORS["db-plain"], "0123456789ab")
    assert 'CMD ["/bin/bash"]' in plain
    assert not any(change.startswith("STOPSIGNAL") for change in plain)


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
    args = podman_images.parse_args(["build", "--flavor", "db", "--flavor", "base"])
    assert args.flavor == ["db", "base"]
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
def test_second_base_build_is_cached_and_keeps_the_image() -> None:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "images/containers.conf"))}
    command = [sys.executable, str(REPO / "scripts/podman_images.py"), "build", "--flavor", "base"]
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    ref = subprocess.run(
        [sys.executable, str(REPO / "scripts/podman_images.py"), "name", "base"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    first_id = podman_image_id(ref)
    second = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    assert re.search(rf"base\s+cached\s+{re.escape(ref)}", second.stdout), second.stdout
    assert podman_image_id(ref) == first_id
    assert podman_image_id(podman.alias_ref("base")) == first_id
    run = subprocess.run(["podman", "run", "--rm", ref, "true"], check=False, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
