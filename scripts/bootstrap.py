#!/usr/bin/env python3
"""Install or build everything openpolicy-deploy needs, pinned by versions.toml.

Each piece lands in a cache outside the repository, keyed by its version (or by a hash of
its inputs), so a second run finds it and does nothing:

    ~/.cache/openpolicy-deploy/venv-<hash>/          Python tools (ansible, molecule, linters)
    ~/.cache/openpolicy-deploy/collections-<hash>/   Ansible collections of requirements.yml
    ~/.cache/openpolicy-deploy/checkov-<version>-<hash>/  checkov, in a venv of its own
    ~/.cache/openpolicy-deploy/<tool>-<version>/bin  Go programs built from the module proxy

The repository gets one gitignored folder, `.toolchain/`, of symlinks into that cache:
`.toolchain/bin` (put it first on PATH), `.toolchain/venv`, `.toolchain/mitogen-strategy`
(Mitogen's opt-in strategies, inside the venv) and `.toolchain/collections`
(ansible.cfg reads collections from there).

Usage: scripts/bootstrap.py [--only STEP[,STEP]] [--list]
Steps: system (the Debian packages of versions.toml [apt] and the Go toolchain, checked first
and in under a second; missing packages are installed as root or with passwordless sudo, else
named in one `apt-get install` line), venv, collections, tools (venvs of their own), go
(programs), modules (files the tests read). The podman images are built by
scripts/podman_images.py. Every build says what it does, and how long it took.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from openpolicy_tools.pins import (  # noqa: E402
    CACHE_ROOT,
    GO_TOOL_KEYS,
    apt_install_command,
    apt_packages,
    go_tool_dir,
    load_collection_pins,
    load_versions,
)

TOOLCHAIN = REPO / ".toolchain"
COMPLETE_MARK = ".complete"


class BootstrapError(Exception):
    """A step cannot finish; the message says what is missing and how to get it."""


def log(message: str) -> None:
    print(f"bootstrap: {message}", flush=True)


def duration(seconds: float) -> str:
    """2m55s, 1h02m, 4.2s: how long a step took, as a reader wants it."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


HEARTBEAT_SECONDS = 60.0


@contextlib.contextmanager
def progress(doing: str, done: str) -> Iterator[None]:
    """Say what a long step does, that it still does it every minute, and how long it took."""
    log(f"{doing} ...")
    started = time.monotonic()
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            log(f"still {doing} ({duration(time.monotonic() - started)})")

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    log(f"{done} in {duration(time.monotonic() - started)}")


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    merged = {**os.environ, **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=merged, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise BootstrapError(f"command failed ({result.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    return result.stdout


def short_hash(*parts: object) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARK).is_file()


def mark_complete(folder: Path, started: float) -> None:
    (folder / COMPLETE_MARK).write_text(f"built in {time.monotonic() - started:.1f}s\n")


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """One builder per cache folder: a second bootstrap (another checkout, CI) waits for the
    first, then finds the folder complete instead of building into it at the same time."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder.with_name(f"{folder.name}.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another bootstrap that is building {folder.name}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def link(target: Path, name: Path) -> bool:
    """Point the symlink `name` at `target`; return True when it had to change."""
    if name.is_symlink() and os.readlink(name) == str(target):
        return False
    name.parent.mkdir(parents=True, exist_ok=True)
    if name.is_symlink() or name.exists():
        name.unlink()
    name.symlink_to(target)
    return True


# --- System packages and the Go toolchain ---------------------------------------------------


def dpkg_status(packages: list[str]) -> str:
    """dpkg-query's `<package> <status>` lines for the packages it knows (one call for all)."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages],
        text=True,
        capture_output=True,
        check=False,
    )
    return result.stdout


def missing_packages(packages: list[str], status: str) -> list[str]:
    """The packages that dpkg-query's output does not report as installed, in the given order."""
    installed = set()
    for line in status.splitlines():
        name, _, state = line.partition(" ")
        if state.strip() == "install ok installed":
            installed.add(name.split(":")[0])
    return [package for package in packages if package not in installed]


def passwordless_sudo() -> bool:
    if shutil.which("sudo") is None:
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0


