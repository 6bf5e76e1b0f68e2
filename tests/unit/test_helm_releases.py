"""The module helm_releases calls the pinned Helm with flags it has, and reads its JSON.

A recording stand-in for helm answers with the JSON Helm 4 prints (the shapes of Helm's own
pkg/cmd/testdata/output/{list-json.txt,history.json}), since no cluster runs in tests/unit; every
flag the module passed is then looked up in the real pinned helm's `helm <command> --help`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_state

from tests.helpers import REPO, toolchain_env

FAKE_HELM = r"""#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
with open(sys.argv[0] + ".calls", "a") as log:
    log.write(json.dumps(args) + "\n")
if "list" in args:
    print(json.dumps([{"name": "auth-service", "namespace": "ns", "revision": "2",
                       "updated": "2026-12-01 08:00:00 +0000 UTC", "status": "deployed",
                       "chart": "openpolicy-service-0.1.0", "app_version": "1.0.0"}]))
elif "history" in args:
    print(json.dumps([
        {"revision": 1, "updated": "2026-12-01T07:00:00Z", "status": "superseded", "chart": "openpolicy-service-0.1.0",
         "app_version": "1.0.0", "description": "Install complete"},
        {"revision": 2, "updated": "2026-12-01T08:00:00Z", "status": "deployed", "chart": "openpolicy-service-0.1.0",
         "app_version": "1.0.0", "description": "Upgrade complete"},
    ]))
elif "values" in args:
    print(json.dumps({"image": {"tag": "1.2.0"}}))
else:
    sys.exit("unexpected helm call: " + " ".join(args))
"""


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> tuple[dict, list[list[str]]]:
    folder = tmp_path_factory.mktemp("helm")
    fake = folder / "helm"
    fake.write_text(FAKE_HELM)
    fake.chmod(0o755)
    module_args = {"namespace": "ns", "kubeconfig": str(folder / "kubeconfig"), "chart": "openpolicy-service"}
    output = run_helm_releases(folder, {**module_args, "binary": str(fake)})
    recorded = [json.loads(line) for line in (folder / "helm.calls").read_text().splitlines()]
    return output, recorded


def run_helm_releases(folder, module_args: dict, check: bool = True) -> dict:
    """The module helm_releases run as Ansible runs it, with these arguments; its JSON result."""
    return run_module("helm_releases", folder, module_args, check)


def run_module(name: str, folder, module_args: dict, check: bool = True) -> dict:
    """A module of plugins/modules run as Ansible runs it, with these arguments; its JSON result
    (with `check`, that of a module that succeeded)."""
    args = folder / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    result = subprocess.run(
        [sys.executable, "-m", f"ansible_collections.openpolicy.deploy.plugins.modules.{name}", str(args)],
        env=toolchain_env(PYTHONPATH=str(REPO / ".collections")),
        text=True,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_reads_helm_4_json(calls):
    output, _ = calls
    release = output["releases"]["auth-service"]
    assert release["current"] == 2
    assert release["deployed"]["revision"] == 2
    assert release["deployed"]["chart_version"] == "0.1.0"
    assert release["deployed"]["app_version"] == "1.2.0"
    assert [e["status"] for e in release["history"]] == ["superseded", "deployed"]


def test_every_flag_is_one_the_pinned_helm_has(calls):
    _, recorded = calls
    helm = shutil.which("helm", path=toolchain_env()["PATH"])
    assert helm, "the pinned helm is not on the toolchain's PATH (make bootstrap)"
    for argv in recorded:
        words = [a for a in argv if not a.startswith("-")]
        command = [w for w in words if w in ("list", "history", "get", "values")]
        shown = subprocess.run([helm, *command, "--help"], text=True, capture_output=True, check=True).stdout
        for flag in (a.split("=", 1)[0] for a in argv if a.startswith("--")):
            assert re.search(rf"(^|\s){re.escape(flag)}(?=[\s=]|$)", shown, re.MULTILINE), (
                f"helm {' '.join(command)} has no {flag}: {argv}"
            )


FAKE_KUBECTL = r"""#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
with open(sys.argv[0] + ".calls", "a") as log:
    log.write(json.dumps(args) + "\n")
if "priorityclasses" in args:
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"kind": "PriorityClass", "metadata": {"name": "openpolicy-critical",
         "labels": {"app.kubernetes.io/part-of": "openpolicy"},
         "annotations": {"meta.helm.sh/release-name": "openpolicy-platform-dev"}}}]}))
elif "--show-labels" in args:
    pass  # no Secret: kubectl says so on stderr only
else:
    sys.exit("kubectl: unexpected call " + " ".join(args))
"""


def write_fakes(folder) -> None:
    """FAKE_HELM and FAKE_KUBECTL as helm and kubectl in `folder`."""
    for name, text in (("helm", FAKE_HELM), ("kubectl", FAKE_KUBECTL)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)


def test_other_kinds_are_listed_beside_the_releases(tmp_path):
    """kinds: the baseline's PriorityClasses come back in the call that reads its release."""
    write_fakes(tmp_path)
    output = run_helm_releases(
        tmp_path,
        {
            "namespace": "openpolicy-system",
            "kubeconfig": str(tmp_path / "kubeconfig"),
            "names": ["auth-service"],
            "labelled": True,
            "kinds": ["priorityclasses"],
            "binary": str(tmp_path / "helm"),
            "kubectl": str(tmp_path / "kubectl"),
        },
    )
    assert release_state.helm_owners(output["objects"], "PriorityClass") == ["openpolicy-platform-dev"]
    assert "auth-service" in output["releases"]
    kubectl_calls = [json.loads(line) for line in (tmp_path / "kubectl.calls").read_text().splitlines()]
    assert ["get", "priorityclasses", "-o", "json"] in [call[-4:] for call in kubectl_calls]


def test_a_kind_that_cannot_be_listed_fails_in_one_line(tmp_path):
    write_fakes(tmp_path)
    module_args = {"namespace": "ns", "kubeconfig": str(tmp_path / "kubeconfig"), "kinds": ["nosuchkinds"]}
    tools = {"binary": str(tmp_path / "helm"), "kubectl": str(tmp_path / "kubectl")}
    output = run_helm_releases(tmp_path, {**module_args, **tools}, check=False)
    assert output["failed"] and output["msg"].startswith("kubectl get nosuchkinds: kubectl: unexpected call")
