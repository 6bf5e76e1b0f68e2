"""Podman host images for Molecule and the local inventory: flavors, input hashes, builds.

An image flavor is a parent image plus a list of Debian packages installed on top of it. The
`systemd` flavor has no parent: it is a debootstrap rootfs imported into podman with systemd
and sshd added. Every flavor boots systemd as PID 1. Each flavor is tagged twice:

    localhost/openpolicy-host:<flavor>-<hash>   pinned: hash of everything that went into it
    localhost/openpolicy-host:<flavor>          moving alias to the newest build

The hash covers the flavor's definition (packages, the shell step that installs them, image
settings), the Debian suite, the apt sources copied in and the parent's hash, so changing a
parent rebuilds its children. A build whose pinned tag exists does nothing.

Only the pure parts (flavor graph, hashing, command lines) are free of side effects; `build`,
`prune` and `inspect_images` call podman and debootstrap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from openpolicy_tools.pins import CACHE_ROOT

IMAGE_REPOSITORY = "localhost/openpolicy-host"
SUITE = "bookworm"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
IMAGE_CACHE = CACHE_ROOT / "images"
# Bump when the build procedure itself changes in a way the flavor definitions do not show.
RECIPE_VERSION = 2
LABEL_FLAVOR = "openpolicy.dev/image-flavor"
LABEL_HASH = "openpolicy.dev/image-hash"
BUILD_CONTAINER_PREFIX = "openpolicy-image-build-"

# Every host is a systemd host reached over SSH, as real database hosts are: systemd is PID 1
# and openssh-server is installed but disabled, so that roles/podman_hosts starts it only
# after it has written the host's own port, ListenAddress and login rules, and each container
# makes its own host keys (the image carries none).
# What debootstrap puts in the rootfs; the root flavor's own packages go on top with apt.
ROOTFS_PACKAGES = (
    "python3",
    # Ansible's apt module needs it for check mode (and installs it otherwise).
    "python3-apt",
    "sudo",
    "ca-certificates",
)
HOST_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
)
DB_PACKAGES = (
    "postgresql-15",
    "postgresql-contrib",
    "pgbackrest",
    "redis-server",
    "python3-psycopg2",
    "acl",
)
# A monitoring host as a cloud image that has the monitoring packages in it (roles prometheus,
# alertmanager, node_exporter, host_logs and host_baseline find them installed): the same
# packages the roles install, so the roles' own tasks still configure and start everything.
MONITORING_PACKAGES = (
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "systemd-journal-remote",
    "openssl",
    "acl",
    "procps",
    "tzdata",
)
# A database host of a highly available environment (staging, production) as a cloud image that
# has the HA and monitoring agents' packages in it, on top of the db flavor's: Patroni (with its
# etcd client; etcd itself is the toolkit's binary), Redis Sentinel, HAProxy for the router host,
# the exporters and journal-upload. The roles install the same packages (a no-op here) and
# configure and start everything themselves.
# Each of these packages ships a service of its own name (disabled below).
HA_AGENTS = (
    "patroni",
    "redis-sentinel",
    "haproxy",
    "prometheus-node-exporter",
    "prometheus-postgres-exporter",
    "prometheus-redis-exporter",
)
HA_PACKAGES = (*HA_AGENTS, "python3-etcd", "systemd-journal-remote", "openssl", "procps", "tzdata")
# Services the packages install: the image ships them disabled, so that the roles that own
# them (podman_hosts for sshd, PostgreSQL, Redis) decide when they start.
HOST_SERVICES = ("ssh",)
DB_SERVICES = ("postgresql", "redis-server")
# Debian starts these at install (several on 0.0.0.0): the hosts share this machine's network.
HA_SERVICES = (*HA_AGENTS, "systemd-journal-remote", "systemd-journal-upload")
# Debian starts these on 0.0.0.0 at install: the hosts share this machine's network.
MONITORING_SERVICES = (
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "systemd-journal-remote",
    "systemd-journal-upload",
)

# No host key and no PostgreSQL cluster baked in: each container makes its own host keys
# (roles/podman_hosts), and roles/postgresql initialises the host's cluster, so two db hosts
# never share a system identifier. Debian's postgresql-common makes 15/main at install.
_DROP_HOST_KEYS = "rm -f /etc/ssh/ssh_host_*"
_DISABLE_JOURNAL_REMOTE_SOCKET = "systemctl disable systemd-journal-remote.socket >/dev/null 2>&1 || true"
_DROP_MAIN_CLUSTER = "if [ -d /etc/postgresql/15/main ]; then pg_dropcluster 15 main; fi"

# Keeps package maintainer scripts from starting services while the image is built.
_POLICY_RC = "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d"
_APT_INSTALL = "apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold"


class ImageError(Exception):
    """A build or lookup cannot finish; the message says what is missing and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Flavor:
    """One image: `packages` installed on top of `parent` (or on a debootstrap rootfs).

    Every flavor boots systemd as PID 1 (`podman run --systemd=always IMAGE /sbin/init`).
    """

    name: str
    parent: str | None
    packages: tuple[str, ...]
    description: str
    disable_services: tuple[str, ...] = ()
    # Shell lines run last, after the packages are in (cleanup of what must not be shared).
    finish: tuple[str, ...] = ()

    @property
    def command(self) -> tuple[str, ...]:
        return ("/sbin/init",)