def install_prefix() -> list[str] | None:
    """How this user may install packages: [] as root, ["sudo", "-n"] with passwordless sudo, else None."""
    if os.geteuid() == 0:
        return []
    return ["sudo", "-n"] if passwordless_sudo() else None


def go_version(go: str) -> tuple[int, ...] | None:
    """(1, 26, 8) from `go env GOVERSION` (go1.26.8, go1.27rc1), None when it says something else."""
    result = subprocess.run([go, "env", "GOVERSION"], text=True, capture_output=True, check=False)
    match = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", result.stdout.strip())
    if result.returncode != 0 or match is None:
        return None
    return tuple(int(n) for n in match.groups(default="0"))


def go_toolchain_problem(versions: dict) -> str | None:
    """One line naming what is wrong with the machine's Go toolchain, or None."""
    minimum = versions["go_toolchain"]["minimum"]
    how = f"install Go >= {minimum} (https://go.dev/doc/install; Debian 12's golang is too old) and run again"
    go = shutil.which("go")
    if go is None:
        return f"no Go toolchain on PATH: the control plane, Helm and kwok are built from the Go module proxy; {how}"
    have = go_version(go)
    wanted = tuple(int(n) for n in minimum.split("."))
    if have is None or have[: len(wanted)] < wanted:
        found = ".".join(map(str, have)) if have else "an unknown version"
        return f"{go} is Go {found}, the [go] programs need Go >= {minimum}; {how}"
    return None


RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def port_set(ranges: str) -> set[int]:
    """The ports of a sysctl port list such as "52200-53399,55400-60999"."""
    ports: set[int] = set()
    for part in filter(None, (p.strip() for p in ranges.split(","))):
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


def reserve_ports(versions: dict) -> str:
    """Keep versions.toml [kernel] reserved_loopback_ports out of the ephemeral range."""
    wanted = versions["kernel"]["reserved_loopback_ports"]
    if not RESERVED_PORTS.exists():
        return "no net.ipv4.ip_local_reserved_ports here: ports not reserved"
    current = RESERVED_PORTS.read_text().strip()
    if port_set(wanted) <= port_set(current):
        return "test ports reserved"
    value = ",".join(filter(None, [current, wanted]))
    command = ["sysctl", "-q", "-w", f"net.ipv4.ip_local_reserved_ports={value}"]
    prefix = install_prefix()
    try:
        if prefix == []:
            RESERVED_PORTS.write_text(value + "\n")
        elif prefix is not None:
            run([*prefix, *command])
        else:
            raise PermissionError
    except (OSError, BootstrapError):
        # Not fatal: without it a host's port is taken now and then by an outgoing connection.
        return f"warning: test ports not reserved; to keep hosts' ports free run: sudo {' '.join(command)}"
    return f"reserved ports {wanted}"


def step_system(versions: dict) -> str:
    """Check versions.toml [apt] and the Go toolchain; install the packages when allowed."""
    packages = list(apt_packages(versions))
    try:
        missing = missing_packages(packages, dpkg_status(packages))
    except FileNotFoundError as error:
        raise BootstrapError(
            f"no dpkg-query: the machine is expected to be Debian 12; install the equivalents of {' '.join(packages)}"
        ) from error
    problems = []
    if missing:
        prefix = install_prefix()
        if prefix is None:
            how = "run: sudo " if shutil.which("sudo") else "as root run: "
            problems.append(f"missing Debian packages {', '.join(missing)}; {how}{apt_install_command(missing)}")
        else:
            env = {"DEBIAN_FRONTEND": "noninteractive"}
            with progress(f"installing {' '.join(missing)} with apt-get", f"installed {len(missing)} packages"):
                run([*prefix, "apt-get", "update", "-qq"], env=env)
                run([*prefix, *apt_install_command(missing).split(), "-qq"], env=env)
            still = missing_packages(packages, dpkg_status(packages))
            if still:
                problems.append(f"apt-get left {', '.join(still)} uninstalled; run: {apt_install_command(still)}")
    go_problem = go_toolchain_problem(versions)
    if go_problem:
        problems.append(go_problem)
    if problems:
        raise BootstrapError("\n".join(problems))
    state = f"installed {' '.join(missing)}; " if missing else ""
    present = f"{len(packages)} Debian packages and Go >= {versions['go_toolchain']['minimum']} present"
    return f"{state}{present}; {reserve_ports(versions)}"


