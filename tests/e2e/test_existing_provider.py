"""Provider `existing`: the toolkit reaches a cluster it did not create, by kubeconfig and context.

The cluster here is the session's kwok cluster, addressed only through its kubeconfig, as a
managed cluster would be.
"""

from __future__ import annotations

import json

from tests.helpers import failure_messages, recap, run_playbook


def existing_vars(cluster_vars: dict, **extra) -> dict:
    return {
        "k8s_cluster_provider": "existing",
        "k8s_cluster_kubeconfig": cluster_vars["k8s_cluster_kubeconfig"],
        "k8s_cluster_context": f"kwok-{cluster_vars['k8s_cluster_name']}",
        "secrets_vault_file": cluster_vars["secrets_vault_file"],
        **extra,
    }


def test_existing_cluster_is_reached_and_left_alone(kube, cluster_vars: dict):
    result = run_playbook("provision_cluster.yml", "-v", extra_vars=existing_vars(cluster_vars))
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result)["localhost"]["changed"] == 0
    assert '"server_version": "v1.36.3"' in result.stdout or "server_version: v1.36.3" in result.stdout


def test_unreachable_existing_cluster_fails_naming_the_setting(tmp_path, cluster_vars: dict, kube):
    config = json.loads(kube.run("config", "view", "--minify", "--raw", "-o", "json").stdout)
    # A port nothing listens on, on loopback: the cluster "is down".
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(json.dumps(config))
    result = run_playbook(
        "provision_cluster.yml",
        extra_vars=existing_vars(cluster_vars, k8s_cluster_kubeconfig=str(dead)),
    )
    assert result.returncode != 0
    message = failure_messages(result)[-1]
    assert message.startswith("k8s_cluster_kubeconfig/k8s_cluster_context:"), message
    assert "does not answer" in message


def test_teardown_is_refused_for_an_existing_cluster(cluster_vars: dict, kube):
    result = run_playbook("teardown_local.yml", extra_vars=existing_vars(cluster_vars, podman_hosts_groups=[]))
    assert result.returncode != 0
    assert any("k8s_cluster_state: absent is only for provider kwok" in m for m in failure_messages(result))
    assert kube.run("get", "--raw", "/readyz").stdout == "ok"
