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
setting of every podman host at once (flavor, SSH login, port: module_utils/inputs.py).
"""

from __future__ import annotations

import json
from typing import Any

# The check of the inventory is one of the preflight's rules (module_utils/inputs.py); FLAVORS
# is named here too, beside what the images are built from (tests/unit compare the two).
from ansible_collections.openpolicy.deploy.plugins.module_utils.inputs import FLAVORS, host_problems  # noqa: F401


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


class FilterModule:
    """Ansible filters: podman_hosts_missing_images, podman_hosts_current, podman_hosts_problems."""

    def filters(self) -> dict:
        return {
            "podman_hosts_missing_images": missing_images,
            "podman_hosts_current": current_hosts,
            "podman_hosts_problems": host_problems,
        }
