"""roles/prometheus' scrape jobs from the inventory: the `patroni` and `etcd` jobs list the db and
etcd hosts at their own ports where `postgresql_ha: patroni`, and have no target without it
(`only_where`; templates/prometheus.yml.j2 writes no scrape config for a job without targets)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, toolchain_env

ROLE = REPO / "roles" / "prometheus"


def targets(tmp_path: Path, ha: str) -> dict[str, list[dict]]:
    inventory = {
        "all": {
            "vars": {"postgresql_ha": ha},
            "children": {
                "db": {
                    "hosts": {
                        "db1": {"ansible_host": "10.0.0.1", "patroni_restapi_port": 61421},
                        "db2": {"ansible_host": "10.0.0.2", "postgresql_advertise_address": "10.0.1.2"},
                    }
                },
                "etcd": {"hosts": {"db1": {"etcd_cluster_metrics_port": 61455}, "db2": {}}},
                "monitoring": {"hosts": {"mon1": {"ansible_connection": "local"}}},
            },
        }
    }
    out = tmp_path / f"targets-{ha}.json"
    playbook = [
        {
            "hosts": "monitoring",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
            "tasks": [
                {
                    "name": "Write the targets",
                    "ansible.builtin.copy": {"content": "{{ __prometheus_targets | to_json }}", "dest": str(out)},
                    "delegate_to": "localhost",
                }
            ],
        }
    ]
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    cmd = ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")]
    result = subprocess.run(cmd, env=toolchain_env(), text=True, capture_output=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return {job["job"]: job["targets"] for job in json.loads(out.read_text())}


@pytest.mark.parametrize("ha", ["patroni", "none"])
def test_patroni_and_etcd_jobs_only_where_patroni_runs(tmp_path: Path, ha: str) -> None:
    jobs = targets(tmp_path, ha)
    if ha == "none":
        assert jobs["patroni"] == jobs["etcd"] == []
        return
    assert jobs["patroni"] == [
        {"address": "10.0.0.1:61421", "instance": "db1"},
        {"address": "10.0.1.2:8008", "instance": "db2"},
    ]
    assert jobs["etcd"] == [
        {"address": "10.0.0.1:61455", "instance": "db1"},
        {"address": "10.0.0.2:2381", "instance": "db2"},
    ]
