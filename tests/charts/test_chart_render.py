"""Assertions on every rendered release: the guarantees the issue asks of the charts."""

from __future__ import annotations

import re

import pytest

from tests.charts import render

SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|CREDENTIAL|WEBHOOK", re.IGNORECASE)
URL_WITH_CREDENTIALS = re.compile(r"://[^/@\s]+:[^/@\s]*@")
CASES = [(env, name) for env in render.environments() for name in render.service_names()]


def ids(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


def kinds(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict], kind: str, name: str | None = None) -> dict:
    found = [m for m in kinds(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(manifests: list[dict]) -> list[tuple[str, dict, dict]]:
    """(where, pod metadata, pod spec) of every pod template."""
    pods = []
    for m in manifests:
        where = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] in ("Deployment", "Job"):
            pods.append((where, m["spec"]["template"]["metadata"], m["spec"]["template"]["spec"]))
        elif m["kind"] == "CronJob":
            template = m["spec"]["jobTemplate"]["spec"]["template"]
            pods.append((where, template["metadata"], template["spec"]))
    return pods


def catalog_service(name: str) -> dict:
    return next(s for s in render.catalog()["services"] if s["name"] == name)


def is_hook(manifest: dict) -> bool:
    return "helm.sh/hook" in manifest["metadata"].get("annotations", {})


def test_every_service_and_environment_is_rendered(rendered: dict) -> None:
    assert len(render.service_names()) == 9
    assert set(render.environments()) == {"local", "dev", "staging", "production"}
    for env in render.environments():
        assert (env, f"openpolicy-platform-{env}") in rendered
        for name in render.service_names():
            assert kinds(rendered[(env, name)], "Deployment"), f"{env}/{name} renders no Deployment"


def test_no_chart_renders_a_secret(all_manifests: list[dict]) -> None:
    assert not kinds(all_manifests, "Secret"), "Secrets are delivered outside the charts, never rendered"


def test_every_object_names_its_namespace(rendered: dict) -> None:
    cluster_scoped = {"Namespace", "PriorityClass"}
    for (env, release), manifests in rendered.items():
        for m in manifests:
            if m["kind"] in cluster_scoped:
                assert "namespace" not in m["metadata"]
            else:
                assert m["metadata"].get("namespace") == render.namespace(env), f"{release}: {m['kind']}"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_every_container_is_restricted_with_probes_and_resources(rendered: dict, case: tuple[str, str]) -> None:
    for where, _, spec in pod_specs(rendered[case]):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, where
        assert spec.get("priorityClassName", "").startswith("openpolicy-"), where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["privileged"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            for section in ("requests", "limits"):
                assert set(container["resources"][section]) >= {"cpu", "memory"}, f"{where}: {section}"
            if where.startswith("Deployment/"):
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
                assert container["startupProbe"]["httpGet"]["path"] == "/healthz", where


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_resources_follow_the_catalog(rendered: dict, case: tuple[str, str]) -> None:
    _env, name = case
    deployment = one(rendered[case], "Deployment", name)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == catalog_service(name)["resources"]
    assert container["ports"][0]["containerPort"] == catalog_service(name)["port"]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_rolling_update_never_drops_below_desired_ready(rendered: dict, case: tuple[str, str]) -> None:
    strategy = one(rendered[case], "Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_multi_replica_deployments_have_a_pdb(rendered: dict, case: tuple[str, str]) -> None:
    manifests = rendered[case]
    deployment = one(manifests, "Deployment")
    hpa = kinds(manifests, "HorizontalPodAutoscaler")
    replicas = hpa[0]["spec"]["minReplicas"] if hpa else deployment["spec"]["replicas"]
    pdbs = kinds(manifests, "PodDisruptionBudget")
    if replicas > 1:
        assert len(pdbs) == 1, f"{case}: {replicas} replicas and no PDB"
        assert pdbs[0]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert pdbs[0]["spec"]["maxUnavailable"] < replicas
    else:
        assert not pdbs, "a PDB on a single replica would block every node drain"
    if hpa:
        # A first install starts at the HPA's minimum, so that Helm's wait covers it (lookup
        # finds no live Deployment under helm template, as on a first install).
        assert deployment["spec"]["replicas"] == hpa[0]["spec"]["minReplicas"], case


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_service_account_and_service(rendered: dict, case: tuple[str, str]) -> None:
    _env, name = case
    manifests = rendered[case]
    sa = one(manifests, "ServiceAccount", name)
    assert sa["automountServiceAccountToken"] is False
    service = one(manifests, "Service", name)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == catalog_service(name)["port"]
    deployment = one(manifests, "Deployment", name)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for key, value in service["spec"]["selector"].items():
        assert labels[key] == value
    assert set(service["spec"]["selector"]) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_every_service_has_a_network_policy_from_the_catalog(rendered: dict, case: tuple[str, str]) -> None:
    _env, name = case
    service = catalog_service(name)
    policy = one([m for m in rendered[case] if not is_hook(m)], "NetworkPolicy", name)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"openpolicy.dev/service": name}
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    callers = set()
    for rule in spec["ingress"]:
        for peer in rule["from"]:
            for expression in peer.get("podSelector", {}).get("matchExpressions", []):
                callers |= set(expression["values"])
    expected = {s["name"] for s in render.catalog()["services"] if name in (s.get("calls") or [])}
    if name != "api-gateway":
        expected.add("api-gateway")
    assert callers == expected
    pod_peers = set()
    ports: set[int] = set()
    https = False
    for rule in spec["egress"]:
        for peer in rule["to"]:
            if "podSelector" in peer:
                pod_peers.add(peer["podSelector"]["matchLabels"]["openpolicy.dev/service"])
            if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                https = True
                assert [p["port"] for p in rule["ports"]] == [443]
        ports |= {p["port"] for p in rule["ports"]}
    assert pod_peers == set(service.get("calls") or [])
    needs = service.get("needs") or []
    assert (5432 in ports) == ("postgresql" in needs)
    assert (6379 in ports) == ("redis" in needs)
    assert 53 in ports
    assert https == ("https" in (service.get("external_egress") or []))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_no_secret_value_in_configmaps_or_env_literals(rendered: dict, case: tuple[str, str]) -> None:
    env, name = case
    manifests = rendered[case]
    for config_map in kinds(manifests, "ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            assert not SECRETISH.search(key), f"{config_map['metadata']['name']}: {key}"
            assert not URL_WITH_CREDENTIALS.search(value), f"{config_map['metadata']['name']}: {key}"
    expected_secret_env = render.service_values(name, env)["secretEnv"]
    for where, _, spec in pod_specs(manifests):
        for container in spec["containers"]:
            from_secret = {}
            for variable in container.get("env", []):
                if "value" in variable:
                    assert not SECRETISH.search(variable["name"]), f"{where}: {variable['name']}"
                    assert not URL_WITH_CREDENTIALS.search(variable["value"]), f"{where}: {variable['name']}"
                else:
                    ref = variable["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == f"{name}-secrets"
                    from_secret[variable["name"]] = ref["key"]
            assert from_secret == expected_secret_env, where


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_pods_roll_on_config_and_secret_changes(rendered: dict, case: tuple[str, str]) -> None:
    env, name = case
    before = one(rendered[case], "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/secret"} <= set(before)
    if name != "auth-service":  # one service is enough for the re-render below
        return
    changed = render.render_service(name, env, {"config": {"LOG_LEVEL": "debug"}, "secretChecksum": "v2"})
    after = one(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] != before["checksum/config"]
    assert after["checksum/secret"] != before["checksum/secret"]
    same = one(render.render_service(name, env), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert same == before, "an unchanged render must not roll the pods"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_topology_spread_and_priority(rendered: dict, case: tuple[str, str]) -> None:
    env, name = case
    spec = one(rendered[case], "Deployment")["spec"]["template"]["spec"]
    (constraint,) = spec["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == name
    assert spec["priorityClassName"] == f"openpolicy-{catalog_service(name)['tier']}"
    platform = render.render_platform(env)
    classes = {pc["metadata"]["name"] for pc in kinds(platform, "PriorityClass")}
    for where, _, pod in pod_specs(rendered[case]):
        assert pod["priorityClassName"] in classes, where


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_autoscaling_follows_the_catalog(rendered: dict, case: tuple[str, str]) -> None:
    env, name = case
    target = (catalog_service(name).get("autoscaling") or {}).get("production")
    hpas = kinds(rendered[case], "HorizontalPodAutoscaler")
    if env in ("local", "dev") or not target:
        assert not hpas
        return
    (hpa,) = hpas
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    metrics = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in spec["metrics"]}
    assert metrics == {"cpu": target["cpu_pct"], "memory": target["memory_pct"]}
    assert spec["behavior"]["scaleUp"]["policies"] and spec["behavior"]["scaleDown"]["policies"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    # Down one pod a minute by default: a lull does not empty a service at once.
    assert spec["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    if env == "production":
        assert (spec["minReplicas"], spec["maxReplicas"]) == (target["min"], target["max"])
    assert spec["minReplicas"] <= spec["maxReplicas"]


def test_scale_down_rate_is_a_value() -> None:
    faster = {"autoscaling": {"scaleDownPodsPerMinute": 10, "scaleDownStabilizationSeconds": 30}}
    manifests = render.render_service("auth-service", "production", faster)
    behavior = one(manifests, "HorizontalPodAutoscaler")["spec"]["behavior"]["scaleDown"]
    assert behavior["stabilizationWindowSeconds"] == 30
    assert behavior["policies"] == [{"type": "Pods", "value": 10, "periodSeconds": 60}]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_ingress_for_the_gateway_only(rendered: dict, case: tuple[str, str]) -> None:
    env, name = case
    ingresses = kinds(rendered[case], "Ingress")
    if not catalog_service(name).get("public"):
        assert not ingresses
        return
    (ingress,) = ingresses
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": name, "port": {"name": "http"}}
    assert bool(ingress["spec"].get("tls")) == (env != "local")


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_cronjobs_for_scheduled_work(rendered: dict, case: tuple[str, str]) -> None:
    _env, name = case
    schedules = {job["name"]: job["cron"] for job in catalog_service(name).get("schedules") or []}
    cronjobs = kinds(rendered[case], "CronJob")
    assert {cj["metadata"]["name"]: cj["spec"]["schedule"] for cj in cronjobs} == {
        f"{name}-{job}": cron for job, cron in schedules.items()
    }
    for cronjob in cronjobs:
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        job = cronjob["spec"]["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 0
        labels = job["template"]["metadata"]["labels"]
        assert labels["openpolicy.dev/service"] == name
        assert labels["app.kubernetes.io/name"] != name, "the Service must not select scheduled pods"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_migration_is_a_pre_install_and_pre_upgrade_hook(rendered: dict, case: tuple[str, str]) -> None:
    _env, name = case
    hooks = [m for m in rendered[case] if is_hook(m)]
    if not catalog_service(name).get("migration"):
        assert not hooks
        return
    job = one(hooks, "Job", f"{name}-migration")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert 0 <= job["spec"]["backoffLimit"] <= 10
    job_weight = int(annotations["helm.sh/hook-weight"])
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    needed = {
        ("ServiceAccount", pod["serviceAccountName"]),
        ("ConfigMap", pod["containers"][0]["envFrom"][0]["configMapRef"]["name"]),
        ("NetworkPolicy", f"{name}-migration"),
    }
    for kind, hook_name in needed:
        helper = one(hooks, kind, hook_name)
        assert int(helper["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight, f"{kind} after the Job"
    policy = one(hooks, "NetworkPolicy", f"{name}-migration")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        == job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    )
    assert 5432 in {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}


def test_pod_labels_reach_deployment_pods_and_migration_labels_reach_migration_pods() -> None:
    manifests = render.render_service(
        "auth-service",
        "local",
        {
            "podLabels": {"openpolicy.dev/simulate": "crashloop"},
            "migration": {"podLabels": {"openpolicy.dev/simulate": "fail"}},
        },
    )
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"]["openpolicy.dev/simulate"] == "crashloop"
    assert "openpolicy.dev/simulate" not in deployment["spec"]["selector"]["matchLabels"]
    job = one(manifests, "Job")
    assert job["spec"]["template"]["metadata"]["labels"]["openpolicy.dev/simulate"] == "fail"
    assert "openpolicy.dev/simulate" not in job["metadata"]["labels"]


@pytest.mark.parametrize("env", render.environments())
def test_local_pods_tolerate_the_simulated_nodes(rendered: dict, env: str) -> None:
    for name in render.service_names():
        for where, _, spec in pod_specs(rendered[(env, name)]):
            tolerations = spec.get("tolerations", [])
            assert (render.KWOK_TOLERATION in tolerations) == (env == "local"), where


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_monitoring_objects_follow_the_flags(rendered: dict, case: tuple[str, str]) -> None:
    env, _name = case
    monitors = kinds(rendered[case], "ServiceMonitor")
    rules = kinds(rendered[case], "PrometheusRule")
    if env == "local":
        assert not monitors and not rules
        return
    (monitor,) = monitors
    assert monitor["spec"]["endpoints"][0] == {"port": "http", "path": "/metrics", "interval": "30s"}
    (rule,) = rules
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    expected = {
        "OpenPolicyServiceDown",
        "OpenPolicyServiceErrorRateHigh",
        "OpenPolicyServiceLatencyP95High",
        "OpenPolicyPodCrashLooping",
    }
    if kinds(rendered[case], "HorizontalPodAutoscaler"):
        expected.add("OpenPolicyHPAAtMaximum")
    assert alerts == expected


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_production_images_are_pinned(rendered: dict, case: tuple[str, str]) -> None:
    _env, name = case
    for where, _, spec in pod_specs(rendered[case]):
        for container in spec["containers"]:
            repository, _, tag = container["image"].rpartition(":")
            assert repository == f"ghcr.io/openpolicy/{name}", where
            assert tag and tag != "latest", where


@pytest.mark.parametrize("env", render.environments())
def test_platform_baseline(rendered: dict, env: str) -> None:
    manifests = rendered[(env, f"openpolicy-platform-{env}")]
    ns = one(manifests, "Namespace")
    assert ns["metadata"]["name"] == render.namespace(env)
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    quota = one(manifests, "ResourceQuota")["spec"]["hard"]
    assert {"requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"} <= set(quota)
    limits = one(manifests, "LimitRange")["spec"]["limits"][0]
    assert limits["type"] == "Container" and {"default", "defaultRequest", "max"} <= set(limits)
    deny = one(manifests, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert [p["port"] for rule in deny["egress"] for p in rule["ports"]] == [53, 53]
    assert {pc["metadata"]["name"] for pc in kinds(manifests, "PriorityClass")} == {
        "openpolicy-edge",
        "openpolicy-core",
        "openpolicy-data",
        "openpolicy-batch",
    }


@pytest.mark.parametrize("env", render.environments())
def test_platform_rbac_is_least_privilege(rendered: dict, env: str) -> None:
    manifests = rendered[(env, f"openpolicy-platform-{env}")]
    roles = {role["metadata"]["name"]: role for role in kinds(manifests, "Role")}
    assert set(roles) == {"openpolicy-deployer", "openpolicy-operator-readonly"}
    assert not kinds(manifests, "ClusterRole") and not kinds(manifests, "ClusterRoleBinding")
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert not {"roles", "rolebindings"} & set(rule["resources"])
    for rule in roles["openpolicy-operator-readonly"]["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        assert "secrets" not in rule["resources"]
    deployer = {
        (group, resource)
        for rule in roles["openpolicy-deployer"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if "create" in rule["verbs"]
    }
    rendered_kinds = {
        ("apps", "deployments"),
        ("", "services"),
        ("", "configmaps"),
        ("", "serviceaccounts"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "networkpolicies"),
        ("networking.k8s.io", "ingresses"),
        ("monitoring.coreos.com", "servicemonitors"),
        ("monitoring.coreos.com", "prometheusrules"),
        ("", "secrets"),
    }
    assert rendered_kinds <= deployer, "the deployer must be able to create what the service chart renders"
    bindings = {b["metadata"]["name"]: b for b in kinds(manifests, "RoleBinding")}
    assert bindings["openpolicy-deployer"]["subjects"][0]["kind"] == "ServiceAccount"
    assert bindings["openpolicy-operator-readonly"]["subjects"][0] == {
        "kind": "Group",
        "name": "openpolicy-operators",
        "apiGroup": "rbac.authorization.k8s.io",
    }
