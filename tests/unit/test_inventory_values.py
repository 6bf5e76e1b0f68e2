"""Every inventory's services, versions and release settings render through the service chart.

The settings are built from inventories/<env>/group_vars/all/{services,releases}.yml the way
roles/service_releases (tasks/plan.yml) builds them; the chart's strict schema does the rest.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform

from tests.charts import render

REPO = Path(__file__).resolve().parents[2]
CATALOG = yaml.safe_load((REPO / "catalog" / "services.yml").read_text())
INVENTORIES = ["local", "sample", "dev", "staging", "production"]


def group_vars(inventory: str) -> dict:
    merged: dict = {}
    for name in ("environment", "services", "releases"):
        merged |= yaml.safe_load((REPO / "inventories" / inventory / "group_vars" / "all" / f"{name}.yml").read_text())
    return merged


def settings(gv: dict, name: str) -> dict:
    own = (gv.get("service_releases_service_settings") or {}).get(name) or {}
    return {
        "environment": gv["openpolicy_environment"],
        "version": gv["service_releases_versions"].get(name) or gv["service_releases_default_version"],
        "replicas": own.get("replicas", gv["service_releases_replicas"]),
        "resources": own.get("resources") or {},
        "autoscaling": own["autoscaling"] if "autoscaling" in own else gv["service_releases_autoscaling"],
        "config": gv["service_releases_config"],
        "ingress_host": gv["service_releases_ingress_host"],
        "ingress_tls_secret": gv["service_releases_ingress_tls_secret"],
        "database_cidrs": gv["service_releases_database_cidrs"],
        "redis_cidrs": gv["service_releases_redis_cidrs"],
        "monitoring": gv["service_releases_monitoring"],
    }


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_enabled_service_renders(inventory: str):
    gv = group_vars(inventory)
    assert set(gv["service_releases_enabled"]) <= {s["name"] for s in CATALOG["services"]}
    namespace = f"openpolicy-{gv['openpolicy_environment']}"

    def one(name: str) -> list[dict]:
        values = platform.service_values(CATALOG, name, settings(gv, name))
        return render.helm_template(render.SERVICE_CHART, name, namespace, values)

    render.build_dependencies()  # once, before the threads (helm dependency build is not concurrent-safe)
    with ThreadPoolExecutor(max_workers=4) as pool:
        rendered = dict(zip(gv["service_releases_enabled"], pool.map(one, gv["service_releases_enabled"]), strict=True))
    for name, manifests in rendered.items():
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.startswith(f"ghcr.io/openpolicy/{name}:"), image


def test_production_pins_every_version_and_asks_for_confirmation():
    gv = group_vars("production")
    assert gv["service_releases_require_pinned_versions"] is True
    assert gv["service_releases_confirm_required"] is True
    assert gv["service_releases_default_version"] == ""
    assert set(gv["service_releases_versions"]) == set(gv["service_releases_enabled"])
    assert all(v != "latest" for v in gv["service_releases_versions"].values())


def test_no_environment_but_local_makes_placeholder_secrets():
    """Secrets come from roles/secrets; placeholders are a local-only fallback (refused elsewhere)."""
    for inventory in INVENTORIES:
        if inventory != "local":
            assert group_vars(inventory)["service_releases_placeholder_secrets"] is False, inventory
