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


WANTED = {
    "services": SERVICES,
    "passwords": {name: "probe-password" for name in ("auth", "etl", "owner", "reporting", "replicator")},
    "owner_role": "owner",
    "owner_connection_limit": 10,
    "reporting_role": "reporting",
    "reporting_connection_limit": 5,
    "replication_role": "replicator",
    "replication_connection_limit": 10,
    "extensions": [{"name": "pgcrypto"}, {"name": "citext", "schema": "auth"}],
    "replication_slots": ["db2"],
}


def in_place() -> dict:
    """What the server holds once the role has run with WANTED."""
    return {
        "authid": {
            "owner": authid(rolconnlimit=10),
            "reporting": authid(rolconnlimit=5),
            "replicator": authid(rolconnlimit=10, rolreplication=True),
        },
        "reporting_settings": [gaps.READ_ONLY_SETTING],
        "owner_member_of": {"auth", "etl", "pg_read_all_stats"},
        "physical_slots": {"db2", "old"},
        "database": {
            "owner": "owner",
            "encoding": "UTF8",
            "public_privileges": False,
            "connect": {"auth", "etl", "reporting", "owner"},
            "usage_schemas": {"auth", "etl", "public"},
            "extensions": {"plpgsql": "pg_catalog", "pgcrypto": "public", "citext": "auth"},
        },
    }


def test_database_wide_objects_in_place_are_not_named() -> None:
    assert gaps.shared_gaps(in_place(), WANTED) == []


def test_each_database_wide_object_is_named_when_it_differs() -> None:
    changes = {
        "replication_role": lambda s: s["authid"]["replicator"].update(rolreplication=False),
        "owner_role": lambda s: s["authid"].pop("owner"),
        "reporting_role": lambda s: s.update(reporting_settings=[]),
        "database": lambda s: s["database"].update(owner="postgres"),
        "public_privileges": lambda s: s["database"].update(public_privileges=True),
        "connect": lambda s: s["database"]["connect"].discard("reporting"),
        "membership": lambda s: s["owner_member_of"].discard("etl"),
        "schema_usage": lambda s: s["database"]["usage_schemas"].discard("auth"),
        "extensions": lambda s: s["database"]["extensions"].update(citext="public"),
        "replication_slots": lambda s: s["physical_slots"].discard("db2"),
    }
    assert tuple(changes) == gaps.SHARED
    for name, change in changes.items():
        state = in_place()
        change(state)
        assert gaps.shared_gaps(state, WANTED) == [name], name
    # A rotated password or another connection limit is a change of the role too.
    assert gaps.shared_gaps(in_place(), WANTED | {"reporting_connection_limit": 6}) == ["reporting_role"]
    rotated = WANTED | {"passwords": WANTED["passwords"] | {"replicator": "rotated"}}
    assert gaps.shared_gaps(in_place(), rotated) == ["replication_role"]


def test_a_database_not_there_yet_names_all_its_own_objects() -> None:
    state = in_place() | {"database": None}
    assert gaps.shared_gaps(state, WANTED) == ["database", "public_privileges", "connect", "schema_usage", "extensions"]
