"""The catalog (catalog/services.yml) as the platform's inputs: the one place that knows how a
service's catalog entry becomes PostgreSQL schemas and login roles, Redis ACL users, the keys of
its Secret, its connection URLs and its chart values.

Pure functions on plain data, unit-tested in tests/unit; the filters (plugins/filter), the
modules and the chart tests (tests/charts/render.py) import them from here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any
from urllib.parse import quote

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
# Catalog `secrets:` entry -> the keys of the service's Secret that carry it (roles/secrets).
SECRET_KEYS = {
    "database_password": ["database_url"],
    "redis_password": ["redis_url"],
    "jwt_signing_key": ["jwt_signing_key", "jwt_public_keys"],
    "smtp_password": ["smtp_password"],
    "slack_webhook_url": ["slack_webhook_url"],
}
# The generated password behind each secret key of a placeholder Secret (local only).
PLACEHOLDER_PASSWORDS = {
    "database_url": "database_password",
    "redis_url": "redis_password",
    "jwt_signing_key": "jwt_signing_key",
    "smtp_password": "smtp_password",
    "slack_webhook_url": "slack_webhook_token",
}
# Connection limit of a service's login role unless the environment sets its own.
DEFAULT_CONNECTION_LIMIT = 15


def plain(value: Any) -> Any:
    """A plain copy (dict, list, str, int, float, bool, None). Ansible hands plugins its own
    lazy, tagged containers, whose deepcopy costs seconds; this costs milliseconds."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def merge(base: dict, extra: dict) -> dict:
    """Deep merge, extra wins; lists are replaced."""
    out = plain(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = plain(value)
    return out


def service(catalog: dict, name: str) -> dict:
    for entry in catalog["services"]:
        if entry["name"] == name:
            return entry
    raise ValueError(f"service {name!r} is not in the catalog")


def login_role(entry: dict) -> str:
    """A service's PostgreSQL login role: named after the schema it owns (roles/postgresql)."""
    return entry.get("schema") or entry["name"]


def redis_user(name: str) -> str:
    """A service's Redis ACL user: its name with '_' (roles/redis)."""
    return name.replace("-", "_")


def secret_env(catalog: dict, name: str) -> dict[str, str]:
    """Environment variable -> key in ``<name>-secrets`` for one service (what the chart reads)."""
    entry = service(catalog, name)
    env_names = entry.get("env") or []
    out = {var: key for var, key in SECRET_ENV.items() if var in env_names}
    for key in entry.get("secrets") or []:
        if key in SECRET_KEY_ENV:
            out[SECRET_KEY_ENV[key]] = key
    return out


def secret_keys(catalog: dict, name: str) -> list[str]:
    """The keys of ``<name>-secrets``: exactly what the service's catalog `secrets:` need."""
    entry = service(catalog, name)
    return sorted({key for item in entry.get("secrets") or [] for key in SECRET_KEYS.get(item, [])})


def database_url(
    role: str, password: str, *, host: str, port: int | str, database: str, sslmode: str = "require"
) -> str:
    return f"postgresql://{role}:{quote(str(password), safe='')}@{host}:{port}/{database}?sslmode={sslmode}"


def redis_url(user: str, password: str, host: str, port: int | str) -> str:
    return f"redis://{user}:{quote(str(password), safe='')}@{host}:{port}/0"


def platform_inputs(catalog: dict | str, connection_limits: dict | None = None) -> dict:
    """Everything the roles derive from the catalog, as one mapping (the `openpolicy_platform`
    variable, docs/operator-guide.md):

    - ``services``: catalog names, in catalog order; ``tiers``: {service: tier}
    - ``database``: the PostgreSQL database; ``postgresql_port``, ``redis_port``
    - ``postgresql_schemas``: [{name, schema, connection_limit}] (login role = schema)
    - ``login_roles``: {service: PostgreSQL login role}
    - ``redis_users``: [{name}] ; ``redis_user_of``: {service: ACL user}
    - ``secret_keys``: {service: [keys of <service>-secrets]} (only services with secrets)
    - ``secret_env``: {service: {ENV: key}} (what each service's chart reads from its Secret)
    - ``namespace_pattern``; ``catalog``: the catalog itself (for the filters that take it)

    ``catalog`` is the catalog or its file's text. The text is parsed and derived once per
    process (``platform_inputs_of_text``): `openpolicy_platform` is templated again at every
    reference, and the preflight's checks refer to it for every host of every loop.
    """
    if isinstance(catalog, str) and not connection_limits:
        return json.loads(platform_inputs_of_text(str(catalog)))
    catalog = plain(catalog)
    limits = plain(connection_limits) or {}
    entries = catalog["services"]
    with_db = [e for e in entries if e.get("schema") and "postgresql" in (e.get("needs") or [])]
    with_redis = [e for e in entries if "redis" in (e.get("needs") or [])]
    return {
        "services": [e["name"] for e in entries],
        "tiers": {e["name"]: e["tier"] for e in entries},
        "database": catalog["platform"]["database"],
        "namespace_pattern": catalog["platform"]["namespace_pattern"],
        "postgresql_port": catalog["infrastructure"]["postgresql"]["port"],
        "redis_port": catalog["infrastructure"]["redis"]["port"],
        "postgresql_schemas": [
            {
                "name": login_role(e),
                "schema": e["schema"],
                "connection_limit": int(limits.get(e["schema"], DEFAULT_CONNECTION_LIMIT)),
            }
            for e in with_db
        ],
        "login_roles": {e["name"]: login_role(e) for e in with_db},
        "redis_users": [{"name": redis_user(e["name"])} for e in with_redis],
        "redis_user_of": {e["name"]: redis_user(e["name"]) for e in with_redis},
        "secret_keys": {e["name"]: secret_keys(catalog, e["name"]) for e in entries if secret_keys(catalog, e["name"])},
        "secret_env": {e["name"]: secret_env(catalog, e["name"]) for e in entries if secret_env(catalog, e["name"])},
        "catalog": catalog,
    }


@functools.lru_cache(maxsize=4)
def platform_inputs_of_text(text: str) -> str:
    """platform_inputs of the catalog file's text, as JSON: a cached value callers cannot change
    (each gets its own copy from json.loads, faster than a deepcopy)."""
    # Imported here: modules that import this file run where PyYAML may be missing.
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return json.dumps(platform_inputs(yaml.load(text, Loader=loader)))


def schemas_with_limits(schemas: list[dict], connection_limits: dict | None) -> list[dict]:
    """The services' schemas with the environment's connection limits ({schema: limit})."""
    limits = plain(connection_limits) or {}
    return [
        {**schema, "connection_limit": int(limits.get(schema["schema"], schema["connection_limit"]))}
        for schema in plain(schemas)
    ]


def role_passwords(inputs: dict, database_passwords: dict, other_roles: dict | None = None) -> dict:
    """{login role: password}: each service's role gets vault_database_passwords[service],
    the owner, reporting and replication roles their own (roles/postgresql)."""
    out = {role: database_passwords[name] for name, role in inputs["login_roles"].items()}
    out.update(plain(other_roles) or {})
    return out


def user_passwords(inputs: dict, redis_passwords: dict, admin_user: str, admin_password: str) -> dict:
    """{ACL user: password}: each service's user gets vault_redis_passwords[service] (roles/redis)."""
    out = {user: redis_passwords[name] for name, user in inputs["redis_user_of"].items()}
    out[admin_user] = admin_password
    return out


def service_values(catalog: dict, name: str, settings: dict) -> dict:
    """The chart values of one service in one environment.

    ``settings`` comes from the inventory (service_settings below): environment, version,
    replicas, resources, autoscaling ({min, max} or none), config (the environment's settings by
    variable name), ingress_host, ingress_class, ingress_tls_secret, database_cidrs, redis_cidrs,
    tolerations, secret_checksum, monitoring, overrides (chart values merged last).
    """
    catalog, settings = plain(catalog), plain(settings)
    entry = service(catalog, name)
    ports = {s["name"]: s["port"] for s in catalog["services"]}
    infra = catalog["infrastructure"]
    needs = entry.get("needs") or []
    env_names = entry.get("env") or []
    env = secret_env(catalog, name)
    settings_config = settings.get("config") or {}
    config = {var: str(settings_config[var]) for var in env_names if var in settings_config}
    for called in entry.get("calls") or []:
        var = called.upper().replace("-", "_") + "_URL"
        if var in env_names:
            config[var] = f"http://{called}:{ports[called]}"
    callers = [s["name"] for s in catalog["services"] if name in (s.get("calls") or []) and s["name"] != "api-gateway"]
    monitoring = bool(settings.get("monitoring", False))
    values: dict[str, Any] = {
        "service": {"name": name, "tier": entry["tier"], "port": entry["port"]},
        "environment": settings["environment"],
        "image": {
            "repository": settings.get("image_repository") or f"ghcr.io/openpolicy/{name}",
            "tag": str(settings["version"]),
        },
        "replicaCount": int(settings.get("replicas", 1)),
        "resources": merge(entry["resources"], settings.get("resources") or {}),
        "callers": callers,
        "calls": [{"name": called, "port": ports[called]} for called in entry.get("calls") or []],
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
        "externalHttps": {"enabled": "https" in (entry.get("external_egress") or [])},
        "config": config,
        "existingSecret": f"{name}-secrets" if env else "",
        "secretEnv": env,
        "secretChecksum": str(settings.get("secret_checksum") or ""),
        "migration": {
            "enabled": bool(entry.get("migration")),
            "command": ["openpolicy-migrate"],
            "args": ["upgrade", "head"],
        },
        "cronJobs": [
            {"name": job["name"], "schedule": job["cron"], "args": ["scrape", job["name"]]}
            for job in entry.get("schedules") or []
        ],
        "monitoring": {"serviceMonitor": {"enabled": monitoring}, "prometheusRule": {"enabled": monitoring}},
    }
    # autoscaling: true takes the catalog's bounds (services without them get none), a dict sets
    # some bounds itself, false/None is off.
    bounds = settings.get("autoscaling")
    catalog_bounds = (entry.get("autoscaling") or {}).get("production")
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
    if entry.get("public"):
        values["ingress"] = {
            "enabled": True,
            "className": settings.get("ingress_class") or "nginx",
            "host": settings.get("ingress_host") or "",
            "tlsSecretName": settings.get("ingress_tls_secret") or "",
        }
    if settings.get("tolerations"):
        values["tolerations"] = settings["tolerations"]
    return merge(values, settings.get("overrides") or {})


def values_checksum(values: dict) -> str:
    """sha256 of the values as canonical JSON (sorted keys): equal values, equal checksum."""
    canonical = json.dumps(values or {}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


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
    release_state.deployed_summary(). ``changed`` is false when the deployed release already has
    these values and this chart version, so that a rerun does not even call Helm."""
    catalog, inputs = plain(catalog), plain(inputs)
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
        plan[name] = {"tier": service(catalog, name)["tier"], "values": values, "changed": not same}
    return plan


def services_with_secrets(catalog: dict, names: list[str]) -> list[str]:
    """The services among ``names`` that read a Secret."""
    return [name for name in names if secret_env(catalog, name)]


def placeholder_passwords(catalog: dict, names: list[str]) -> list[list[str]]:
    """[service, password name] pairs the placeholder Secrets of these services need."""
    pairs = []
    for name in names:
        for key in sorted(set(secret_env(catalog, name).values())):
            pairs.append([name, PLACEHOLDER_PASSWORDS[key]])
    return pairs


def _secret(name: str, labels: dict, data: dict, annotations: dict | None = None) -> dict:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())}
    metadata: dict[str, Any] = {"name": f"{name}-secrets", "labels": labels}
    if annotations is not None:
        metadata["annotations"] = {"openpolicy.dev/secret-checksum": data_checksum(encoded), **annotations}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata, "data": encoded}


def placeholder_secrets(catalog: dict, names: list[str], passwords: dict, database_host: str, redis_host: str) -> list:
    """The Secrets <service>-secrets of the local environment, from generated passwords
    ({"<service>/<password name>": value}). Values are base64 `data`, as the API returns them,
    so that an unchanged Secret compares equal and a rerun changes nothing."""
    catalog = plain(catalog)
    inputs = platform_inputs(catalog)
    secrets = []
    for name in names:
        keys = sorted(set(secret_env(catalog, name).values()))
        if not keys:
            continue

        def password(which: str, service_name: str = name) -> str:
            return passwords[f"{service_name}/{which}"]

        data = {}
        for key in keys:
            if key == "database_url":
                # The placeholders' passwords are letters and digits: quoting changes nothing.
                data[key] = database_url(
                    login_role(service(catalog, name)),
                    password("database_password"),
                    host=database_host,
                    port=inputs["postgresql_port"],
                    database=inputs["database"],
                )
            elif key == "redis_url":
                data[key] = redis_url(redis_user(name), password("redis_password"), redis_host, inputs["redis_port"])
            elif key == "slack_webhook_url":
                data[key] = f"https://hooks.slack.invalid/{password('slack_webhook_token')}"
            else:
                data[key] = password(PLACEHOLDER_PASSWORDS[key])
        labels = {
            "app.kubernetes.io/managed-by": "openpolicy-deploy",
            "openpolicy.dev/service": name,
            "openpolicy.dev/placeholder": "true",
        }
        secrets.append(_secret(name, labels, data))
    return secrets


def service_secrets(catalog: dict, names: list[str], values: dict, endpoints: dict, labels: dict) -> list[dict]:
    """One Secret ``<service>-secrets`` per service that has secrets, with exactly its keys
    (roles/secrets), from the vault's values.

    ``endpoints``: database_host, database_port, database, database_sslmode, redis_host, redis_port.
    Values are base64 `data`, as the API returns them, with the checksum of the data as the
    annotation openpolicy.dev/secret-checksum."""
    catalog, values, endpoints = plain(catalog), plain(values) or {}, plain(endpoints)
    out = []
    for name in names:
        keys = secret_keys(catalog, name)
        if not keys:
            continue
        data: dict[str, str] = {}
        for key in keys:
            if key == "database_url":
                data[key] = database_url(
                    login_role(service(catalog, name)),
                    values["vault_database_passwords"][name],
                    host=endpoints["database_host"],
                    port=endpoints["database_port"],
                    database=endpoints["database"],
                    sslmode=endpoints.get("database_sslmode", "require"),
                )
            elif key == "redis_url":
                data[key] = redis_url(
                    redis_user(name),
                    values["vault_redis_passwords"][name],
                    endpoints["redis_host"],
                    endpoints["redis_port"],
                )
            elif key == "jwt_signing_key":
                data[key] = values["vault_jwt_signing_key"]
            elif key == "jwt_public_keys":
                data[key] = "".join(
                    k if k.endswith("\n") else k + "\n"
                    for k in (values["vault_jwt_public_key"], values.get("vault_jwt_previous_public_key") or "")
                    if k
                )
            else:
                data[key] = str(values[f"vault_{key}"])
        out.append(_secret(name, {**(plain(labels) or {}), "openpolicy.dev/service": name}, data, {}))
    return out


def data_checksum(data: dict) -> str:
    """sha256 of a Secret's base64 data: the chart's secretChecksum."""
    return hashlib.sha256(json.dumps(plain(data), sort_keys=True).encode()).hexdigest()


def secret_checksums(secrets: list[dict]) -> dict[str, str]:
    """{service: sha256 of its Secret's data}: the chart's secretChecksum."""
    return {s["metadata"]["labels"]["openpolicy.dev/service"]: data_checksum(s["data"]) for s in plain(secrets)}
