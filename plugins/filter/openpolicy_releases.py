"""Filters of the deploy, release set and rollback roles: pure functions, unit-tested in tests/unit.

- ``openpolicy_service_values``: the chart values of one service release, from the catalog
  (catalog/services.yml) and the environment's settings (the inventory); the same mapping as
  ``service_values()`` in tests/charts/render.py, which docs/charts.md documents.
- ``openpolicy_values_checksum``: a stable checksum of a release's values.
- ``openpolicy_helm_releases``: Helm's release records (the ``sh.helm.release.v1.*`` Secrets of a
  namespace) as {name: {deployed, history}}, without a helm call per release.
- ``openpolicy_previous_revision``: the revision a one-service rollback returns to.
- ``openpolicy_failed_upgrade``: the "revision N failed, revision M is serving" line.
- ``openpolicy_table``: rows of dicts as aligned text lines (the summaries).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from typing import Any

# Environment variables whose values carry credentials: they come from the Secret, by key.
SECRET_ENV = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "CELERY_BROKER_URL": "redis_url",
    "CELERY_RESULT_BACKEND": "redis_url",
    "JWT_SECRET": "jwt_signing_key",
}
# Catalog secrets handed to the service as their own variable.
SECRET_KEY_ENV = {"smtp_password": "SMTP_PASSWORD", "slack_webhook_url": "SLACK_WEBHOOK_URL"}


def _plain(value: Any) -> Any:
    """A plain copy (dict, list, str, int, float, bool, None). Ansible hands filters its own
    lazy, tagged containers, whose deepcopy costs seconds; this costs milliseconds."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _merge(base: dict, extra: dict) -> dict:
    """Deep merge, extra wins; lists are replaced."""
    out = _plain(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _plain(value)
    return out


def _service(catalog: dict, name: str) -> dict:
    for service in catalog["services"]:
        if service["name"] == name:
            return service
    raise ValueError(f"service {name!r} is not in the catalog")


def secret_keys(catalog: dict, name: str) -> dict[str, str]:
    """Environment variable -> key in ``<name>-secrets`` for one service."""
    service = _service(catalog, name)
    env_names = service.get("env") or []
    secret_env = {var: key for var, key in SECRET_ENV.items() if var in env_names}
    for key in service.get("secrets") or []:
        if key in SECRET_KEY_ENV:
            secret_env[SECRET_KEY_ENV[key]] = key
    return secret_env


def service_values(catalog: dict, name: str, settings: dict) -> dict:
    """The chart values of one service in one environment.

    ``settings`` comes from the inventory (roles/service_releases builds it): environment,
    version, replicas, resources, autoscaling ({min, max} or none), config (the environment's
    settings by variable name), ingress_host, ingress_class, ingress_tls_secret, database_cidrs,
    redis_cidrs, tolerations, secret_checksum, monitoring, overrides (chart values merged last).
    """
    catalog, settings = _plain(catalog), _plain(settings)
    service = _service(catalog, name)
    ports = {s["name"]: s["port"] for s in catalog["services"]}
    infra = catalog["infrastructure"]
    needs = service.get("needs") or []
    env_names = service.get("env") or []
    secret_env = secret_keys(catalog, name)
    settings_config = settings.get("config") or {}
    config = {var: str(settings_config[var]) for var in env_names if var in settings_config}
    for called in service.get("calls") or []:
        var = called.upper().replace("-", "_") + "_URL"
        if var in env_names:
            config[var] = f"http://{called}:{ports[called]}"
    callers = [s["name"] for s in catalog["services"] if name in (s.get("calls") or []) and s["name"] != "api-gateway"]
    monitoring = bool(settings.get("monitoring", False))
    values: dict[str, Any] = {
        "service": {"name": name, "tier": service["tier"], "port": service["port"]},
        "environment": settings["environment"],
        "image": {
            "repository": settings.get("image_repository") or f"ghcr.io/openpolicy/{name}",
            "tag": str(settings["version"]),
        },
        "replicaCount": int(settings.get("replicas", 1)),
        "resources": _merge(service["resources"], settings.get("resources") or {}),
        "callers": callers,
        "calls": [{"name": called, "port": ports[called]} for called in service.get("calls") or []],
        "database": {
            "enabled": "postgresql" in needs,
            "port": infra["postgresql"]["port"],
            "cidrs": list(settings.get("database_cidrs") or []) if "postgresql" in needs else [],
        },
        "redis": {
            "enabled": "redis" in needs,
            "port": infra["redis"]["port"],
            "cidrs": list(settings.get("redis_cidrs") or []) if "redis" in needs else [],
        },
        "externalHttps": {"enabled": "https" in (service.get("external_egress") or [])},
        "config": config,
        "existingSecret": f"{name}-secrets" if secret_env else "",
        "secretEnv": secret_env,
        "secretChecksum": str(settings.get("secret_checksum") or ""),
        "migration": {
            "enabled": bool(service.get("migration")),
            "command": ["openpolicy-migrate"],
            "args": ["upgrade", "head"],
        },
        "cronJobs": [
            {"name": job["name"], "schedule": job["cron"], "args": ["scrape", job["name"]]}
            for job in service.get("schedules") or []
        ],
        "monitoring": {"serviceMonitor": {"enabled": monitoring}, "prometheusRule": {"enabled": monitoring}},
    }
    # autoscaling: true takes the catalog's bounds (services without them get none), a dict sets
    # some bounds itself, false/None is off.
    bounds = settings.get("autoscaling")
    catalog_bounds = (service.get("autoscaling") or {}).get("production")
    if isinstance(bounds, dict) or (bounds is True and catalog_bounds):
        target = catalog_bounds or {"min": 2, "max": 4, "cpu_pct": 70, "memory_pct": 80}
        bounds = bounds if isinstance(bounds, dict) else {}
        values["autoscaling"] = {
            "enabled": True,
            "minReplicas": int(bounds.get("min", target["min"])),
            "maxReplicas": int(bounds.get("max", target["max"])),
            "targetCPUUtilizationPercentage": int(bounds.get("cpu_pct", target["cpu_pct"])),
            "targetMemoryUtilizationPercentage": int(bounds.get("memory_pct", target["memory_pct"])),
        }
    if service.get("public"):
        values["ingress"] = {
            "enabled": True,
            "className": settings.get("ingress_class") or "nginx",
            "host": settings.get("ingress_host") or "",
            "tlsSecretName": settings.get("ingress_tls_secret") or "",
        }
    if settings.get("tolerations"):
        values["tolerations"] = settings["tolerations"]
    return _merge(values, settings.get("overrides") or {})


def values_checksum(values: dict) -> str:
    """sha256 of the values as canonical JSON (sorted keys): equal values, equal checksum."""
    canonical = json.dumps(values or {}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def decode_release(secret: dict) -> dict:
    """One Helm release record (a Secret of type helm.sh/release.v1) as Helm's JSON."""
    raw = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    if raw[:3] == b"\x1f\x8b\x08":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def helm_releases(secrets: list[dict]) -> dict[str, dict]:
    """{name: {"history": [{revision, status, chart_version, values_checksum, app_version, updated}],
    "deployed": the entry with status deployed or None}} from a namespace's release Secrets."""
    out: dict[str, dict] = {}
    for secret in secrets or []:
        if (secret.get("type") or "") != "helm.sh/release.v1":
            continue
        record = decode_release(secret)
        values = record.get("config") or {}
        metadata = (record.get("chart") or {}).get("metadata") or {}
        entry = {
            "revision": int(record["version"]),
            "status": record["info"]["status"],
            "chart": metadata.get("name", ""),
            "chart_version": metadata.get("version", ""),
            "app_version": str((values.get("image") or {}).get("tag", metadata.get("appVersion", ""))),
            "values_checksum": values_checksum(values),
            "updated": record["info"].get("last_deployed", ""),
            "description": record["info"].get("description", ""),
        }
        release = out.setdefault(record["name"], {"history": [], "deployed": None})
        release["history"].append(entry)
    for release in out.values():
        release["history"].sort(key=lambda e: e["revision"])
        deployed = [e for e in release["history"] if e["status"] == "deployed"]
        release["deployed"] = deployed[-1] if deployed else None
        release["current"] = release["history"][-1]["revision"] if release["history"] else 0
    return out


def previous_revision(release: dict) -> int:
    """The revision a one-service rollback returns to: the latest earlier revision that served
    (superseded or deployed) with other content than what serves now; 0 when there is none."""
    deployed = release.get("deployed")
    if not deployed:
        return 0
    for entry in reversed(release["history"]):
        if entry["revision"] >= deployed["revision"] or entry["status"] not in ("superseded", "deployed"):
            continue
        if (entry["values_checksum"], entry["chart_version"]) != (
            deployed["values_checksum"],
            deployed["chart_version"],
        ):
            return entry["revision"]
    return 0


def failed_upgrade(service: str, release: dict | None, detail: str = "") -> str:
    """The one line a failed upgrade ends with: "service X: revision N failed, revision M is
    serving (how it got there): why N failed". ``detail`` (Helm's error) stands in for the
    reason when the history has no failed revision."""
    history = (release or {}).get("history") or []
    failed = [e for e in history if e["status"] == "failed"]
    deployed = (release or {}).get("deployed")
    why = " ".join((failed[-1].get("description", "") if failed else detail).split())
    failed_text = f"revision {failed[-1]['revision']} failed" if failed else "the upgrade failed"
    if deployed:
        how = f" ({deployed['description']})" if deployed.get("description") else ""
        serving = f"revision {deployed['revision']} is serving{how}"
    else:
        serving = "no revision is serving (the first install was removed)"
    return f"service {service}: {failed_text}, {serving}" + (f": {why}" if why else "")


def table(rows: list[dict], columns: list[str]) -> list[str]:
    """Rows as aligned text lines, a header first."""
    cells = [[str(c) for c in columns]] + [[str(row.get(c, "")) for c in columns] for row in rows or []]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]


# The generated password behind each secret key of a placeholder Secret (local only).
PLACEHOLDER_PASSWORDS = {
    "database_url": "database_password",
    "redis_url": "redis_password",
    "jwt_signing_key": "jwt_signing_key",
    "smtp_password": "smtp_password",
    "slack_webhook_url": "slack_webhook_token",
}


def placeholder_passwords(catalog: dict, names: list[str]) -> list[list[str]]:
    """[service, password name] pairs the placeholder Secrets of these services need."""
    pairs = []
    for name in names:
        for key in sorted(set(secret_keys(catalog, name).values())):
            pairs.append([name, PLACEHOLDER_PASSWORDS[key]])
    return pairs


def placeholder_secrets(catalog: dict, names: list[str], passwords: dict, database_host: str, redis_host: str) -> list:
    """The Secrets <service>-secrets of the local environment, from generated passwords
    ({"<service>/<password name>": value}). Values are base64 `data`, as the API returns them,
    so that an unchanged Secret compares equal and a rerun changes nothing."""
    infra = catalog["infrastructure"]
    database = catalog["platform"]["database"]
    secrets = []
    for name in names:
        keys = sorted(set(secret_keys(catalog, name).values()))
        if not keys:
            continue
        # The PostgreSQL login role of a service is named after its schema (roles/postgresql);
        # the server accepts TLS connections only.
        role = _service(catalog, name).get("schema") or name

        def password(which: str, service_name: str = name) -> str:
            return passwords[f"{service_name}/{which}"]

        data = {}
        for key in keys:
            if key == "database_url":
                data[key] = (
                    f"postgresql://{role}:{password('database_password')}"
                    f"@{database_host}:{infra['postgresql']['port']}/{database}?sslmode=require"
                )
            elif key == "redis_url":
                # One Redis ACL user per service, named like the service with '_' (roles/redis).
                user = name.replace("-", "_")
                data[key] = f"redis://{user}:{password('redis_password')}@{redis_host}:{infra['redis']['port']}/0"
            elif key == "slack_webhook_url":
                data[key] = f"https://hooks.slack.invalid/{password('slack_webhook_token')}"
            else:
                data[key] = password(PLACEHOLDER_PASSWORDS[key])
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": f"{name}-secrets",
                    "labels": {
                        "app.kubernetes.io/managed-by": "openpolicy-deploy",
                        "openpolicy.dev/service": name,
                        "openpolicy.dev/placeholder": "true",
                    },
                },
                "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())},
            }
        )
    return secrets


