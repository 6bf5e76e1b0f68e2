"""Filters of roles/secrets: what an environment's vault must hold, what is missing or too weak,
and the one Kubernetes Secret per service built from it. Pure functions, unit-tested in
tests/unit/test_secret_filters.py; no value ever appears in an error message, only its name.

The vault holds these `vault_*` keys (docs/secrets.md):

- ``vault_database_passwords``: {service: password} for every service with a schema
- ``vault_postgresql_passwords``: {role: password} for the owner, reporting and replication roles
- ``vault_redis_passwords``: {service: password} for every service that needs Redis
- ``vault_redis_admin_password``
- ``vault_jwt_signing_key`` / ``vault_jwt_public_key`` (EC P-256, PEM) and
  ``vault_jwt_previous_public_key`` (still accepted during a rotation's overlap window, else "")
- ``vault_pgbackrest_repo_cipher_pass``
- ``vault_monitoring_passwords``: {postgres_exporter, redis_exporter, grafana_admin}
- ``vault_ha_passwords``: {name: password} for the HA databases where the environment has them
  (patroni_superuser, patroni_restapi, redis_sentinel: secrets_ha_passwords)
- ``vault_smtp_password``, ``vault_slack_webhook_url``: issued by providers, never generated
  outside the local environment
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as random
import string
from typing import Any

from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform

MONITORING_USERS = ["postgres_exporter", "redis_exporter", "grafana_admin"]
ALPHABET = string.ascii_letters + string.digits
# What a provided password may not hold: the hosts' files carry passwords unquoted (redis.conf's
# masterauth, Sentinel's auth-pass, HAProxy's AUTH check, a .pgpass line), where whitespace, a
# quote or a backslash splits or escapes, `#` starts a comment, `:` separates fields and `$`
# names an environment variable inside HAProxy's double quotes.
UNSAFE_IN_FILES = frozenset(" \t\"'\\#:$")


def _plain(value: Any) -> Any:
    """Ansible's lazy containers as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def required_secrets(catalog: dict, settings: dict) -> list[dict]:
    """Every secret the environment needs: {"key": "vault_x" or "vault_x.member", "kind": ...}.

    kind: password (generated, checked for strength), passphrase (generated, longer),
    ec_key (the JWT key pair), external (issued elsewhere; generated only as a local placeholder).
    ``settings``: postgresql_roles (list), ha_passwords (list: the HA databases' own passwords),
    redis_admin_user (unused in the key, kept for docs).
    """
    out: list[dict] = []
    for service in catalog["services"]:
        needs = service.get("needs") or []
        if service.get("schema") and "postgresql" in needs:
            out.append({"key": f"vault_database_passwords.{service['name']}", "kind": "password"})
        if "redis" in needs:
            out.append({"key": f"vault_redis_passwords.{service['name']}", "kind": "password"})
    for role in settings.get("postgresql_roles") or []:
        out.append({"key": f"vault_postgresql_passwords.{role}", "kind": "password"})
    for name in settings.get("ha_passwords") or []:
        out.append({"key": f"vault_ha_passwords.{name}", "kind": "password"})
    out.append({"key": "vault_redis_admin_password", "kind": "password"})
    wanted = {name for service in catalog["services"] for name in service.get("secrets") or []}
    if "jwt_signing_key" in wanted:
        out.append({"key": "vault_jwt_signing_key", "kind": "ec_key"})
    out.append({"key": "vault_pgbackrest_repo_cipher_pass", "kind": "passphrase"})
    for user in MONITORING_USERS:
        out.append({"key": f"vault_monitoring_passwords.{user}", "kind": "password"})
    for name in ("smtp_password", "slack_webhook_url"):
        if name in wanted:
            out.append({"key": f"vault_{name}", "kind": "external"})
    return out


def _get(values: dict, key: str) -> Any:
    top, _, member = key.partition(".")
    value = (values or {}).get(top)
    if member:
        value = (value or {}).get(member) if isinstance(value, dict) else None
    return value


def missing_secrets(values: dict, required: list[dict]) -> list[dict]:
    """The required secrets that are absent or empty in ``values`` (the vault's content)."""
    values = _plain(values) or {}
    out = []
    for spec in _plain(required):
        value = _get(values, spec["key"])
        if value is None or value == "" or (spec["kind"] == "ec_key" and not values.get("vault_jwt_public_key")):
            out.append(spec)
    return out


def password(length: int = 32) -> str:
    """A random password of letters and digits with each class present."""
    while True:
        value = "".join(random.choice(ALPHABET) for _ in range(length))
        if any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value):
            return value


