"""The values' digest a deploy records as Helm release labels, and the plan's read of it
(module_utils/release_state.py; the module helm_releases with labelled: true).

The module runs against recording stand-ins for helm and kubectl that answer with the JSON
both print (no cluster runs in tests/unit): a release whose labels were made for its latest,
deployed revision is not read with helm history or helm get values; any other is.
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_state

from tests.unit.test_helm_releases import run_helm_releases

VALUES = {"image": {"repository": "ghcr.io/openpolicy/auth-service", "tag": "1.4.2"}, "replicaCount": 2}


def listed(name: str, revision: int, status: str = "deployed") -> dict:
    return {
        "name": name,
        "namespace": "ns",
        "revision": str(revision),
        "updated": "2026-12-01 08:00:00 +0000 UTC",
        "status": status,
        "chart": "openpolicy-service-0.1.0",
        "app_version": "1.0.0",
    }


def storage(name: str, revision: int, labels: dict) -> dict:
    system = {"name": name, "owner": "helm", "status": "deployed", "version": str(revision)}
    return {"kind": "Secret", "metadata": {"name": f"sh.helm.release.v1.{name}.v{revision}", "labels": system | labels}}


def test_labels_carry_the_whole_checksum_in_valid_label_values():
    labels = release_state.digest_labels(VALUES, 3)
    checksum = platform.values_checksum(VALUES)
    assert "sha256:" + labels[release_state.DIGEST_LABELS[0]] + labels[release_state.DIGEST_LABELS[1]] == checksum
    assert labels[release_state.DIGEST_REVISION_LABEL] == "3"
    assert labels[release_state.APP_VERSION_LABEL] == "1.4.2"
    assert all(len(value) <= 63 for value in labels.values())


def test_a_tag_that_is_no_label_value_is_left_out():
    labels = release_state.digest_labels({"image": {"tag": "1.4.2+build.7"}}, 1)
    assert release_state.APP_VERSION_LABEL not in labels


def test_labels_made_for_the_deployed_revision_stand_for_its_history():
    labels = release_state.digest_labels(VALUES, 3)
    found = release_state.labelled_release(
        listed("auth-service", 3), storage("auth-service", 3, labels)["metadata"]["labels"]
    )
    assert found["current"] == 3
    assert found["deployed"]["values_checksum"] == platform.values_checksum(VALUES)
    assert found["deployed"]["chart_version"] == "0.1.0"
    assert found["deployed"]["app_version"] == "1.4.2"
    summary = release_state.deployed_summary({"auth-service": found})["auth-service"]
    assert summary["revision"] == summary["latest"] == 3


@pytest.mark.parametrize(
    ("item", "labels"),
    [
        # A rollback (or a hand-made helm upgrade) copies the labels of another revision.
        (listed("auth-service", 4), storage("auth-service", 4, release_state.digest_labels(VALUES, 3))),
        # The latest revision is not the deployed one (pending, failed).
        (
            listed("auth-service", 4, "pending-upgrade"),
            storage("auth-service", 3, release_state.digest_labels(VALUES, 3)),
        ),
        # Deployed before the labels were recorded.
        (listed("auth-service", 3), storage("auth-service", 3, {})),
        (listed("auth-service", 3), None),
    ],
)
def test_other_labels_are_not_trusted(item: dict, labels: dict | None):
    assert release_state.labelled_release(item, (labels or {}).get("metadata", {}).get("labels")) is None


def table(items: list[dict]) -> str:
    """Secrets as `kubectl get secrets --show-labels --no-headers` prints them (kubectl 1.36)."""
    lines = []
    for item in items:
        labels = ",".join(f"{k}={v}" for k, v in sorted(item["metadata"].get("labels", {}).items())) or "<none>"
        kind = "helm.sh/release.v1" if item["metadata"]["name"].startswith("sh.helm.") else "Opaque"
        lines.append(f"{item['metadata']['name']:<45}{kind:<21}1     26m   {labels}")
    return "\n".join(lines) + "\n"


def test_secret_table_reads_names_and_labels():
    # Two lines as kubectl 1.36 printed them from the local cluster.
    text = (
        "sh.helm.release.v1.search-service.v1         helm.sh/release.v1   1     26m   modifiedAt=1796557645,"
        "name=search-service,openpolicy.dev/values-revision=1,owner=helm,status=deployed,version=1\n"
        "nolabels                                     Opaque               1     0s    <none>\n"
    )
    found = release_state.secret_table(text)
    assert [item["metadata"]["name"] for item in found] == ["sh.helm.release.v1.search-service.v1", "nolabels"]
    assert found[0]["metadata"]["labels"]["openpolicy.dev/values-revision"] == "1"
    assert found[0]["metadata"]["labels"]["status"] == "deployed"
    assert found[1]["metadata"]["labels"] == {}
    assert release_state.secret_table("") == []


def test_storage_labels_by_release():
    one = storage("auth-service", 3, {"x": "y"})
    both = release_state.secret_table(table([one, storage("api-gateway", 1, {})]))
    assert release_state.storage_labels(both)["auth-service"]["x"] == "y"
    assert sorted(release_state.storage_labels(both)) == ["api-gateway", "auth-service"]
    assert release_state.storage_labels([]) == {}


FAKE = r"""#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
with open(os.path.join(os.path.dirname(sys.argv[0]), "calls"), "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\n")
state = json.load(open(os.path.join(os.path.dirname(sys.argv[0]), "state.json")))
if os.path.basename(sys.argv[0]) == "kubectl":
    print(state["table"], end="")
elif "list" in args:
    print(json.dumps(state["list"]))
elif "history" in args:
    print(json.dumps([{"revision": 1, "updated": "2026-12-01T07:00:00Z", "status": "deployed",
                       "chart": "openpolicy-service-0.1.0", "app_version": "1.0.0",
                       "description": "Install complete"}]))
elif "values" in args:
    print(json.dumps({"image": {"tag": "1.0.0"}}))
else:
    sys.exit("unexpected call: " + " ".join(args))
"""


def test_module_reads_only_the_releases_without_trusted_labels(tmp_path):
    for name in ("helm", "kubectl"):
        (tmp_path / name).write_text(FAKE)
        (tmp_path / name).chmod(0o755)
    labels = release_state.digest_labels(VALUES, 3)
    state = {
        "list": [listed("auth-service", 3), listed("api-gateway", 1)],
        "storage": [storage("auth-service", 3, labels), storage("api-gateway", 1, {})],
    }
    state["table"] = table(state["storage"])
    (tmp_path / "state.json").write_text(json.dumps(state))
    module_args = {
        "namespace": "ns",
        "kubeconfig": str(tmp_path / "kubeconfig"),
        "chart": "openpolicy-service",
        "labelled": True,
        "binary": str(tmp_path / "helm"),
        "kubectl": str(tmp_path / "kubectl"),
    }
    releases = run_helm_releases(tmp_path, module_args)["releases"]
    assert releases["auth-service"]["deployed"]["values_checksum"] == platform.values_checksum(VALUES)
    assert releases["api-gateway"]["deployed"]["app_version"] == "1.0.0"
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    read = {call[call.index(verb) + 1] for call in calls for verb in ("history", "values") if verb in call}
    assert "auth-service" not in read and "api-gateway" in read
    assert sum(1 for call in calls if call[0] == "kubectl") == 1
