"""Unit tests of what roles/podman_hosts reads from one podman listing
(plugins/filter/podman_hosts.py): the missing images, and the containers that need no change."""

from __future__ import annotations

import json

from tests.helpers import load_filter_plugin

hosts = load_filter_plugin("podman_hosts")

REPOSITORY = "localhost/openpolicy-host"
FLAVORS = {"env-db1": "ha", "env-backup1": "ha", "env-monitoring1": "monitoring"}
IMAGES = [
    {"Id": "aaa", "Names": [f"{REPOSITORY}:ha-1234", f"{REPOSITORY}:ha"]},
    {"Id": "mmm", "Names": [f"{REPOSITORY}:monitoring-5678", f"{REPOSITORY}:monitoring"]},
]


def container(name: str, flavor: str, image_id: str, state: str = "running", environment: str = "env") -> dict:
    return {
        "Names": [name],
        "Image": f"{REPOSITORY}:{flavor}",
        "ImageID": image_id,
        "State": state,
        "Labels": {"openpolicy.dev/environment": environment, "openpolicy.dev/flavor": flavor},
    }


def read(images: list[dict], containers: list[dict]) -> str:
    """The role's one task prints both listings, a line `---` between them."""
    return json.dumps(images) + "\n---\n" + json.dumps(containers)


def test_running_containers_of_the_current_images_need_no_change() -> None:
    containers = [container("env-db1", "ha", "aaa"), container("env-monitoring1", "monitoring", "mmm")]
    assert hosts.current_hosts(read(IMAGES, containers), FLAVORS, REPOSITORY, "env") == ["env-db1", "env-monitoring1"]
    assert hosts.missing_images(read(IMAGES, containers), FLAVORS, REPOSITORY) == []


def test_a_stopped_an_outdated_or_a_relabelled_container_is_started_the_usual_way() -> None:
    containers = [
        container("env-db1", "ha", "aaa", state="exited"),
        container("env-backup1", "ha", "older-build"),
        container("env-monitoring1", "monitoring", "mmm", environment="other"),
        container("someone-else", "ha", "aaa"),
    ]
    assert hosts.current_hosts(read(IMAGES, containers), FLAVORS, REPOSITORY, "env") == []


def test_a_host_of_another_flavor_than_its_container_is_not_current() -> None:
    flavors = {"env-db1": "monitoring"}
    assert hosts.current_hosts(read(IMAGES, [container("env-db1", "ha", "aaa")]), flavors, REPOSITORY, "env") == []


def test_every_missing_image_is_named_once() -> None:
    flavors = {"a": "db", "b": "db", "c": "systemd", "d": "ha"}
    assert hosts.missing_images(read(IMAGES, []), flavors, REPOSITORY) == [f"{REPOSITORY}:db", f"{REPOSITORY}:systemd"]
    assert hosts.current_hosts(read([], []), flavors, REPOSITORY, "env") == []


def test_no_images_and_no_containers_read_as_empty_listings() -> None:
    assert hosts.missing_images("[]\n---\n[]", {"a": "ha"}, REPOSITORY) == [f"{REPOSITORY}:ha"]
    assert hosts.current_hosts("\n---\n", {"a": "ha"}, REPOSITORY, "env") == []


# The inventory's podman hosts, before anything is read (podman_hosts_problems).
LOGIN = {"ansible_host": "127.0.0.1", "ansible_user": "deploy"}


def problems(hosts_vars: dict, flavors: dict | None = None) -> list[str]:
    flavors = flavors if flavors is not None else dict.fromkeys(hosts_vars, "db")
    return hosts.host_problems(hosts_vars, flavors, "127.0.0.1", "deploy")


def test_podman_hosts_with_their_own_ports_and_the_shared_login_pass() -> None:
    settings = {"a": {**LOGIN, "ansible_port": 52201}, "b": {**LOGIN, "ansible_port": "52202"}}
    assert problems(settings, {"a": "ha", "b": "monitoring"}) == []


def test_every_bad_setting_of_every_podman_host_is_named_at_once() -> None:
    settings = {
        "a": {**LOGIN, "ansible_port": 52201},
        "b": {**LOGIN, "ansible_port": 52201, "ansible_user": "root"},
        "c": {**LOGIN, "ansible_port": 80, "ansible_connection": "local"},
        "d": {**LOGIN},
    }
    found = problems(settings, {"a": "db", "b": "db", "c": "db", "d": "debian"})
    assert found == [
        "ansible_port of a: expected a port from 1024 to 65535 that no other podman host uses "
        "(they share the host's network), got 52201",
        "ansible_connection/ansible_host/ansible_user of b: expected ssh, 127.0.0.1 and deploy for a podman host, "
        "got ssh, 127.0.0.1, root",
        "ansible_port of b: expected a port from 1024 to 65535 that no other podman host uses "
        "(they share the host's network), got 52201",
        "ansible_connection/ansible_host/ansible_user of c: expected ssh, 127.0.0.1 and deploy for a podman host, "
        "got local, 127.0.0.1, deploy",
        "ansible_port of c: expected a port from 1024 to 65535 that no other podman host uses "
        "(they share the host's network), got 80",
        "podman_host_flavor of d: expected one of systemd, db, ha, monitoring, got debian",
        "ansible_port of d: expected a port from 1024 to 65535 that no other podman host uses "
        "(they share the host's network), got ",
    ]
    assert all("\n" not in line for line in found)


def test_the_full_name_of_the_ssh_connection_is_ssh() -> None:
    assert problems({"a": {**LOGIN, "ansible_port": 52201, "ansible_connection": "ansible.builtin.ssh"}}) == []


def test_the_flavors_checked_are_the_images_built() -> None:
    from openpolicy_tools import podman  # scripts/ is on pytest's pythonpath (pyproject.toml)

    assert set(hosts.FLAVORS) == set(podman.FLAVORS)
