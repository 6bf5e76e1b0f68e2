#!/usr/bin/env python3
"""Build and name the podman host images (Debian 12) for Molecule and the local inventory.

Usage:
    scripts/podman_images.py build [--flavor NAME]...   build flavors (all by default) and their parents
    scripts/podman_images.py list                        flavors, their pinned references, present or not
    scripts/podman_images.py name FLAVOR                 print the pinned image reference of a flavor
    scripts/podman_images.py prune                       remove images and rootfs tarballs no flavor uses

Images are `localhost/openpolicy-host:<flavor>-<hash>` (hash of the flavor's inputs) plus the
moving alias `localhost/openpolicy-host:<flavor>`; a build whose pinned tag exists does nothing.
Set CONTAINERS_CONF=images/containers.conf (the Makefile does). See docs/podman-hosts.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

# Run as a script, Python puts scripts/ first on sys.path, so the shared package imports.
from openpolicy_tools import podman


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="podman_images.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build flavors (all by default) and their parents")
    build.add_argument(
        "--flavor", action="append", default=[], choices=sorted(podman.FLAVORS), help="flavor to build (repeatable)"
    )
    commands.add_parser("list", help="show the flavors and whether their images exist")
    name = commands.add_parser("name", help="print the pinned image reference of a flavor")
    name.add_argument("flavor", choices=sorted(podman.FLAVORS))
    commands.add_parser("prune", help="remove images, build containers and tarballs that no flavor uses")
    return parser.parse_args(argv)


def show_list() -> None:
    sources = podman.read_host_sources()
    podman.require_tools(["podman"])
    present = dict(podman.listed_images())
    for name in podman.build_order([]):
        flavor = podman.FLAVORS[name]
        ref = podman.image_ref(name, podman.flavor_hash(name, sources))
        state = f"present {present[ref][:12]}" if ref in present else "missing"
        parent = flavor.parent or "debootstrap"
        print(f"{name:<9} {state:<20} {ref}  (from {parent}) {flavor.description}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "build":
            podman.build(args.flavor)
        elif args.command == "list":
            show_list()
        elif args.command == "name":
            print(podman.image_ref(args.flavor, podman.flavor_hash(args.flavor, podman.read_host_sources())))
        elif args.command == "prune":
            removed = podman.prune()
            print("\n".join(f"images: removed {item}" for item in removed) or "images: nothing to prune")
    except podman.ImageError as error:
        print(f"podman_images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