FLAVORS: dict[str, Flavor] = {
    flavor.name: flavor
    for flavor in (
        Flavor(
            name="systemd",
            parent=None,
            packages=HOST_PACKAGES,
            description="Debian 12 minbase with python3, sudo; systemd as PID 1; sshd (disabled, no host keys)",
            disable_services=HOST_SERVICES,
            finish=(_DROP_HOST_KEYS,),
        ),
        Flavor(
            name="db",
            parent="systemd",
            packages=DB_PACKAGES,
            description="systemd + PostgreSQL 15 (no cluster), pgBackRest, Redis (services disabled)",
            disable_services=DB_SERVICES,
            finish=(_DROP_MAIN_CLUSTER,),
        ),
        Flavor(
            name="ha",
            parent="db",
            packages=HA_PACKAGES,
            description="db + Patroni, Redis Sentinel, HAProxy, the exporters, journal-upload (services disabled)",
            disable_services=HA_SERVICES,
            finish=(_DISABLE_JOURNAL_REMOTE_SOCKET,),
        ),
        Flavor(
            name="monitoring",
            parent="systemd",
            packages=MONITORING_PACKAGES,
            description="systemd + Prometheus, Alertmanager, node_exporter, systemd-journal-remote (services disabled)",
            disable_services=MONITORING_SERVICES,
            finish=(_DISABLE_JOURNAL_REMOTE_SOCKET,),
        ),
    )
}


# --- pure parts -------------------------------------------------------------------------


def lineage(name: str, flavors: Mapping[str, Flavor] = FLAVORS) -> list[str]:
    """Return the flavor's ancestors and itself, root first; reject unknown names and cycles."""
    chain: list[str] = []
    current: str | None = name
    while current is not None:
        if current not in flavors:
            known = ", ".join(sorted(flavors))
            raise ImageError(f"unknown image flavor {current!r} (known: {known})")
        if current in chain:
            raise ImageError(f"image flavors form a cycle: {' -> '.join([*chain, current])}")
        chain.append(current)
        current = flavors[current].parent
    return list(reversed(chain))


def build_order(requested: Sequence[str], flavors: Mapping[str, Flavor] = FLAVORS) -> list[str]:
    """Return the requested flavors (all when empty) with their parents, each parent first."""
    order: list[str] = []
    for name in requested or sorted(flavors):
        for step in lineage(name, flavors):
            if step not in order:
                order.append(step)
    return order


def step_script(flavor: Flavor) -> str:
    """Return the shell run inside a container of the parent image to make this flavor."""
    lines = ["set -eu", "export DEBIAN_FRONTEND=noninteractive", _POLICY_RC, "apt-get update -q"]
    lines.append(f"{_APT_INSTALL} {' '.join(sorted(flavor.packages))}")
    for service in flavor.disable_services:
        # systemctl enable/disable work on unit files without a running systemd.
        lines.append(f"systemctl disable {service}.service >/dev/null 2>&1 || true")
    lines += [*flavor.finish, "rm -f /usr/sbin/policy-rc.d", "apt-get clean"]
    lines.append("rm -rf /var/cache/apt/*.bin /tmp/* /var/tmp/*")
    return "\n".join(lines) + "\n"


