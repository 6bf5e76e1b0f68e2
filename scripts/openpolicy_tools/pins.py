"""Read the pinned versions (versions.toml, requirements.yml) and name the cache folders."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "versions.toml"
REQUIREMENTS_FILE = REPO / "requirements.yml"
CACHE_ROOT = Path(os.environ.get("OPENPOLICY_CACHE", Path.home() / ".cache" / "openpolicy-deploy"))


def load_versions() -> dict:
    with VERSIONS_FILE.open("rb") as handle:
        return tomllib.load(handle)


def load_collection_pins(python: str = "python3") -> dict[str, str]:
    """Return {namespace.name: version} from requirements.yml.

    The file is YAML (ansible-galaxy's format); `python` must be an interpreter with PyYAML,
    which the bootstrap's virtualenv has even where the system Python does not.
    """
    code = (
        "import json, sys, yaml; data = yaml.safe_load(open(sys.argv[1])); "
        "print(json.dumps({c['name']: str(c['version']) for c in data['collections']}))"
    )
    out = subprocess.run([python, "-c", code, str(REQUIREMENTS_FILE)], check=True, capture_output=True, text=True)
    pins = json.loads(out.stdout)
    for name, version in pins.items():
        if version.startswith((">", "<", "=", "~", "*")):
            raise ValueError(f"requirements.yml: collection {name} must pin an exact version, got {version!r}")
    return pins


# Go programs: cache folder name -> the key of versions.toml's [go] table.
GO_TOOL_KEYS = {
    "kubernetes": "kubernetes",
    "etcd": "etcd",
    "helm": "helm",
    "kwok": "kwok",
    "metrics-server": "metrics_server",
}


def go_tool_dir(name: str, versions: dict | None = None) -> Path:
    """The cache folder of one Go program, keyed by its pinned version."""
    versions = versions or load_versions()
    return CACHE_ROOT / f"{name}-{versions['go'][GO_TOOL_KEYS[name]]}"


def apt_packages(versions: dict | None = None) -> dict[str, str]:
    """The Debian packages the machine needs: {package: why}, in versions.toml's order."""
    versions = versions or load_versions()
    return dict(versions["apt"])


def apt_install_command(packages: list[str] | dict[str, str]) -> str:
    """The one line that installs `packages` (the README prints it for every package)."""
    return "apt-get install -y --no-install-recommends " + " ".join(packages)