def secret_checksums(secrets: list[dict]) -> dict[str, str]:
    """{service: sha256 of its Secret's data}: the chart's secretChecksum."""
    return {
        s["metadata"]["labels"]["openpolicy.dev/service"]: hashlib.sha256(
            json.dumps(s["data"], sort_keys=True).encode()
        ).hexdigest()
        for s in secrets
    }


def secrets_to_apply(desired: list[dict], listing: dict | str) -> list[dict]:
    """The placeholder Secrets whose data or labels differ from the namespace's listing
    (`kubectl get secrets -o json`): an unchanged Secret is not applied again."""
    if isinstance(listing, str):
        listing = json.loads(listing or "{}")
    existing = {
        i["metadata"]["name"]: i for i in (listing or {}).get("items") or [] if i.get("kind", "Secret") == "Secret"
    }
    out = []
    for secret in _plain(desired) or []:
        current = existing.get(secret["metadata"]["name"])
        labels = (current or {}).get("metadata", {}).get("labels") or {}
        if (
            current is None
            or (current.get("data") or {}) != secret["data"]
            or any(labels.get(k) != v for k, v in secret["metadata"]["labels"].items())
        ):
            out.append(secret)
    return out


def secret_names(listing: dict | str) -> list[str]:
    """The names of the Secrets in a `kubectl get secrets -o json` listing."""
    if isinstance(listing, str):
        listing = json.loads(listing or "{}")
    return sorted(i["metadata"]["name"] for i in (listing or {}).get("items") or [])


