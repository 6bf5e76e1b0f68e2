"""site.yml with the real inventories/production on a production-shaped topology, over SSH.

Production's rules on that run: the secrets are pre-seeded in the encrypted vault (the
documented first run, `-e secrets_generate_missing=true`, before the test) and the run
generates nothing; every version is pinned; without `-e confirm=production` it stops before
any change, on fresh hosts and on a deployed environment alike.

The tests of this module build on each other in file order.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.e2e.topology import Topology, running
from tests.helpers import REPO, failure_messages, toolchain_env

pytestmark = pytest.mark.cluster

ENV = "production"
NAMESPACE = f"openpolicy-{ENV}"
PRIMARY, REPLICA, REPOSITORY = (f"openpolicy-{ENV}-{h}" for h in ("db1", "db2", "backup1"))
CONFIRM = {"confirm": "production"}


def vault_values(topo: Topology) -> dict:
    result = subprocess.run(
        ["ansible-vault", "view", str(topo.inventory / "group_vars/all/vault.yml")],
        env=toolchain_env(),
        text=True,
        capture_output=True,
        check=True,
    )
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def topo(kube, tmp_path_factory: pytest.TempPathFactory):
    with running(ENV, kube, tmp_path_factory.mktemp(ENV)) as topology:
        # The documented first production run: generate the secrets on purpose, once.
        seeded = topology.playbook("preflight.yml", extra_vars={"secrets_generate_missing": True, **CONFIRM})
        assert seeded.returncode == 0, seeded.stdout[-4000:]
        yield topology


def snapshot(topo: Topology) -> dict:
    """What a run must not change: Helm's release records, every object's resourceVersion, the
    schema of the database, and whether the db hosts have a cluster at all."""
    exists = topo.kube.run("get", "namespace", NAMESPACE, check=False).returncode == 0
    objects = {}
    if exists:
        items = topo.kube.json("get", "deploy,svc,cm,secrets,hpa,pdb,netpol", "-n", NAMESPACE)["items"]
        objects = {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}
    has_cluster = topo.ssh(PRIMARY, "test -e /etc/postgresql/15/main", check=False).returncode == 0
    schema = ""
    if has_cluster:
        port = topo.ports[PRIMARY]["postgresql_port"]
        schema = topo.ssh(PRIMARY, f"sudo -u postgres pg_dump -p {port} --schema-only openpolicy").stdout
    return {"namespace": exists, "objects": objects, "cluster": has_cluster, "schema": schema}


def refused_without_confirmation(topo: Topology) -> None:
    before = snapshot(topo)
    result = topo.playbook("site.yml")
    assert result.returncode != 0
    messages = failure_messages(result)
    assert any("confirm" in m for m in messages), messages or result.stdout[-3000:]
    assert snapshot(topo) == before


def test_production_without_confirmation_stops_before_any_change(topo: Topology) -> None:
    refused_without_confirmation(topo)


def test_site_converges_with_pins_and_nothing_generated(topo: Topology) -> None:
    before = vault_values(topo)
    result = topo.playbook("site.yml", extra_vars=CONFIRM)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert vault_values(topo) == before, "production generated a secret"
    pins = yaml.safe_load((topo.inventory / "group_vars/all/services.yml").read_text())["service_releases_versions"]
    for d in topo.kube.json("get", "deployments", "-n", NAMESPACE)["items"]:
        name = d["metadata"]["name"]
        assert d["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":" + pins[name]), name
        assert d["status"].get("readyReplicas", 0) == d["spec"]["replicas"] >= 2, name
    # Autoscaling with the catalog's production bounds.
    catalog = yaml.safe_load((REPO / "catalog/services.yml").read_text())["services"]
    bounds = {s["name"]: s["autoscaling"]["production"] for s in catalog if "production" in s.get("autoscaling", {})}
    hpas = {h["metadata"]["name"]: h["spec"] for h in topo.kube.json("get", "hpa", "-n", NAMESPACE)["items"]}
    for name, wanted in bounds.items():
        assert (hpas[name]["minReplicas"], hpas[name]["maxReplicas"]) == (wanted["min"], wanted["max"]), name
    slot = REPLICA.replace("-", "_")
    query = "select r.application_name, r.state, s.ssl from pg_stat_replication r join pg_stat_ssl s on s.pid = r.pid"
    assert topo.sql(PRIMARY, query) == f"{slot}|streaming|t"
    info = json.loads(
        topo.ssh(REPOSITORY, "sudo -u pgbackrest pgbackrest --stanza=openpolicy --output=json info").stdout
    )[0]
    assert any(b["type"] == "full" for b in info["backup"])


def test_second_run_changes_nothing(topo: Topology) -> None:
    result = topo.playbook("site.yml", extra_vars=CONFIRM)
    assert result.returncode == 0, result.stdout[-4000:]
    changed = {host: n for host, n in topo.changed(result).items() if n}
    assert not changed, f"changed on a second run: {changed}\n{result.stdout[-4000:]}"


def test_deployed_production_without_confirmation_changes_nothing(topo: Topology) -> None:
    refused_without_confirmation(topo)
