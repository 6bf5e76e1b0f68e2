#!/usr/bin/env python3
"""The two commands, timed: `make up` fresh and no-op, `make test` warm.

- fresh: `make up` on an empty tool cache (a throwaway OPENPOLICY_CACHE, GOCACHE and
  GOMODCACHE), its build share (`make bootstrap`, `make images`) apart from site.yml;
- no-op: the median of three more `make up`s with nothing to change (and the `changed=` they report);
- test warm: `make test`, target by target (lint, test-unit, test-molecule, test-e2e);
- CI cold (`--ci-cold`, off by default): `.ci/run` in a fresh clone of HEAD, as CI runs it, with
  every cache it could find warm moved to a throwaway folder: the tool cache, Go's build and
  module caches, XDG_CACHE_HOME (pip, Helm, Molecule) and podman's image storage. The Debian
  packages stay installed (removing them would take the machine's podman away from it).

Writes bench/results/make.json; a part skipped keeps its previous figures (each part carries
the date it was measured). Heavy: run it under the machine's lock. Not part of `make test`.

    flock /tmp/openpolicy-heavy.lock python bench/bench_make.py [--skip-fresh] [--skip-test] [--ci-cold]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results_file import RESULTS, write_results  # noqa: E402

LOGS = REPO / ".local" / "logs"
TEST_TARGETS = ("lint", "test-unit", "test-molecule", "test-e2e")
CHANGED = re.compile(r"^\S+\s*:\s*ok=\d+\s+changed=(\d+)", re.MULTILINE)


def logged(argv: list[str], name: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run `argv` with its output in .local/logs/bench-make-<name>.log; return (seconds, output).
    A failure stops the bench with the output's end."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"bench-make-{name}.log"
    started = time.monotonic()
    result = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    elapsed = time.monotonic() - started
    log.write_text(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise SystemExit(f"{' '.join(argv)} failed after {elapsed:.0f} s (log: {log}):\n{tail}")
    return elapsed, result.stdout


def make(target: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """One make target in the checkout, logged (see logged)."""
    return logged(["make", target], target, env=env)


def changed(output: str) -> int:
    return sum(int(n) for n in CHANGED.findall(output))


def stamp(figures: dict) -> dict:
    return {**figures, "measured": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def fresh(machine_is_fresh: bool) -> dict:
    """make up from an empty tool cache: the build share, then site.yml.

    On a machine that is itself fresh (no toolchain, no images, nothing up), the run builds into
    the machine's own caches: no throwaway cache to build twice, and no `make down` (there is no
    Ansible yet to run it).
    """
    if machine_is_fresh:
        bootstrap, _ = make("bootstrap")
        images, output = make("images")
        up, up_output = make("up")
    else:
        make("down")
        with tempfile.TemporaryDirectory(prefix="bench-make-cache-") as cache:
            env = {
                "OPENPOLICY_CACHE": f"{cache}/openpolicy",
                "GOCACHE": f"{cache}/go-build",
                "GOMODCACHE": f"{cache}/go-mod",
            }
            try:
                bootstrap, _ = make("bootstrap", env)
                images, output = make("images", env)
                up, up_output = make("up", env)
            finally:
                # Point .toolchain/ back at the machine's cache, not the throwaway one.
                make("bootstrap")
    built = sorted(set(re.findall(r"^images: (\S+)\s+built", output, re.MULTILINE)))
    figures = {
        "bootstrap_s": round(bootstrap, 1),
        "images_s": round(images, 1),
        "images_built": built,
        "build_share_s": round(bootstrap + images, 1),
        "site_yml_s": round(up, 1),
        "make_up_total_s": round(bootstrap + images + up, 1),
        "changed": changed(up_output),
        "machine_was_fresh": machine_is_fresh,
    }
    print(f"make up, fresh:          {figures['make_up_total_s']:7.1f} s")
    print(f"  bootstrap (builds):    {bootstrap:7.1f} s")
    print(f"  images:                {images:7.1f} s   (built: {', '.join(built) or 'none, cached by hash'})")
    print(
        f"  site.yml:              {up:7.1f} s   (build share {(bootstrap + images) / (bootstrap + images + up):.0%})"
    )
    return stamp(figures)


def noop(runs: int) -> dict:
    """Second and later make ups: the environment is up, nothing may change. The median of
    `runs`: one run's figure moved by 10 s either way with what else the machine did."""
    first, _ = make("up")
    prerequisites, _ = make("images")
    times, changes = [], []
    for _ in range(runs):
        again, output = make("up")
        times.append(round(again, 1))
        changes.append(changed(output))
    median = statistics.median(times)
    figures = {
        "make_up_noop_s": round(median, 1),
        "make_up_noop_runs_s": times,
        "prerequisites_warm_s": round(prerequisites, 1),
        "site_yml_noop_s": round(median - prerequisites, 1),
        "changed": max(changes),
        "make_up_before_s": round(first, 1),
    }
    warm = f"median of {runs}: {times}; changed={figures['changed']}; warm bootstrap+images {prerequisites:.1f} s"
    print(f"make up, no-op:          {median:7.1f} s   ({warm})")
    return stamp(figures)