def helm_owners(listing: dict | str, kind: str = "", label: str = "") -> list[str]:
    """The Helm releases that own the objects of a `kubectl get ... -o json` listing
    (annotation meta.helm.sh/release-name; "" for an object Helm does not own), optionally only
    the objects of one kind that carry a label ("key=value")."""
    if isinstance(listing, str):
        listing = json.loads(listing or "{}")
    key, _, value = label.partition("=")
    return sorted(
        {
            ((i.get("metadata") or {}).get("annotations") or {}).get("meta.helm.sh/release-name", "")
            for i in (listing or {}).get("items") or []
            if (not kind or i.get("kind") == kind)
            and (not key or ((i.get("metadata") or {}).get("labels") or {}).get(key) == value)
        }
    )


def services_with_secrets(catalog: dict, names: list[str]) -> list[str]:
    """The services among ``names`` that read a Secret."""
    return [name for name in names if secret_keys(catalog, name)]


SET_LABEL = "openpolicy.dev/release-set"


def live_services(releases: dict, chart: str = "openpolicy-service") -> dict[str, dict]:
    """What serves now, per service: the entry a release set records."""
    out = {}
    for name, release in sorted((releases or {}).items()):
        deployed = release.get("deployed")
        if not deployed or deployed.get("chart") != chart:
            continue
        out[name] = {
            "chart_version": deployed["chart_version"],
            "app_version": deployed["app_version"],
            "revision": deployed["revision"],
            "values_checksum": deployed["values_checksum"],
            "time": deployed["updated"],
            "backup_label": "",
        }
    return out


