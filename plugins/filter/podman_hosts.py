"""What one read of podman says of the local environment's hosts (roles/podman_hosts).

The role reads ``podman images --format json`` and ``podman ps --all --format json`` in one task,
the two outputs separated by a line ``---``. From that read:

- ``podman_hosts_missing_images``: the ``<repository>:<flavor>`` images the hosts need that are
  not there, each named once;
- ``podman_hosts_current``: the hosts whose container runs from its flavor's current image (the
  image the tag names now) with the environment's and the flavor's labels: nothing for
  podman_container to change. A container of an older build of the image, stopped, or labelled
  otherwise is not current, and the role starts it the usual way.

And from the inventory, before anything is read: ``podman_hosts_problems``, one line per bad
setting of every podman host at once (flavor, SSH login, port).
"""

from __future__ import annotations

import json
from typing import Any


def _split(read: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    images_text, _, containers_text = read.partition("\n---\n")
    images = json.loads(images_text or "[]") or []
    containers = json.loads(containers_text or "[]") or []
    return images, containers


def _image_ids(images: list[dict[str, Any]]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for image in images:
        for name in image.get("Names") or []:
            ids[name] = image.get("Id", "")
    return ids


def missing_images(read: str, flavors: dict[str, str], repository: str) -> list[str]:
    """The images of `flavors` ({host: flavor}) that podman does not have, sorted."""
    ids = _image_ids(_split(read)[0])
    return sorted({f"{repository}:{flavor}" for flavor in flavors.values()} - set(ids))


def current_hosts(read: str, flavors: dict[str, str], repository: str, environment: str) -> list[str]:
    """The hosts of `flavors` whose container needs no change, sorted."""
    images, containers = _split(read)
    ids = _image_ids(images)
    current = []
    for container in containers:
        names = container.get("Names") or []
        host = names[0] if names else ""
        if host not in flavors:
            continue
        image = f"{repository}:{flavors[host]}"
        labels = container.get("Labels") or {}
        if (
            container.get("State") == "running"
            and container.get("Image") == image
            and ids.get(image)
            and container.get("ImageID") == ids[image]
            and labels.get("openpolicy.dev/environment") == environment
            and labels.get("openpolicy.dev/flavor") == flavors[host]
        ):
            current.append(host)
    return sorted(current)


# The images scripts/podman_images.py builds, one per flavor.
FLAVORS = ("systemd", "db", "ha", "monitoring")
SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh")


def _port(value: Any) -> str:
    return "" if value is None else str(value)


def host_problems(hosts: dict[str, Any], flavors: dict[str, str], address: str, user: str) -> list[str]:
    """One line per bad setting of every podman host ({name: its hostvars}), naming the setting,
    the host and what is expected: a flavor of FLAVORS, the SSH login every podman host shares
    (`address`, `user`), and an unprivileged port no other podman host uses (they share the
    machine's network). One check for all hosts: a loop of three asserts named only the first
    bad host, and cost the preflight a task per host each."""
    problems = []
    ports = [_port(settings.get("ansible_port")) for settings in hosts.values()]
    for name, settings in hosts.items():
        flavor = flavors.get(name, "")
        if flavor not in FLAVORS:
            problems.append(f"podman_host_flavor of {name}: expected one of {', '.join(FLAVORS)}, got {flavor}")
        login = tuple(
            str(settings.get(key, default))
            for key, default in (("ansible_connection", "ssh"), ("ansible_host", ""), ("ansible_user", ""))
        )
        if login[0] not in SSH_CONNECTIONS or login[1:] != (address, user):
            problems.append(
                f"ansible_connection/ansible_host/ansible_user of {name}: expected ssh, {address} and {user} "
                f"for a podman host, got {', '.join(login)}"
            )
        port = _port(settings.get("ansible_port"))
        if not (port.isdigit() and 1024 <= int(port) <= 65535 and ports.count(port) == 1):
            problems.append(
                f"ansible_port of {name}: expected a port from 1024 to 65535 that no other podman host uses "
                f"(they share the host's network), got {port}"
            )
    return problems


class FilterModule:
    """Ansible filters: podman_hosts_missing_images, podman_hosts_current, podman_hosts_problems."""

    def filters(self) -> dict:
        return {
            "podman_hosts_missing_images": missing_images,
            "podman_hosts_current": current_hosts,
            "podman_hosts_problems": host_problems,
        }