# --- Python tools -------------------------------------------------------------------------


def venv_folder(versions: dict) -> Path:
    # The transitive pins are in the key too: changing one builds a new venv beside the old one.
    key = short_hash(versions["python"], versions["python_transitive"], sys.version_info[:2])
    return CACHE_ROOT / f"venv-{key}"


def step_venv(versions: dict) -> str:
    folder = venv_folder(versions)
    with cache_lock(folder):
        state = "cached" if is_complete(folder) else install_venv(folder, versions)
    link(folder, TOOLCHAIN / "venv")
    # ansible.cfg names Mitogen's strategy plugins by this link: their folder inside the venv
    # carries the venv's Python version in its path.
    site_packages = folder / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    link(site_packages / "ansible_mitogen" / "plugins" / "strategy", TOOLCHAIN / "mitogen-strategy")
    return f"{state} {folder.name}"


def install_venv(folder: Path, versions: dict) -> str:
    requirements = [f"{name}=={version}" for name, version in versions["python"].items()]
    what = (f"installing {len(requirements)} Python packages into {folder}", f"installed {folder.name}")
    return install_pinned(folder, requirements, versions["python_transitive"], what)


def install_pinned(folder: Path, requirements: list[str], constraints: dict[str, str], what: tuple[str, str]) -> str:
    """A venv built anew in folder (whatever a failed build left is removed first), marked
    complete once pip is done; `what` is the progress lines (starting, done)."""
    started = time.monotonic()
    shutil.rmtree(folder, ignore_errors=True)
    with progress(*what):
        pip_install(folder, requirements, constraints)
    mark_complete(folder, started)
    return "installed"


def pip_install(folder: Path, requirements: list[str], constraints: dict[str, str]) -> None:
    """Make a venv in folder and install requirements, their dependencies held to constraints.

    Constraints rather than requirements: pip uses a pin only for a package that a requirement
    pulls in, so a pin that nothing needs any more stays unused instead of being installed.
    """
    run([sys.executable, "-m", "venv", str(folder)])
    with tempfile.NamedTemporaryFile("w", prefix="constraints-", suffix=".txt") as handle:
        handle.write("".join(f"{name}=={version}\n" for name, version in constraints.items()))
        handle.flush()
        pip = str(folder / "bin" / "pip")
        run([pip, "install", "--quiet", "--disable-pip-version-check", "-c", handle.name, *requirements])


# --- Ansible collections ------------------------------------------------------------------


def manifest_version(collection_dir: Path) -> str | None:
    manifest = collection_dir / "MANIFEST.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text())["collection_info"]["version"]