def release_sets(configmaps: list[dict]) -> list[dict]:
    """The recorded release sets, oldest first: {number, previous, reason, recorded, name, services}."""
    sets = []
    for configmap in configmaps or []:
        labels = configmap.get("metadata", {}).get("labels") or {}
        if SET_LABEL not in labels:
            continue
        data = configmap.get("data") or {}
        sets.append(
            {
                "number": int(data.get("set", labels[SET_LABEL])),
                "previous": int(data.get("previous") or 0),
                "reason": data.get("reason", ""),
                "recorded": data.get("recorded", ""),
                "name": configmap["metadata"]["name"],
                "services": json.loads(data.get("services.json") or "{}"),
            }
        )
    return sorted(sets, key=lambda item: item["number"])


def _content(entry: dict) -> tuple:
    return (entry.get("chart_version"), entry.get("app_version"), entry.get("values_checksum"))


def same_set(services: dict, recorded: dict | None) -> bool:
    """True when the live services equal a recorded set (revisions included, backup labels not)."""
    if recorded is None:
        return False
    keys = ("chart_version", "app_version", "revision", "values_checksum")
    strip = lambda entries: {n: {k: e.get(k) for k in keys} for n, e in (entries or {}).items()}  # noqa: E731
    return strip(services) == strip(recorded.get("services"))


