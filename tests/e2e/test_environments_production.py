"""What is production's own, on the real inventories/production, lean.

The staging module (test_staging.py) proves the hosts' side of the shape over SSH (replica,
TLS, backups, become, a second run changed=0); production's inventory differs from staging's
in sizes and addresses, not in roles. What only production has is proven here, on the
cheapest real setup: the real inventory with the topology's overlay (tests/e2e/topology.py)
and the session's kwok cluster, without the podman hosts (each run here stops before a host
is contacted, or is limited to the control host and the releases):

- without `-e confirm=production` site.yml stops in the preflight, before any change, on a
  fresh environment and on a deployed one (Helm history, objects as written, vault);
- every version pinned: a missing pin stops it, naming the service;
- the vault is pre-seeded: absent secrets stop the run and nothing is generated; the documented
  first run generates them on purpose, once; the deploy after it generates nothing;
- no placeholder Secrets: the inventory cannot ask for them, and the deployed services read the
  Secrets the secrets capability delivers, with the pinned images and production's HPAs.

The tests of this module build on each other in file order.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.topology import Topology, seed_vault
from tests.helpers import REPO, failure_messages, toolchain_env

pytestmark = [pytest.mark.cluster]

ENV = "production"
NAMESPACE = f"openpolicy-{ENV}"
CONFIRM = {"confirm": ENV}
# The control host and the releases' hosts (added by the deploy's plan): no database host.
RELEASES_ONLY = ("--limit", "control:openpolicy_releases")


@pytest.fixture(scope="module")
def topo(kube, tmp_path_factory: pytest.TempPathFactory):
    topology = Topology(ENV, tmp_path_factory.mktemp(ENV), kube)
    seed_vault(topology.inventory)
    topology.prepare_cluster()
    yield topology
    topology.remove_releases()


def vault(topo: Topology) -> Path:
    return topo.inventory / "group_vars/all/vault.yml"


def vault_values(topo: Topology) -> dict:
    result = subprocess.run(
        ["ansible-vault", "view", str(vault(topo))], env=toolchain_env(), text=True, capture_output=True, check=True
    )
    return yaml.safe_load(result.stdout)


def written(item: dict) -> str:
    """What changes only when someone writes the object, not when a controller updates its
    status: the generation where the kind keeps one, the spec of an HPA (which keeps none, and
    whose status the autoscaler rewrites), else the resourceVersion."""
    if item["kind"] == "HorizontalPodAutoscaler":
        return hashlib.sha256(json.dumps(item["spec"], sort_keys=True).encode()).hexdigest()
    return str(item["metadata"].get("generation") or item["metadata"]["resourceVersion"])


def snapshot(topo: Topology) -> dict:
    """What a refused run must not change: Helm's release records, every object as written
    (see written()), the vault and the generated credentials on the control host."""
    objects, history = {}, ""
    if topo.kube.run("get", "namespace", NAMESPACE, check=False).returncode == 0:
        items = topo.kube.json("get", "deploy,svc,cm,secrets,hpa,pdb,netpol", "-n", NAMESPACE)["items"]
        objects = {f"{i['kind']}/{i['metadata']['name']}": written(i) for i in items}
        history = topo.kube.run("get", "secrets", "-n", NAMESPACE, "-l", "owner=helm", "-o", "name", check=False).stdout
    credentials = topo.inventory / "credentials"
    return {
        "objects": objects,
        "helm": history,
        "vault": hashlib.sha256(vault(topo).read_bytes()).hexdigest(),
        "credentials": sorted(str(p) for p in credentials.rglob("*")) if credentials.exists() else [],
    }


def refused(topo: Topology, playbook: str, setting: str, *args: str, extra_vars=None, inventory=None) -> None:
    """The run fails with one line naming the setting, and changes nothing."""
    before = snapshot(topo)
    result = topo.playbook(playbook, *args, extra_vars=extra_vars, inventory=inventory)
    assert result.returncode != 0, result.stdout[-3000:]
    messages = [m for m in failure_messages(result) if setting in m]
    assert messages, failure_messages(result) or result.stdout[-3000:]
    assert "\n" not in messages[-1]
    assert snapshot(topo) == before


def test_without_confirmation_site_stops_before_any_change(topo: Topology) -> None:
    # Every input is checked before a host is contacted: the hosts of this run do not exist.
    refused(topo, "site.yml", "confirm: a production run needs -e confirm=production")
    assert topo.kube.run("get", "namespace", NAMESPACE, check=False).returncode != 0


def test_a_missing_pin_stops_the_run(topo: Topology, tmp_path) -> None:
    inventory = tmp_path / ENV
    shutil.copytree(topo.inventory, inventory)
    services = inventory / "group_vars/all/services.yml"
    data = yaml.safe_load(services.read_text())
    del data["service_releases_versions"]["policy-service"]
    services.write_text(yaml.safe_dump(data))
    refused(topo, "site.yml", "service_releases_versions: no version for policy-service", extra_vars=CONFIRM,
            inventory=inventory)  # fmt: skip


def test_placeholder_secrets_are_refused(topo: Topology) -> None:
    refused(
        topo,
        "site.yml",
        "service_releases_placeholder_secrets: only the local environment",
        extra_vars={**CONFIRM, "service_releases_placeholder_secrets": True},
    )


def test_absent_secrets_stop_the_run_and_nothing_is_generated(topo: Topology) -> None:
    # The vault holds only what a provider issues (seed_vault): the rest is absent.
    refused(topo, "preflight.yml", "secrets: required and absent from", "--limit", "control", extra_vars=CONFIRM)


def test_the_documented_first_run_generates_the_secrets_once(topo: Topology) -> None:
    before = vault_values(topo)
    first_run = {**CONFIRM, "secrets_generate_missing": True}
    result = topo.playbook("preflight.yml", "--limit", "control", extra_vars=first_run)
    assert result.returncode == 0, result.stdout[-4000:]
    after = vault_values(topo)
    assert set(after) > set(before) and all(after[k] == v for k, v in before.items())


def test_deploy_reads_the_vault_pins_and_no_placeholders(topo: Topology) -> None:
    before = snapshot(topo)["vault"]
    result = topo.playbook("deploy.yml", *RELEASES_ONLY, extra_vars=CONFIRM)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert snapshot(topo)["vault"] == before, "production generated a secret"
    pins = yaml.safe_load((topo.inventory / "group_vars/all/services.yml").read_text())["service_releases_versions"]
    deployments = topo.kube.json("get", "deployments", "-n", NAMESPACE)["items"]
    assert len(deployments) == len(pins)
    secrets = topo.kube.json("get", "secrets", "-n", NAMESPACE)["items"]
    labels = {s["metadata"]["name"]: s["metadata"].get("labels", {}) for s in secrets}
    placeholders = [name for name, label in labels.items() if "openpolicy.dev/placeholder" in label]
    assert not placeholders, placeholders
    names = {s["metadata"]["name"] for s in secrets}
    # Every Secret a Deployment reads exists: the ones the secrets capability delivered.
    referenced = {
        ref["secretRef"]["name"]
        for d in deployments
        for c in d["spec"]["template"]["spec"]["containers"]
        for ref in c.get("envFrom", [])
        if "secretRef" in ref
    } | {
        e["valueFrom"]["secretKeyRef"]["name"]
        for d in deployments
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert referenced and referenced <= names, referenced - names
    # Autoscaling with the catalog's production bounds.
    catalog = yaml.safe_load((REPO / "catalog/services.yml").read_text())["services"]
    # A service without autoscaling has `autoscaling:` empty (null) in the catalog.
    autoscaled = [s for s in catalog if "production" in (s.get("autoscaling") or {})]
    bounds = {s["name"]: s["autoscaling"]["production"] for s in autoscaled}
    hpas = {h["metadata"]["name"]: h["spec"] for h in topo.kube.json("get", "hpa", "-n", NAMESPACE)["items"]}
    for name, wanted in bounds.items():
        assert (hpas[name]["minReplicas"], hpas[name]["maxReplicas"]) == (wanted["min"], wanted["max"]), name
    # Each service Ready with its pinned image, at its HPA's minimum (else the inventory's replicas).
    replicas = yaml.safe_load((topo.inventory / "group_vars/all/releases.yml").read_text())["service_releases_replicas"]
    for d in deployments:
        name = d["metadata"]["name"]
        assert d["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":" + pins[name]), name
        wanted = hpas[name]["minReplicas"] if name in hpas else replicas
        assert d["status"].get("readyReplicas", 0) == d["spec"]["replicas"] == wanted, name
    # A disruption budget for every service that runs more than one replica (the chart renders
    # none for a single replica, which a budget would keep from ever being evicted).
    pdbs = {p["metadata"]["name"] for p in topo.kube.json("get", "pdb", "-n", NAMESPACE)["items"]}
    assert {d["metadata"]["name"] for d in deployments if d["spec"]["replicas"] > 1} == pdbs


def test_deployed_production_without_confirmation_changes_nothing(topo: Topology) -> None:
    refused(topo, "deploy.yml", "confirm: a production run needs -e confirm=production", *RELEASES_ONLY)