def generate_secrets(missing: list[dict], length: int = 32, passphrase_length: int = 64) -> dict:
    """Values for the missing secrets of kind password, passphrase and external (a local
    placeholder), as {"vault_x": value} or {"vault_x": {member: value}} to merge recursively.
    ec_key is made by community.crypto in the role."""
    out: dict[str, Any] = {}
    for spec in _plain(missing):
        kind = spec["kind"]
        if kind == "ec_key":
            continue
        if kind == "passphrase":
            value = password(passphrase_length)
        elif spec["key"] == "vault_slack_webhook_url":
            value = f"https://hooks.slack.invalid/services/{password(24)}"
        else:
            value = password(length)
        top, _, member = spec["key"].partition(".")
        if member:
            out.setdefault(top, {})[member] = value
        else:
            out[top] = value
    return out


def weak_secrets(values: dict, required: list[dict], min_length: int = 16) -> list[str]:
    """One line per provided password or passphrase that is too weak: shorter than
    ``min_length`` (passphrases: twice that) or with fewer than three of lower case, upper case,
    digits and other characters; or that holds a character the hosts' files cannot carry
    unquoted (UNSAFE_IN_FILES, non-ASCII, control characters). Names the key, never the value."""
    values = _plain(values) or {}
    lines = []
    for spec in _plain(required):
        if spec["kind"] not in ("password", "passphrase"):
            continue
        value = _get(values, spec["key"])
        if value is None or value == "":
            continue
        value = str(value)
        need = min_length * (2 if spec["kind"] == "passphrase" else 1)
        classes = sum(
            [
                any(c.islower() for c in value),
                any(c.isupper() for c in value),
                any(c.isdigit() for c in value),
                any(not c.isalnum() for c in value),
            ]
        )
        if any(c in UNSAFE_IN_FILES or not c.isprintable() or not c.isascii() for c in value):
            lines.append(
                f"secrets: {spec['key']}: expected printable ASCII without spaces, quotes, backslash, '#', ':' or '$' "
                "(the hosts' configuration files carry it unquoted)"
            )
        elif len(value) < need:
            lines.append(f"secrets: {spec['key']}: too weak, {len(value)} characters where at least {need} are needed")
        elif classes < 3:
            lines.append(
                f"secrets: {spec['key']}: too weak, needs three of lower case, upper case, digits and other characters"
            )
    return lines


def secret_values(values: dict) -> list[str]:
    """Every leaf value of the vault (strings), for the tests' leak checks and no_log audits."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif value not in (None, ""):
            out.append(str(value))

    walk(_plain(values))
    return out


def merge_values(values: dict, extra: dict) -> dict:
    """``values`` with ``extra`` merged in, one level deep (the vault's maps)."""
    out = dict(_plain(values) or {})
    for key, value in (_plain(extra) or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of a password (RFC 5802/7677, as pg_authid stores it):
    `ALTER ROLE ... PASSWORD '<verifier>'` sets the password without it ever reaching the server
    or its statement log in clear."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", str(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def rotation_targets(catalog: dict, kind: str, service: str) -> list[dict]:
    """What a rotation of ``kind`` touches for ``service`` (a name or "all"): one entry per service
    with its vault key, PostgreSQL role and Redis user; [] when the service has no such secret."""
    names = []
    for entry in _plain(catalog)["services"]:
        needs = entry.get("needs") or []
        has = {
            "database_password": bool(entry.get("schema")) and "postgresql" in needs,
            "redis_password": "redis" in needs,
            "jwt_signing_key": "jwt_signing_key" in (entry.get("secrets") or []),
        }.get(kind, False)
        if has and service in ("all", entry["name"]):
            names.append(
                {
                    "service": entry["name"],
                    "key": f"vault_{kind.replace('_password', '_passwords')}.{entry['name']}",
                    "kind": "password",
                    "role": entry.get("schema") or "",
                    "user": entry["name"].replace("-", "_"),
                }
            )
    return names


class FilterModule:
    def filters(self) -> dict:
        return {
            "openpolicy_required_secrets": required_secrets,
            "openpolicy_missing_secrets": missing_secrets,
            "openpolicy_generate_secrets": generate_secrets,
            "openpolicy_weak_secrets": weak_secrets,
            "openpolicy_service_secret_keys": platform.secret_keys,
            "openpolicy_service_secrets": platform.service_secrets,
            "openpolicy_service_secret_checksums": platform.secret_checksums,
            "openpolicy_secret_values": secret_values,
            "openpolicy_merge_secrets": merge_values,
            "openpolicy_scram_verifier": scram_verifier,
            "openpolicy_rotation_targets": rotation_targets,
        }