def rollback_targets(target: dict, releases: dict) -> dict:
    """{"targets": {service: revision}, "missing": [...]}: the releases that must go back to
    the target set's revisions (those whose serving content differs from it), and the services
    whose target revision Helm no longer keeps."""
    targets, missing = {}, []
    for name, entry in sorted((target.get("services") or {}).items()):
        release = (releases or {}).get(name) or {}
        deployed = release.get("deployed")
        if deployed and _content(deployed) == _content(entry):
            continue
        revisions = {e["revision"] for e in release.get("history") or []}
        if entry["revision"] not in revisions:
            missing.append(f"{name} revision {entry['revision']}")
            continue
        targets[name] = entry["revision"]
    return {"targets": targets, "missing": missing}


def summary_rows(services: dict, releases: dict, deployments: list[dict]) -> list[dict]:
    """One summary row per release: service, version, revision, ready replicas, status."""
    ready = {}
    for deployment in deployments or []:
        status = deployment.get("status") or {}
        wanted = (deployment.get("spec") or {}).get("replicas", 0)
        ready[deployment["metadata"]["name"]] = f"{status.get('readyReplicas', 0)}/{wanted}"
    rows = []
    for name in sorted(releases or {}):
        release = releases[name]
        latest = release["history"][-1] if release.get("history") else {}
        entry = (services or {}).get(name) or {}
        rows.append(
            {
                "service": name,
                "version": entry.get("app_version", latest.get("app_version", "")),
                "revision": entry.get("revision", latest.get("revision", "")),
                "ready": ready.get(name, "-"),
                "status": latest.get("status", ""),
            }
        )
    return rows


def namespace_state(listing: dict | str, chart: str = "openpolicy-service") -> dict:
    """What one `kubectl get secrets,configmaps,deployments -o json` of a namespace says (the
    JSON text or its parsed form): {"releases": helm_releases of the chart's releases,
    "sets": release_sets, "deployments": [...]}; no Secret's data is in the result."""
    if isinstance(listing, str):
        listing = json.loads(listing or "{}")
    items = (listing or {}).get("items") or []
    releases = helm_releases([i for i in items if i.get("kind") == "Secret"])
    releases = {n: r for n, r in releases.items() if r["history"] and r["history"][-1]["chart"] == chart}
    return {
        "releases": releases,
        "sets": release_sets([i for i in items if i.get("kind") == "ConfigMap"]),
        "deployments": [
            {
                "metadata": {"name": i["metadata"]["name"]},
                "spec": {"replicas": i["spec"].get("replicas", 0)},
                "status": i.get("status") or {},
            }
            for i in items
            if i.get("kind") == "Deployment"
        ],
    }


def deployed_summary(releases: dict) -> dict[str, dict]:
    """{service: {revision, latest, values_checksum, chart_version}}: what release_plan compares
    (small, so that Ansible passes it around cheaply)."""
    out = {}
    for name, release in (releases or {}).items():
        deployed = release.get("deployed")
        if deployed:
            out[name] = {
                "revision": deployed["revision"],
                "latest": release["history"][-1]["revision"],
                "values_checksum": deployed["values_checksum"],
                "chart_version": deployed["chart_version"],
            }
    return out


