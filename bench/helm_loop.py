"""The plain tool the deploy benchmarks compare against: what an operator would script by hand,
`helm upgrade --install --wait` over the same charts, values and Secrets that deploy.yml gave
its releases (read back from Helm and the cluster), one at a time in order, `jobs` at a time
through `xargs -P`, or tier by tier with each tier's at once (deploy.yml's order without
Ansible), into a namespace of its own. Also what both cluster benchmarks share around it: `run`
and `tear_down`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO, toolchain_env


def run(cmd: list[str], stdin: str | None = None) -> str:
    result = subprocess.run(cmd, input=stdin, env=toolchain_env(), text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed: {result.stderr.strip()[-1000:]}")
    return result.stdout


def tear_down(cluster_args: list[str], state: Path, keep: bool) -> None:
    """The bench cluster down and its folder gone (the cluster's state, the bench's vault, what
    the bench generated), unless the operator asked to keep them (--keep)."""
    if keep:
        print(f"kept: KUBECONFIG={state / 'kubeconfig'}")
        return
    run([sys.executable, str(REPO / "scripts" / "local_cluster.py"), "down", *cluster_args])
    shutil.rmtree(state, ignore_errors=True)


def plain_helm_loop(
    kube: list[str],
    helm: list[str],
    workdir: Path,
    *,
    source: str,
    namespace: str,
    names: list[str],
    jobs: int = 1,
    tiers: list[list[str]] | None = None,
    charts: Path = REPO / "charts",
) -> float:
    """Install `names` (in that order) into `namespace` with the values deploy.yml gave them in
    `source`, after the same platform baseline and Secrets, from `charts` (deploy.yml's
    openpolicy_charts_dir); returns the seconds the loop took. With `tiers` (lists of `names`),
    each tier's releases start at once and the next tier once they all ended."""
    workdir = workdir / namespace
    workdir.mkdir()
    platform_release = f"openpolicy-platform-{source.removeprefix('openpolicy-')}"
    baseline = json.loads(run([*helm, "get", "values", platform_release, "-n", "openpolicy-system", "-o", "json"]))
    baseline["namespace"]["name"] = namespace
    baseline["priorityClasses"]["create"] = False
    files = {"baseline": workdir / "baseline.json"}
    files["baseline"].write_text(json.dumps(baseline))
    for name in names:
        files[name] = workdir / f"{name}.json"
        files[name].write_text(run([*helm, "get", "values", name, "-n", source, "-o", "json"]))
    selector = "app.kubernetes.io/managed-by=openpolicy-deploy"
    secrets = json.loads(run([*kube, "get", "secrets", "-n", source, "-l", selector, "-o", "json"]))
    for item in secrets["items"]:
        item["metadata"] = {"name": item["metadata"]["name"], "labels": item["metadata"].get("labels", {})}
    started = time.monotonic()
    run(
        [
            *helm,
            "upgrade",
            "--install",
            f"openpolicy-platform-{namespace}",
            str(charts / "openpolicy-platform"),
            "-n",
            "openpolicy-system",
            "-f",
            str(files["baseline"]),
            "--wait",
            "--timeout",
            "120s",
        ]
    )
    if secrets["items"]:
        run([*kube, "apply", "-n", namespace, "-f", "-"], stdin=json.dumps(secrets))
    chart = str(charts / "openpolicy-service")
    upgrade = [*helm, "upgrade", "--install", "{}", chart, "-n", namespace, "-f", f"{workdir}/{{}}.json"]
    upgrade += ["--wait", "--timeout", "300s"]
    if tiers:
        for tier in tiers:
            run(["xargs", "-P", str(len(tier)), "-I{}", *upgrade], stdin="\n".join(tier) + "\n")
    elif jobs > 1:
        run(["xargs", "-P", str(jobs), "-I{}", *upgrade], stdin="\n".join(names) + "\n")
    else:
        for name in names:
            run([part.replace("{}", name) for part in upgrade])
    return time.monotonic() - started