def flavor_hash(
    name: str,
    sources_text: str,
    flavors: Mapping[str, Flavor] = FLAVORS,
    suite: str = SUITE,
) -> str:
    """Return the 12-hex-digit hash of everything that goes into `name`, parents included."""
    lineage(name, flavors)  # rejects unknown names and cycles before recursing
    flavor = flavors[name]
    parent_hash = flavor_hash(flavor.parent, sources_text, flavors, suite) if flavor.parent else None
    # The description is prose and the package order does not change what apt installs.
    definition = {**dataclasses.asdict(flavor), "description": None, "packages": sorted(flavor.packages)}
    inputs = {
        "recipe": RECIPE_VERSION,
        "definition": definition,
        "step": step_script(flavor),
        "command": list(flavor.command),
        "suite": suite,
        "parent": parent_hash,
        # Only the rootfs carries the apt sources; children inherit them through parent_hash.
        "sources": sources_text if flavor.parent is None else None,
        "rootfs": sorted(ROOTFS_PACKAGES) if flavor.parent is None else None,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def image_ref(name: str, digest: str) -> str:
    return f"{IMAGE_REPOSITORY}:{name}-{digest}"


def alias_ref(name: str) -> str:
    return f"{IMAGE_REPOSITORY}:{name}"


def mirror_from_sources(sources_text: str, suite: str = SUITE) -> str:
    """Return the first URI of a deb822 stanza that carries `suite` (debootstrap's mirror)."""
    for stanza in sources_text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
        if suite in fields.get("suites", "").split() and fields.get("uris"):
            return fields["uris"].split()[0]
    raise ImageError(f"no apt source for suite {suite!r} in the host's {HOST_SOURCES}")


def debootstrap_command(target: Path, mirror: str, suite: str = SUITE) -> list[str]:
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(sorted(ROOTFS_PACKAGES))}",
        suite,
        str(target),
        mirror,
    ]


def image_changes(flavor: Flavor, digest: str) -> list[str]:
    """Return podman's --change instructions (command, labels) for a flavor's image."""
    changes = [
        f"CMD {json.dumps(list(flavor.command))}",
        f"LABEL {LABEL_FLAVOR}={flavor.name}",
        f"LABEL {LABEL_HASH}={digest}",
    ]
    # systemd shuts down on SIGRTMIN+3, not on podman's default SIGTERM.
    changes.append("STOPSIGNAL SIGRTMIN+3")
    return changes


def read_host_sources(path: Path = HOST_SOURCES) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ImageError(f"{path} is missing: the images copy the host's Debian apt sources (Debian 12 host)") from None


# --- podman and debootstrap ---------------------------------------------------------------


def require_tools(tools: Sequence[str], path: str | None = None) -> None:
    """Fail with the apt command to run when a tool is missing (root's sbin counts: debootstrap is there)."""
    search = path if path is not None else f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    missing = [tool for tool in tools if shutil.which(tool, path=search) is None]
    if missing:
        # Each tool comes in the Debian package of the same name.
        raise ImageError(f"{', '.join(missing)} not found: install with `apt-get install -y {' '.join(missing)}`")