def service_settings(name: str, inputs: dict) -> dict:
    """The settings of one service from the inventory's (roles/service_releases, tasks/plan.yml):
    environment-wide values, then the service's own (service_releases_service_settings)."""
    own = (inputs.get("service_settings") or {}).get(name) or {}
    version = (
        inputs.get("version_override") or (inputs.get("versions") or {}).get(name) or inputs.get("default_version")
    )
    return {
        "environment": inputs["environment"],
        "version": str(version or ""),
        "image_repository": f"{inputs.get('image_prefix') or 'ghcr.io/openpolicy'}/{name}",
        "replicas": own.get("replicas", inputs.get("replicas", 1)),
        "resources": own.get("resources") or {},
        "autoscaling": own["autoscaling"] if "autoscaling" in own else inputs.get("autoscaling", False),
        "config": inputs.get("config") or {},
        "ingress_host": inputs.get("ingress_host", ""),
        "ingress_class": inputs.get("ingress_class", "nginx"),
        "ingress_tls_secret": inputs.get("ingress_tls_secret", ""),
        "database_cidrs": inputs.get("database_cidrs") or [],
        "redis_cidrs": inputs.get("redis_cidrs") or [],
        "tolerations": inputs.get("tolerations") or [],
        "monitoring": inputs.get("monitoring", False),
        "secret_checksum": (inputs.get("secret_checksums") or {}).get(name, ""),
        "overrides": (inputs.get("values_overrides") or {}).get(name) or {},
    }


def release_plan(catalog: dict, names: list[str], inputs: dict, deployed: dict, chart_version: str) -> dict:
    """{service: {"tier", "values", "changed"}} for the services of a run. ``deployed`` is
    deployed_summary(). ``changed`` is false when the deployed release already has these values
    and this chart version, so that a rerun does not even call Helm (kubernetes.core.helm would
    find the same and do nothing)."""
    catalog, inputs = _plain(catalog), _plain(inputs)
    plan = {}
    for name in names:
        values = service_values(catalog, name, service_settings(name, inputs))
        current = (deployed or {}).get(name)
        same = bool(
            current
            and current["latest"] == current["revision"]
            and current["values_checksum"] == values_checksum(values)
            and current["chart_version"] == chart_version
        )
        plan[name] = {"tier": _service(catalog, name)["tier"], "values": values, "changed": not same}
    return plan


VERSION_PATTERN = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")