def offline_wheel_collections(versions: dict, workdir: Path) -> Path:
    """Unpack the ansible_collections tree of the pinned `ansible` wheel into workdir."""
    wheel_pin = versions["collections_offline_wheel"]
    pip = str(venv_folder(versions) / "bin" / "pip")
    run(
        [
            pip,
            "download",
            f"ansible=={wheel_pin['ansible']}",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            wheel_pin["python_version"],
            "--dest",
            str(workdir),
            "--quiet",
            "--disable-pip-version-check",
        ]
    )
    wheel = next(workdir.glob("ansible-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(workdir / "wheel")
    return workdir / "wheel" / "ansible_collections"


def step_collections(versions: dict) -> str:
    pins = load_collection_pins(str(venv_folder(versions) / "bin" / "python"))
    folder = CACHE_ROOT / f"collections-{short_hash(pins, versions['collections_offline_wheel'])}"
    if not is_complete(folder):
        started = time.monotonic()
        shutil.rmtree(folder, ignore_errors=True)
        venv_python = venv_folder(versions) / "bin" / "python"
        bundled = Path(
            run([str(venv_python), "-c", "import ansible_collections; print(list(ansible_collections.__path__)[0])"])
            .strip()
            .splitlines()[-1]
        )
        with (
            progress(f"gathering {len(pins)} collections", f"gathered {folder.name}"),
            tempfile.TemporaryDirectory() as tmp,
        ):
            sources = [bundled, offline_wheel_collections(versions, Path(tmp))]
            for name, wanted in pins.items():
                namespace, collection = name.split(".")
                found = None
                for source in sources:
                    candidate = source / namespace / collection
                    if manifest_version(candidate) == wanted:
                        found = candidate
                        break
                if found is None:
                    have = {str(s): manifest_version(s / namespace / collection) for s in sources}
                    raise BootstrapError(
                        f"collection {name}=={wanted} (requirements.yml) is in no offline source "
                        f"(found {have}); install it with "
                        "`ansible-galaxy collection install -r requirements.yml -p .toolchain/collections`"
                    )
                shutil.copytree(found, folder / "ansible_collections" / namespace / collection, symlinks=True)
        mark_complete(folder, started)
        state = "installed"
    else:
        state = "cached"
    # Verify what is really there: a hand edit of the cache must not pass silently.
    for name, wanted in pins.items():
        namespace, collection = name.split(".")
        have = manifest_version(folder / "ansible_collections" / namespace / collection)
        if have != wanted:
            raise BootstrapError(f"collection {name} is {have} in {folder}, requirements.yml pins {wanted}")
    link(folder, TOOLCHAIN / "collections")
    return f"{state} {len(pins)} collections ({', '.join(f'{k} {v}' for k, v in pins.items())})"


# --- Go programs --------------------------------------------------------------------------


def go_env(folder: Path) -> dict[str, str]:
    return {
        "GOFLAGS": "-buildvcs=false -mod=mod",
        "CGO_ENABLED": "0",
        "GOBIN": str(folder / "bin"),
        "GOTOOLCHAIN": "local",
    }


def wrapper_module(folder: Path, name: str) -> Path:
    src = folder / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    run(["go", "mod", "init", f"openpolicy.local/build/{name}"], cwd=src)
    return src


def build_kubernetes(folder: Path, versions: dict) -> None:
    version, staging = versions["go"]["kubernetes"], versions["go"]["kubernetes_staging"]
    env = go_env(folder)
    src = wrapper_module(folder, "kubernetes")
    info = json.loads(run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], cwd=src, env=env))
    # k8s.io/kubernetes points every staging module at ./staging/...: replace each with the
    # published module of the matching version, read from its own go.mod (not typed here).
    staged = [
        line.split()[0]
        for line in Path(info["GoMod"]).read_text().splitlines()
        if "=> ./staging/" in line and line.strip().startswith("k8s.io/")
    ]
    if not staged:
        raise BootstrapError(f"no staging replaces found in {info['GoMod']}")
    for module in staged:
        run(["go", "mod", "edit", f"-replace={module}={module}@{staging}"], cwd=src, env=env)
    commands = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
    run(["go", "get", *[f"{p}@{version}" for p in packages]], cwd=src, env=env)
    minor = version.lstrip("v").split(".")[1]
    ldflags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ldflags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor=1",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    (folder / "bin").mkdir(exist_ok=True)
    run(
        ["go", "build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(folder / "bin") + "/", *packages],
        cwd=src,
        env=env,
    )


def build_etcd(folder: Path, versions: dict) -> None:
    version = versions["go"]["etcd"]
    env = go_env(folder)
    src = wrapper_module(folder, "etcd")
    # go.etcd.io/etcd/server/v3 replaces its sibling modules by path, so `go install` fails;
    # a two-line main calling etcdmain.Main builds the same server.
    (src / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    run(["go", "get", f"go.etcd.io/etcd/server/v3@{version}"], cwd=src, env=env)
    (folder / "bin").mkdir(exist_ok=True)
    run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(folder / "bin" / "etcd"), "."], cwd=src, env=env)


def go_install(folder: Path, package: str, version: str, version_var: str) -> None:
    """`go install package@version` into folder/bin, with the version stamped into version_var."""
    run(
        ["go", "install", "-trimpath", "-ldflags", f"-s -w -X {version_var}={version}", f"{package}@{version}"],
        env=go_env(folder),
    )