def test_warm() -> dict:
    # The end-to-end modules start hosts of the same names as the local environment's (the
    # no-op part leaves it up): down first, as a user would before `make test`.
    make("down")
    figures = {}
    for target in TEST_TARGETS:
        elapsed, _ = make(target)
        figures[f"{target.replace('-', '_')}_s"] = round(elapsed, 1)
        print(f"make {target:<18} {elapsed:7.1f} s")
    figures["make_test_s"] = round(sum(figures.values()), 1)
    print(f"make test, warm:         {figures['make_test_s']:7.1f} s ({os.cpu_count()} cores)")
    return stamp(figures)


def unmount_under(folder: Path) -> None:
    """Unmount what podman left mounted under `folder` (overlay layers), deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{folder}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def seconds(text: str) -> float:
    """The bootstrap's durations: `11m03s`, `32.7s`."""
    minutes, _, rest = text.rpartition("m")
    return 60 * float(minutes or 0) + float(rest.rstrip("s"))


def ci_cold_figures(output: str, elapsed: float) -> dict:
    """What `.ci/run` printed, as figures: the builds (the bootstrap's longest run, the images
    it built) and the tests after them."""
    bootstrap = max((seconds(d) for d in re.findall(r"^bootstrap: done in (\S+?);", output, re.MULTILINE)), default=0)
    images = sum(float(s) for s in re.findall(r"^images: \S+\s+built\s+\S+\s+([\d.]+)s$", output, re.MULTILINE))
    passed = [int(n) for n in re.findall(r"^=+ (\d+) passed", output, re.MULTILINE)]
    return {
        "ci_run_s": round(elapsed, 1),
        "bootstrap_s": round(bootstrap, 1),
        "images_s": round(images, 1),
        "build_share_s": round(bootstrap + images, 1),
        "tests_s": round(elapsed - bootstrap - images, 1),
        "tests_passed": passed,
    }


def ci_cold() -> dict:
    """`.ci/run` in a fresh clone with no cache warm: what CI costs on a new machine."""
    work = Path(tempfile.mkdtemp(prefix="bench-ci-cold-"))
    clone = work / "clone"
    storage_conf = work / "storage.conf"
    # The same driver as the machine's storage, in a folder of its own: the images are built
    # again, and nothing the machine's own podman holds is read or touched.
    storage_conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/storage"\nrunroot = "{work}/run"\n')
    env = {
        "OPENPOLICY_CACHE": f"{work}/openpolicy",
        "GOCACHE": f"{work}/go-build",
        "GOMODCACHE": f"{work}/go-mod",
        "XDG_CACHE_HOME": f"{work}/xdg-cache",
        "CONTAINERS_STORAGE_CONF": str(storage_conf),
    }
    try:
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=clone, text=True, capture_output=True, check=True
        ).stdout.strip()
        elapsed, output = logged([".ci/run"], "ci-cold", cwd=clone, env=env)
    finally:
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    figures = {**ci_cold_figures(output, elapsed), "commit": commit}
    print(
        f"CI cold (.ci/run):       {elapsed:7.1f} s   (bootstrap {figures['bootstrap_s']:.0f} s, "
        f"images {figures['images_s']:.0f} s, the tests {figures['tests_s']:.0f} s)"
    )
    return stamp(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-fresh", action="store_true", help="no fresh make up (it builds for 11 to 13 min)")
    parser.add_argument(
        "--machine-is-fresh",
        action="store_true",
        help="a new machine: build into its own caches (no throwaway cache, no make down first)",
    )
    parser.add_argument("--skip-noop", action="store_true", help="no no-op make up")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op make ups whose median is the figure (3)")
    parser.add_argument("--skip-test", action="store_true", help="no warm make test")
    parser.add_argument("--ci-cold", action="store_true", help=".ci/run in a fresh clone, no cache (about 31 min)")
    args = parser.parse_args()
    previous = RESULTS / "make.json"
    figures = json.loads(previous.read_text())["figures"] if previous.exists() else {}
    if not args.skip_fresh:
        figures["make_up_fresh"] = fresh(args.machine_is_fresh)
    if not args.skip_noop:
        figures["make_up_noop"] = noop(args.noop_runs)
    if not args.skip_test:
        figures["make_test_warm"] = test_warm()
    if args.ci_cold:
        figures["ci_cold"] = ci_cold()
    write_results("make", figures, notes="each part carries the date it was measured; skipped parts keep theirs")


if __name__ == "__main__":
    main()
