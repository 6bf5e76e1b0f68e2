"""The filters of roles/secrets (plugins/filter/openpolicy_secrets.py): what a vault must hold,
what is missing or weak, the Secret of each service, the SCRAM verifier, rotation targets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
import yaml
from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog as platform

from tests.helpers import REPO, load_filter_plugin

secrets = load_filter_plugin("openpolicy_secrets")

CATALOG = yaml.safe_load((REPO / "catalog/services.yml").read_text())
ROLES = {"postgresql_roles": ["openpolicy_owner", "openpolicy_reporting", "replicator"]}
ENDPOINTS = {
    "database_host": "db.internal",
    "database_port": 5432,
    "database": "openpolicy",
    "redis_host": "db.internal",
    "redis_port": 6379,
}


def full_vault() -> dict:
    required = secrets.required_secrets(CATALOG, ROLES)
    values = secrets.generate_secrets(required)
    values |= {"vault_jwt_signing_key": "-----BEGIN " + "EC PRIVATE KEY-----\nAAA\n-----END EC PRIVATE KEY-----\n"}
    values |= {"vault_jwt_public_key": "-----BEGIN PUBLIC KEY-----\nBBB\n-----END PUBLIC KEY-----\n"}
    return values


def test_required_secrets_cover_every_service_and_the_platform():
    keys = {s["key"] for s in secrets.required_secrets(CATALOG, ROLES)}
    assert "vault_database_passwords.auth-service" in keys
    assert "vault_database_passwords.api-gateway" not in keys  # no schema
    assert "vault_redis_passwords.api-gateway" in keys  # needs redis, has no Secret
    assert "vault_redis_passwords.policy-service" not in keys
    assert {"vault_jwt_signing_key", "vault_pgbackrest_repo_cipher_pass", "vault_redis_admin_password"} <= keys
    assert {"vault_smtp_password", "vault_slack_webhook_url"} <= keys
    assert "vault_postgresql_passwords.replicator" in keys
    assert not any(key.startswith("vault_ha_passwords") for key in keys)


def test_ha_passwords_are_required_where_the_environment_lists_them():
    required = secrets.required_secrets(CATALOG, {**ROLES, "ha_passwords": ["patroni_superuser", "redis_sentinel"]})
    ha = [s for s in required if s["key"].startswith("vault_ha_passwords.")]
    assert ha == [
        {"key": "vault_ha_passwords.patroni_superuser", "kind": "password"},
        {"key": "vault_ha_passwords.redis_sentinel", "kind": "password"},
    ]
    generated = secrets.generate_secrets(ha)
    assert set(generated["vault_ha_passwords"]) == {"patroni_superuser", "redis_sentinel"}
    assert secrets.missing_secrets(generated, ha) == []


def test_missing_then_generated_leaves_nothing_missing():
    required = secrets.required_secrets(CATALOG, ROLES)
    assert secrets.missing_secrets({}, required) == required
    values = full_vault()
    assert secrets.missing_secrets(values, required) == []
    assert len(values["vault_pgbackrest_repo_cipher_pass"]) == 64
    assert secrets.weak_secrets(values, required) == []


def test_generated_passwords_have_each_class_and_differ():
    passwords = {secrets.password(32) for _ in range(200)}
    assert len(passwords) == 200
    for p in passwords:
        assert len(p) == 32 and any(c.isupper() for c in p) and any(c.islower() for c in p)
        assert any(c.isdigit() for c in p)


@pytest.mark.parametrize(
    ("value", "why"),
    [("Sh0rt", "5 characters where at least 16"), ("alllowercaseletters", "needs three of"), ("", None)],
)
def test_weak_passwords_are_named_never_shown(value: str, why: str | None):
    values = full_vault()
    values["vault_database_passwords"]["auth-service"] = value
    lines = secrets.weak_secrets(values, secrets.required_secrets(CATALOG, ROLES))
    if why is None:
        assert lines == []  # empty is missing, not weak
        return
    assert len(lines) == 1 and lines[0].startswith("secrets: vault_database_passwords.auth-service: too weak")
    assert why in lines[0] and value not in lines[0]


@pytest.mark.parametrize(
    "value",
    ["Has a Space 12345678", 'Quote"Inside12345678', "Quote'Inside12345678", "Back\\slash12345678",
     "Hash#Comment12345678", "Colon:Field12345678", "Dollar$HOME12345678", "Tab\tInside12345678", "Ümlaut12345678abc"],
)  # fmt: skip
def test_a_password_the_hosts_files_cannot_carry_is_refused_naming_the_key(value: str):
    values = full_vault()
    values["vault_redis_passwords"]["auth-service"] = value
    lines = secrets.weak_secrets(values, secrets.required_secrets(CATALOG, ROLES))
    assert lines == [
        "secrets: vault_redis_passwords.auth-service: expected printable ASCII without spaces, quotes, "
        "backslash, '#', ':' or '$' (the hosts' configuration files carry it unquoted)"
    ]


def test_other_punctuation_is_a_strong_password():
    values = full_vault()
    values["vault_redis_passwords"]["auth-service"] = "Str0ng!%&()*+,-./;<=>?@[]^_`{|}~"
    assert secrets.weak_secrets(values, secrets.required_secrets(CATALOG, ROLES)) == []


def test_each_service_secret_has_exactly_its_keys_and_a_checksum():
    values = full_vault()
    names = [s["name"] for s in CATALOG["services"]]
    built = {s["metadata"]["name"]: s for s in platform.service_secrets(CATALOG, names, values, ENDPOINTS, {"a": "b"})}
    assert "api-gateway-secrets" not in built
    assert set(built["auth-service-secrets"]["data"]) == {
        "database_url",
        "redis_url",
        "jwt_signing_key",
        "jwt_public_keys",
    }
    assert set(built["policy-service-secrets"]["data"]) == {"database_url"}
    assert set(built["notification-service-secrets"]["data"]) == {
        "database_url",
        "redis_url",
        "smtp_password",
        "slack_webhook_url",
    }
    auth = built["auth-service-secrets"]
    url = base64.b64decode(auth["data"]["database_url"]).decode()
    assert url.startswith(f"postgresql://auth:{values['vault_database_passwords']['auth-service']}@db.internal:5432/")
    checksum = hashlib.sha256(json.dumps(auth["data"], sort_keys=True).encode()).hexdigest()
    assert auth["metadata"]["annotations"]["openpolicy.dev/secret-checksum"] == checksum
    assert platform.secret_checksums(list(built.values()))["auth-service"] == checksum
    assert auth["metadata"]["labels"] == {"a": "b", "openpolicy.dev/service": "auth-service"}


def test_special_characters_are_escaped_in_urls_and_the_previous_key_is_kept():
    values = full_vault()
    values["vault_database_passwords"]["auth-service"] = "p@ss/w:rd#Long-Enough1"
    values["vault_jwt_previous_public_key"] = "-----BEGIN PUBLIC KEY-----\nOLD\n-----END PUBLIC KEY-----"
    (auth,) = platform.service_secrets(CATALOG, ["auth-service"], values, ENDPOINTS, {})
    url = base64.b64decode(auth["data"]["database_url"]).decode()
    assert "auth:p%40ss%2Fw%3Ard%23Long-Enough1@db.internal" in url
    keys = base64.b64decode(auth["data"]["jwt_public_keys"]).decode()
    assert keys.count("BEGIN PUBLIC KEY") == 2 and "OLD" in keys


def test_scram_verifier_is_what_postgresql_checks():
    verifier = secrets.scram_verifier("correct horse")
    method, rest = verifier.split("$", 1)
    iterations, salt = rest.split("$")[0].split(":")
    stored, server = rest.split("$")[1].split(":")
    assert method == "SCRAM-SHA-256" and iterations == "4096"
    salted = hashlib.pbkdf2_hmac("sha256", b"correct horse", base64.b64decode(salt), 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert secrets.scram_verifier("correct horse") != verifier  # a new salt each time


def test_rotation_targets():
    assert [t["service"] for t in secrets.rotation_targets(CATALOG, "jwt_signing_key", "all")] == ["auth-service"]
    (auth,) = secrets.rotation_targets(CATALOG, "database_password", "auth-service")
    assert auth == {
        "service": "auth-service",
        "key": "vault_database_passwords.auth-service",
        "kind": "password",
        "role": "auth",
        "user": "auth_service",
    }
    assert secrets.rotation_targets(CATALOG, "database_password", "api-gateway") == []
    assert len(secrets.rotation_targets(CATALOG, "redis_password", "all")) == 7