def build_helm(folder: Path, versions: dict) -> None:
    go_install(folder, "helm.sh/helm/v4/cmd/helm", versions["go"]["helm"], "helm.sh/helm/v4/internal/version.version")


def build_actionlint(folder: Path, versions: dict) -> None:
    go_install(
        folder,
        "github.com/rhysd/actionlint/cmd/actionlint",
        versions["go"]["actionlint"],
        "github.com/rhysd/actionlint.version",
    )


def module_dir(module: str, version: str, env: dict[str, str]) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        info = json.loads(run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=Path(tmp), env=env))
    return Path(info["Dir"])


def build_kwok(folder: Path, versions: dict) -> None:
    version = versions["go"]["kwok"]
    env = go_env(folder)
    run(
        [
            "go",
            "install",
            "-trimpath",
            "-ldflags",
            "-s -w",
            f"sigs.k8s.io/kwok/cmd/kwok@{version}",
            f"sigs.k8s.io/kwok/cmd/kwokctl@{version}",
        ],
        env=env,
    )
    # Since v0.8.0 the kwok controller needs stage files; keep the module's defaults beside it.
    stages = module_dir("sigs.k8s.io/kwok", version, env) / "kustomize" / "stage"
    shutil.rmtree(folder / "stage", ignore_errors=True)
    shutil.copytree(stages, folder / "stage")
    for path in (folder / "stage").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_metrics_server(folder: Path, versions: dict) -> None:
    version = versions["go"]["metrics_server"]
    env = go_env(folder)
    src = wrapper_module(folder, "metrics-server")
    run(["go", "get", "-tool", f"sigs.k8s.io/metrics-server/cmd/metrics-server@{version}"], cwd=src, env=env)
    (folder / "bin").mkdir(exist_ok=True)
    run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(folder / "bin" / "metrics-server"),
            "sigs.k8s.io/metrics-server/cmd/metrics-server",
        ],
        cwd=src,
        env=env,
    )
    # Offline, kwokctl needs the APIService and Service manifests from a local folder.
    base = module_dir("sigs.k8s.io/metrics-server", version, env) / "manifests" / "base"
    manifests = folder / "manifests"
    shutil.rmtree(manifests, ignore_errors=True)
    manifests.mkdir()
    for name in ("apiservice.yaml", "service.yaml"):
        shutil.copyfile(base / name, manifests / name)
    (manifests / "kustomization.yaml").write_text("resources:\n- apiservice.yaml\n- service.yaml\n")


GO_TOOLS: dict[str, tuple[Callable[[Path, dict], None], list[str]]] = {
    # cache name (openpolicy_tools.pins.GO_TOOL_KEYS): (builder, binaries it must leave in bin/)
    "kubernetes": (build_kubernetes, ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]),
    "etcd": (build_etcd, ["etcd"]),
    "helm": (build_helm, ["helm"]),
    "kwok": (build_kwok, ["kwok", "kwokctl"]),
    "metrics-server": (build_metrics_server, ["metrics-server"]),
    "actionlint": (build_actionlint, ["actionlint"]),
}


def step_go(versions: dict, tools: list[str] | None = None) -> str:
    problem = go_toolchain_problem(versions)
    if problem:
        raise BootstrapError(problem)
    report = []
    for name, (_, binaries) in GO_TOOLS.items():
        if tools and name not in tools:
            continue
        folder = go_tool_dir(name, versions)
        with cache_lock(folder):
            report.append(build_go_tool(name, folder, versions))
        for binary in binaries:
            link(folder / "bin" / binary, TOOLCHAIN / "bin" / binary)
    return "; ".join(report)


def build_go_tool(name: str, folder: Path, versions: dict) -> str:
    """Build one Go program into its cache folder unless it is there (call under cache_lock)."""
    builder, binaries = GO_TOOLS[name]
    if is_complete(folder) and all((folder / "bin" / b).is_file() for b in binaries):
        return f"{folder.name} cached"
    started = time.monotonic()
    version = versions["go"][GO_TOOL_KEYS[name]]
    (folder / COMPLETE_MARK).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    with progress(
        f"building {name} {version} ({', '.join(binaries)}) from the Go module proxy",
        f"built {name} {version}",
    ):
        builder(folder, versions)
    missing = [b for b in binaries if not (folder / "bin" / b).is_file()]
    if missing:
        raise BootstrapError(f"{folder.name}: build left no {', '.join(missing)}")
    shutil.rmtree(folder / "src", ignore_errors=True)
    mark_complete(folder, started)
    return f"{folder.name} built in {duration(time.monotonic() - started)}"


