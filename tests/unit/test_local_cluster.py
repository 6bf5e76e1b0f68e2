"""scripts/local_cluster.py: input checks and the kwok configuration it writes."""

from __future__ import annotations

import json

import pytest

import local_cluster
from local_cluster import ClusterError, exclude_simulation, node_manifest, parse_node_count


@pytest.mark.parametrize("raw", ["1", "3", " 100 ", "1000", 7])
def test_node_count_accepts_whole_numbers_in_range(raw):
    assert parse_node_count(raw) == int(str(raw).strip())


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "2.5", "", "1001"])
def test_node_count_rejects_the_rest_naming_the_setting(raw):
    with pytest.raises(ClusterError, match=r"^nodes: expected a whole number from 1 to 1000"):
        parse_node_count(raw)


@pytest.mark.parametrize("name", ["UPPER", "under_score", "-dash", "a" * 41, ""])
def test_cluster_name_must_be_a_dns_label(name):
    with pytest.raises(ClusterError, match=r"^name: "):
        local_cluster.check_name(name)


def test_default_stage_is_kept_away_from_simulated_pods():
    stage = {
        "spec": {"selector": {"matchExpressions": [{"key": ".status.phase", "operator": "In", "values": ["Pending"]}]}}
    }
    excluded = exclude_simulation(stage, "crashloop")["spec"]["selector"]["matchExpressions"]
    assert excluded[-1] == {
        "key": '.metadata.labels["openpolicy.dev/simulate"]',
        "operator": "NotIn",
        "values": ["crashloop"],
    }
    assert len(excluded) == 2


def test_project_stages_exist_for_both_simulations():
    documents = [
        doc
        for path in sorted(local_cluster.STAGES_DIR.glob("*.yaml"))
        for doc in local_cluster.load_yaml_documents(path)
    ]
    selected = {
        expr["values"][0]
        for doc in documents
        for expr in doc["spec"]["selector"]["matchExpressions"]
        if expr["key"] == '.metadata.labels["openpolicy.dev/simulate"]'
    }
    assert selected == {"crashloop", "fail"}
    assert all(doc["kind"] == "Stage" for doc in documents)


def test_every_simulation_excluded_from_a_default_stage_has_a_project_stage():
    excluded = {value for value in local_cluster.KWOK_STAGES.values() if value}
    assert excluded == {"crashloop", "fail"}


def test_nodes_are_simulated_and_spread_over_zones():
    zones = {node_manifest(i, "c")["metadata"]["labels"]["topology.kubernetes.io/zone"] for i in range(6)}
    node = node_manifest(0, "c")
    assert zones == {"zone-0", "zone-1", "zone-2"}
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["metadata"]["name"] == "c-node-0"


def test_command_line_rejects_bad_node_count_before_touching_anything(tmp_path, capsys):
    workdir = tmp_path / "cluster"
    assert local_cluster.main(["up", "--workdir", str(workdir), "--nodes", "abc"]) == 2
    assert "nodes: expected a whole number" in capsys.readouterr().err
    assert not workdir.exists()


def test_readiness_reads_the_ready_condition_of_each_node():
    nodes = {
        "items": [
            {"metadata": {"name": "c-node-0"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "c-node-1"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "c-node-2"}, "status": {}},
        ]
    }
    assert local_cluster.readiness(nodes) == {"c-node-0": True, "c-node-1": False, "c-node-2": False}


@pytest.mark.parametrize("case", ["certificates inline", "no server answers", "no such context"])
def test_read_serving_leaves_to_kubectl_what_it_cannot_read(tmp_path, case):
    """A kubeconfig that is not one kwokctl writes, or a server that does not answer: None, and
    `up` asks kubectl (which reads any kubeconfig) as before."""
    user = {"client-certificate-data": "eA==", "client-key-data": "eA=="}
    if case != "certificates inline":
        for name in ("ca.crt", "admin.crt", "admin.key"):
            (tmp_path / name).write_text("")
        user = {"client-certificate": str(tmp_path / "admin.crt"), "client-key": str(tmp_path / "admin.key")}
    config = {
        "clusters": [
            {
                "name": "kwok-c",
                "cluster": {"server": "https://127.0.0.1:1", "certificate-authority": str(tmp_path / "ca.crt")},
            }
        ],
        "contexts": [
            {
                "name": "kwok-c" if case != "no such context" else "other",
                "context": {"cluster": "kwok-c", "user": "kwok-c"},
            }
        ],
        "users": [{"name": "kwok-c", "user": user}],
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    cluster = local_cluster.Cluster("c", tmp_path / "work", kubeconfig)
    assert cluster.read_serving() is None
