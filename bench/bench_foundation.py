#!/usr/bin/env python3
"""Foundation figures: bootstrap and local cluster start, cold and warm; control-plane memory.

Prints one line per figure. Not part of `make test` (no timing is asserted anywhere).

    python bench/bench_foundation.py              # warm bootstrap, cluster cold/warm/100 nodes, RSS
    python bench/bench_foundation.py --cold-build # also a cold build of every Go program into a
                                                  # throwaway cache and GOCACHE (tens of minutes)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from openpolicy_tools.pins import go_tool_dir  # noqa: E402

sys.path.insert(0, str(REPO))
from bench.results_file import write_results  # noqa: E402

PYTHON = sys.executable
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "metrics-server")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, check=True, capture_output=True, text=True)
    return time.monotonic() - started


def cluster_cmd(action: str, workdir: Path, *extra: str) -> list[str]:
    return [
        PYTHON,
        "scripts/local_cluster.py",
        action,
        "--name",
        "openpolicy-bench",
        "--workdir",
        str(workdir),
        "--kubeconfig",
        str(workdir.parent / "kubeconfig"),
        *extra,
    ]


def control_plane_rss_mib(workdir: Path) -> dict[str, float]:
    """Resident memory of every process started from the bench cluster's folder."""
    usage: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if not cmdline or str(workdir) not in " ".join(part.decode(errors="replace") for part in cmdline):
            continue
        name = Path(cmdline[0].decode(errors="replace")).name
        component = next((c for c in CONTROL_PLANE if name.startswith(c)), None)
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        if component:
            usage[component] = usage.get(component, 0) + rss / 1024
    return usage


def bench_bootstrap(cold_build: bool, figures: dict) -> None:
    warm = timed([PYTHON, "scripts/bootstrap.py"])
    print(f"bootstrap warm (everything cached): {warm:.1f} s")
    figures["bootstrap_warm"] = round(warm, 2)
    if not cold_build:
        return
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as gocache:
        env = {"OPENPOLICY_CACHE": cache, "GOCACHE": gocache}
        # The venv and collections are copies from PyPI: time them apart from the Go builds.
        venv = timed([PYTHON, "scripts/bootstrap.py", "--only", "venv,collections"], env)
        go = timed([PYTHON, "scripts/bootstrap.py", "--only", "go"], env)
        print(f"bootstrap cold: venv+collections {venv:.0f} s, Go programs {go:.0f} s (empty GOCACHE)")
        figures.update(bootstrap_cold_venv_collections=round(venv, 1), bootstrap_cold_go=round(go, 1))


def bench_cluster(figures: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "cluster"
        try:
            cold = timed(cluster_cmd("up", workdir, "--nodes", "3"))
            warm = timed(cluster_cmd("up", workdir, "--nodes", "3"))
            print(f"cluster start cold (3 nodes Ready): {cold:.1f} s")
            print(f"cluster up warm (already running, no change): {warm:.2f} s")
            wide = timed(cluster_cmd("up", workdir, "--nodes", "100"))
            print(f"cluster scale 3 -> 100 nodes Ready: {wide:.1f} s")
            time.sleep(5)
            rss = control_plane_rss_mib(workdir)
            total = sum(rss.values())
            parts = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(rss.items()))
            print(f"control plane resident memory with 100 nodes: {total:.0f} MiB ({parts})")
            figures.update(
                cluster_start_cold=round(cold, 1),
                cluster_up_warm=round(warm, 2),
                cluster_scale_3_to_100_nodes=round(wide, 1),
                control_plane_rss_100_nodes_mib=round(total),
            )
        finally:
            subprocess.run(cluster_cmd("down", workdir), cwd=REPO, check=False, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold-build", action="store_true", help="also time a cold build of the Go programs")
    args = parser.parse_args()
    if not shutil.which("go"):
        print("bench: no Go toolchain on PATH", file=sys.stderr)
        return 1
    if not go_tool_dir("kubernetes").exists():
        print("bench: run `make bootstrap` first", file=sys.stderr)
        return 1
    figures: dict = {}
    bench_bootstrap(args.cold_build, figures)
    bench_cluster(figures)
    write_results("foundation", figures, notes="no plain tool to compare: absolute seconds and MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