def _names(value: Any) -> list[str]:
    """`-e services=a,b` (a string) or a list, as a list of names."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in items if str(item).strip()]


def release_input_errors(catalog: dict, inputs: dict) -> list[str]:
    """Every problem with the releases' settings and the operator's extra-vars, one line each,
    naming the setting and the expected form (roles/service_releases, tasks/validate.yml)."""
    catalog, inputs = _plain(catalog), _plain(inputs)
    known = [s["name"] for s in catalog["services"]]
    enabled = inputs.get("enabled") or []
    selected = _names(inputs.get("selected"))
    versions = inputs.get("versions") or {}
    default_version = inputs.get("default_version") or ""
    override = inputs.get("version_override") or ""
    environment = inputs.get("environment", "")
    errors = []
    if unknown := [n for n in enabled if n not in known]:
        errors.append(
            f"service_releases_enabled: unknown service {', '.join(unknown)}; "
            f"expected names from catalog/services.yml: {', '.join(known)}"
        )
    if unknown := [n for n in selected if n not in known]:
        errors.append(
            f"services: unknown service {', '.join(unknown)}; expected a comma-separated list of: {', '.join(known)}"
        )
    elif disabled := [n for n in selected if n not in enabled]:
        errors.append(
            f"services: {', '.join(disabled)} not enabled in {environment}; "
            f"expected some of service_releases_enabled: {', '.join(enabled)}"
        )
    if unknown := [n for n in versions if n not in known]:
        errors.append(f"service_releases_versions: unknown service {', '.join(unknown)}; expected catalog names")
    for name, version in versions.items():
        if not VERSION_PATTERN.match(str(version)):
            errors.append(
                f"service_releases_versions.{name}: expected a version like 1.4.2 "
                f"(MAJOR.MINOR.PATCH, optional -suffix), got '{version}'"
            )
    if default_version and not VERSION_PATTERN.match(default_version):
        errors.append(
            f"service_releases_default_version: expected a version like 1.4.2 or empty, got '{default_version}'"
        )
    unpinned = [n for n in enabled if n not in versions]
    if unpinned and (not default_version or inputs.get("require_pinned")):
        errors.append(
            f"service_releases_versions: no version for {', '.join(unpinned)}; "
            f"{environment} pins every enabled service's version (name: MAJOR.MINOR.PATCH)"
        )
    if override and (len(selected) != 1 or not VERSION_PATTERN.match(override)):
        errors.append(
            "version: expected a version like 1.4.2 for exactly one service (-e services=NAME -e version=1.4.2), "
            f"got '{override}' for {len(selected)} service(s)"
        )
    if inputs.get("confirm_required") and inputs.get("confirm") != environment:
        errors.append(
            f"confirm: a {environment} run needs -e confirm={environment} (got '{inputs.get('confirm') or ''}')"
        )
    if int(inputs.get("timeout", 1)) <= 0 or int(inputs.get("history_max", 10)) <= 1:
        errors.append(
            "service_releases_timeout/service_releases_history_max: expected a timeout above 0 seconds and a history "
            f"above 1, got {inputs.get('timeout')} and {inputs.get('history_max')}"
        )
    if inputs.get("placeholder_secrets") and environment != "local":
        errors.append(
            "service_releases_placeholder_secrets: only the local environment may use placeholder Secrets; "
            f"{environment} reads the Secrets the secrets capability delivers"
        )
    return errors


def rollback_input_errors(catalog: dict, inputs: dict) -> list[str]:
    """Every problem with rollback.yml's extra-vars (service, revision, release_set), one line each."""
    catalog, inputs = _plain(catalog), _plain(inputs)
    known = [s["name"] for s in catalog["services"]]
    service = str(inputs.get("service") or "")
    revision = str(inputs.get("revision") or "")
    target = str(inputs.get("release_set") or "previous")
    errors = []
    if revision and not re.match(r"^[1-9][0-9]*$", revision):
        errors.append(f"revision: expected a whole number from 1 (a Helm revision of the service), got '{revision}'")
    elif revision and not service:
        errors.append(f"revision: names a revision of one service; expected -e service=NAME -e revision={revision}")
    if target != "previous" and not re.match(r"^[1-9][0-9]*$", target):
        errors.append(f"release_set: expected previous or the number of a recorded set, got '{target}'")
    if service and service not in known:
        errors.append(f"service: unknown service '{service}'; expected one of: {', '.join(known)}")
    if service and target != "previous":
        errors.append("release_set: rolls back the whole environment; leave out -e service=... (or -e release_set=...)")
    if int(inputs.get("keep", 2)) < 2:
        errors.append(
            f"release_set_keep: expected at least 2 (the live set and the one before), got {inputs.get('keep')}"
        )
    return errors


class FilterModule:
    def filters(self) -> dict:
        return {
            "openpolicy_service_values": service_values,
            "openpolicy_secret_keys": secret_keys,
            "openpolicy_values_checksum": values_checksum,
            "openpolicy_helm_releases": helm_releases,
            "openpolicy_previous_revision": previous_revision,
            "openpolicy_failed_upgrade": failed_upgrade,
            "openpolicy_table": table,
            "openpolicy_namespace_state": namespace_state,
            "openpolicy_release_plan": release_plan,
            "openpolicy_release_input_errors": release_input_errors,
            "openpolicy_rollback_input_errors": rollback_input_errors,
            "openpolicy_deployed_summary": deployed_summary,
            "openpolicy_live_services": live_services,
            "openpolicy_release_sets": release_sets,
            "openpolicy_same_set": same_set,
            "openpolicy_rollback_targets": rollback_targets,
            "openpolicy_summary_rows": summary_rows,
            "openpolicy_placeholder_passwords": placeholder_passwords,
            "openpolicy_placeholder_secrets": placeholder_secrets,
            "openpolicy_secret_checksums": secret_checksums,
            "openpolicy_services_with_secrets": services_with_secrets,
            "openpolicy_secrets_to_apply": secrets_to_apply,
            "openpolicy_secret_names": secret_names,
            "openpolicy_helm_owners": helm_owners,
        }