# Go modules the tests read files from (schemas, CRDs): versions.toml [go] key -> module path.
GO_MODULES = {
    "kubernetes": "k8s.io/kubernetes",
    "prometheus_operator": "github.com/prometheus-operator/prometheus-operator",
}


def step_modules(versions: dict) -> str:
    """Put the modules in the Go module cache; `go mod download` is a no-op when they are there."""
    problem = go_toolchain_problem(versions)
    if problem:
        raise BootstrapError(problem)
    fetched = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, module in GO_MODULES.items():
            spec = f"{module}@{versions['go'][key]}"
            run(["go", "mod", "download", "-json", spec], cwd=Path(tmp), env={"GOFLAGS": "-mod=mod"})
            fetched.append(spec)
    return "in the module cache: " + ", ".join(fetched)


def tool_venv_folder(name: str, versions: dict) -> Path:
    """checkov-3.3.30-<hash>: the tool's version for a reader, and a hash of its dependencies'
    pins so that changing one builds a new venv beside the old one."""
    version = versions["tool_venvs"][name]
    pins = versions.get("tool_venvs_transitive", {}).get(name)
    if pins is None:
        raise BootstrapError(
            f"versions.toml: [tool_venvs] {name} has no [tool_venvs_transitive.{name}] table; "
            f"expected its dependencies' pins (the `pip freeze` of its venv, {name} itself left out)"
        )
    key = short_hash(version, pins, sys.version_info[:2])
    return CACHE_ROOT / f"{name}-{version}-{key}"


def step_tools(versions: dict) -> str:
    report = []
    for name in versions.get("tool_venvs", {}):
        folder = tool_venv_folder(name, versions)
        # As the main venv: a second bootstrap (another checkout, CI) waits for the one
        # installing, then finds the folder complete instead of installing into it as well.
        with cache_lock(folder):
            state = "cached" if is_complete(folder) else install_tool_venv(folder, name, versions)
        report.append(f"{folder.name} {state}")
        link(folder / "bin" / name, TOOLCHAIN / "bin" / name)
    return "; ".join(report) or "none"


def install_tool_venv(folder: Path, name: str, versions: dict) -> str:
    version = versions["tool_venvs"][name]
    what = (f"installing {name} {version} into {folder}", f"installed {name} {version}")
    return install_pinned(folder, [f"{name}=={version}"], versions["tool_venvs_transitive"][name], what)


STEPS: dict[str, Callable[[dict], str]] = {
    "system": step_system,
    "venv": step_venv,
    "collections": step_collections,
    "tools": step_tools,
    "go": step_go,
    "modules": step_modules,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(STEPS), help="comma-separated steps (default: all)")
    parser.add_argument(
        "--tool",
        action="append",
        choices=list(GO_TOOLS),
        help="with the go step, build only this Go program (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="print the cache folders and exit")
    args = parser.parse_args(argv)
    versions = load_versions()
    if args.list:
        try:
            tools = [tool_venv_folder(name, versions) for name in versions.get("tool_venvs", {})]
        except BootstrapError as error:
            print(f"bootstrap: --list: {error}", file=sys.stderr)
            return 1
        for folder in [venv_folder(versions), *tools, *(go_tool_dir(name, versions) for name in GO_TOOLS)]:
            print(folder)
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        parser.error(f"--only: unknown step {', '.join(unknown)}; expected some of {', '.join(STEPS)}")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for step in chosen:
        try:
            result = step_go(versions, args.tool) if step == "go" else STEPS[step](versions)
            log(f"{step}: {result}")
        except BootstrapError as error:
            for line in str(error).splitlines():
                print(f"bootstrap: {step}: {line}", file=sys.stderr)
            return 1
    log(f"done in {duration(time.monotonic() - started)}; put {TOOLCHAIN / 'bin'} first on PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
