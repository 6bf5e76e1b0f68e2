"""The module postgresql_service_gaps: which services roles/postgresql's per-service tasks must run for.

The verifiers below were made by PostgreSQL 15 itself (CREATE ROLE ... PASSWORD 'probe-password',
then again with the session's encryption set to md5), for a throwaway role. The queries run in
the Molecule scenario `postgresql` and in every converge on a db host; here are the decisions
made of what they read.
"""

from __future__ import annotations

from ansible_collections.openpolicy.deploy.plugins.modules import postgresql_service_gaps as gaps

SCRAM = (
    "SCRAM-SHA-256$4096:LMfdalkPnM/S88II3UHCtw==$psBnLx+IcVE/UL/f9gBVxN0KEbtNT3AwVN8ZqLQPkwg="
    ":MTNKV+iJDNFWIFhu+YZekrW6Sj5r1m/xaIgZUOJ6rb8="
)
MD5 = "md5d2eb912b0b44fdc3d39a2f99f0c84954"
SERVICES = [
    {"name": "auth", "schema": "auth", "connection_limit": 15},
    {"name": "etl", "schema": "etl"},
]


def authid(**changes) -> dict:
    row = {"rolcanlogin": True, "rolsuper": False, "rolcreatedb": False, "rolcreaterole": False,
           "rolreplication": False, "rolconnlimit": 15, "rolpassword": SCRAM}  # fmt: skip
    return row | changes


def test_a_postgresql_scram_verifier_accepts_its_password_only() -> None:
    assert gaps.password_verifies(SCRAM, "gaps_probe", "probe-password")
    assert not gaps.password_verifies(SCRAM, "gaps_probe", "probe-passwore")
    assert not gaps.password_verifies(SCRAM.replace("4096", "4097"), "gaps_probe", "probe-password")


def test_a_postgresql_md5_verifier_accepts_its_password_for_its_role_only() -> None:
    assert gaps.password_verifies(MD5, "gaps_probe", "probe-password")
    assert not gaps.password_verifies(MD5, "other_role", "probe-password")


def test_no_or_an_unreadable_verifier_never_verifies() -> None:
    for stored in (None, "", "SCRAM-SHA-256$garbage", "probe-password"):
        assert not gaps.password_verifies(stored, "gaps_probe", "probe-password")


def test_a_role_is_named_when_missing_or_when_any_setting_or_the_password_differs() -> None:
    passwords = {"auth": "probe-password", "etl": "probe-password"}
    same = {"auth": authid(), "etl": authid(rolconnlimit=20)}
    assert gaps.role_gaps(same, SERVICES, passwords) == []
    assert gaps.role_gaps({"auth": authid()}, SERVICES, passwords) == ["etl"]
    for change in ({"rolconnlimit": 3}, {"rolsuper": True}, {"rolcanlogin": False}, {"rolpassword": MD5}):
        assert gaps.role_gaps(same | {"auth": authid(**change)}, SERVICES, passwords) == ["auth"], change
    assert gaps.role_gaps(same, SERVICES, passwords | {"auth": "rotated"}) == ["auth"]


def test_a_schema_is_named_when_missing_or_owned_by_another_role() -> None:
    assert gaps.schema_gaps({"auth": "auth", "etl": "etl"}, SERVICES) == []
    assert gaps.schema_gaps({"auth": "auth", "etl": "scraper"}, SERVICES) == ["etl"]
    assert gaps.schema_gaps({}, SERVICES) == ["auth", "etl"]


def test_reporting_grants_are_named_per_schema_for_both_roles_whose_tables_it_reads() -> None:
    schemas = [*SERVICES, {"name": "owner", "schema": "public"}]
    granted = {(role, s["schema"]): True for s in schemas for role in (s["name"], "owner")}
    assert gaps.reporting_gaps(set(), granted, schemas, "owner") == ([], [])
    assert gaps.reporting_gaps({"etl"}, granted, schemas, "owner") == (["etl"], [])
    revoked = granted | {("owner", "auth"): False}
    assert gaps.reporting_gaps(set(), revoked, schemas, "owner") == ([], ["auth"])
    missing = {key: value for key, value in granted.items() if key != ("etl", "etl")}
    assert gaps.reporting_gaps(set(), missing, schemas, "owner") == ([], ["etl"])