def run(cmd: Sequence[str], *, stdin: int | None = None) -> str:
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    result = subprocess.run(list(cmd), stdin=stdin, env=env, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        tail = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()[-20:]
        raise ImageError(f"command failed ({result.returncode}): {' '.join(cmd)[:300]}\n" + "\n".join(tail))
    return result.stdout or ""


def podman_ok(*args: str) -> bool:
    """Run a podman command whose failure is an answer, not an error; return whether it succeeded."""
    return subprocess.run(["podman", *args], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Serialise builds across processes: several `make images` may run at once."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    with (IMAGE_CACHE / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def unmount_below(directory: Path) -> None:
    """Unmount what an interrupted debootstrap left mounted (proc, sys, device binds) before deleting."""
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    prefix = str(directory.resolve()) + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def rootfs_tarball(flavor: Flavor, digest: str, sources_text: str) -> Path:
    """Return the cached debootstrap rootfs tarball of the root flavor, making it when absent."""
    tarball = IMAGE_CACHE / f"rootfs-{SUITE}-{flavor.name}-{digest}.tar"
    if tarball.exists():
        return tarball
    require_tools(["debootstrap"])
    workdir = Path(tempfile.mkdtemp(prefix="rootfs-", dir=IMAGE_CACHE))
    target = workdir / "root"
    try:
        run(debootstrap_command(target, mirror_from_sources(sources_text)))
        sources_dir = target / "etc/apt/sources.list.d"
        sources_dir.mkdir(parents=True, exist_ok=True)
        (sources_dir / HOST_SOURCES.name).write_text(sources_text)
        (target / "etc/apt/sources.list").unlink(missing_ok=True)
        for leftover in [*target.glob("var/cache/apt/archives/*.deb"), *target.glob("var/lib/apt/lists/*_*")]:
            leftover.unlink()
        partial = tarball.with_suffix(".tar.partial")
        run(["tar", "--numeric-owner", "-C", str(target), "-cf", str(partial), "."])
        partial.rename(tarball)
    finally:
        unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    return tarball


def commit_step(flavor: Flavor, parent_ref: str, ref: str, digest: str) -> None:
    """Run the flavor's step in a container of `parent_ref` and commit it as `ref`."""
    container = f"{BUILD_CONTAINER_PREFIX}{flavor.name}-{digest}"
    podman_ok("rm", "-f", container)
    try:
        run(["podman", "run", "--name", container, parent_ref, "/bin/sh", "-c", step_script(flavor)])
        changes = [arg for change in image_changes(flavor, digest) for arg in ("--change", change)]
        run(["podman", "commit", "--quiet", *changes, container, ref])
    finally:
        podman_ok("rm", "-f", container)


def build_flavor(flavor: Flavor, digest: str, parent_digest: str | None, sources_text: str) -> None:
    ref = image_ref(flavor.name, digest)
    if flavor.parent is None:
        tarball = rootfs_tarball(flavor, digest, sources_text)
        rootfs_ref = f"{IMAGE_REPOSITORY}:{flavor.name}-rootfs-{digest}"
        with tarball.open("rb") as handle:
            run(["podman", "import", "--quiet", "-", rootfs_ref], stdin=handle.fileno())
        try:
            commit_step(flavor, rootfs_ref, ref, digest)
        finally:
            podman_ok("rmi", rootfs_ref)
    else:
        assert parent_digest is not None
        commit_step(flavor, image_ref(flavor.parent, parent_digest), ref, digest)


def build(requested: Sequence[str], sources_text: str | None = None) -> list[tuple[str, str, float]]:
    """Build the requested flavors (all when empty) and their parents; return (name, state, seconds)."""
    require_tools(["podman", "runc"])
    sources = read_host_sources() if sources_text is None else sources_text
    results: list[tuple[str, str, float]] = []
    with build_lock():
        # One listing for every flavor: a podman call costs about 0.1 s, and `make up` with
        # nothing to build made two per flavor (exists, tag).
        present = dict(listed_images())
        for name in build_order(requested):
            started = time.monotonic()
            flavor = FLAVORS[name]
            digest = flavor_hash(name, sources)
            ref = image_ref(name, digest)
            state = "cached"
            if ref not in present:
                parent_digest = flavor_hash(flavor.parent, sources) if flavor.parent else None
                build_flavor(flavor, digest, parent_digest, sources)
                state = "built"
            if state == "built" or present.get(alias_ref(name)) != present[ref]:
                run(["podman", "tag", ref, alias_ref(name)])
            seconds = time.monotonic() - started
            print(f"images: {name:<9} {state:<6} {ref}  {seconds:.1f}s", flush=True)
            results.append((name, state, seconds))
    return results


def listed_images() -> list[tuple[str, str]]:
    """Return (reference, image id) for every tag of the image repository podman holds."""
    out = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", IMAGE_REPOSITORY])
    return [tuple(line.split()[:2]) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def prune(sources_text: str | None = None) -> list[str]:
    """Remove images, build containers and rootfs tarballs that no current flavor uses."""
    require_tools(["podman"])
    sources = read_host_sources() if sources_text is None else sources_text
    digests = {name: flavor_hash(name, sources) for name in FLAVORS}
    keep = {image_ref(name, digest) for name, digest in digests.items()} | {alias_ref(name) for name in FLAVORS}
    removed: list[str] = []
    with build_lock():
        out = run(["podman", "ps", "-a", "--format", "{{.Names}}"])
        for container in out.split():
            if container.startswith(BUILD_CONTAINER_PREFIX):
                podman_ok("rm", "-f", container)
                removed.append(f"container {container}")
        for ref, _ in listed_images():
            # An image still used by a container stays: podman refuses and we move on.
            if ref not in keep and podman_ok("rmi", ref):
                removed.append(f"image {ref}")
        for tarball in IMAGE_CACHE.glob("rootfs-*.tar"):
            if tarball.stem.rsplit("-", 1)[1] not in digests.values():
                tarball.unlink()
                removed.append(f"tarball {tarball}")
    return removed
