"""Ansible module: which per-service and database-wide objects of roles/postgresql differ, in one read."""

from __future__ import annotations

DOCUMENTATION = r"""
module: postgresql_service_gaps
short_description: Find in one read what roles/postgresql's database tasks would change
description:
  - Reads pg_authid, pg_namespace, pg_class and pg_default_acl once and names, per kind, the services
    whose login role, schema, grants on existing tables or default privileges differ from what the
    role sets. The role then runs its per-service tasks for those alone; on a rerun with nothing to
    change that is one module call instead of one call per service and kind.
  - Names too the database-wide objects that differ (C(shared)), among the replication, owner and
    reporting roles, the database and its grants, the owner's memberships, the reporting role's
    schema usage, the extensions and the replication slots. The task of each runs only when named.
  - A login role differs when it is missing, its attributes or connection limit differ, or its stored
    password (SCRAM-SHA-256 or md5 verifier) does not verify the password given.
  - "Errs towards naming a service: a service named runs the ordinary task, which changes nothing when
    nothing differs. Reads only; runs as a superuser (pg_authid) over the local socket."
options:
  login_unix_socket: {description: Folder of the server's socket., type: path, required: true}
  login_port: {description: Port of the server., type: int, required: true}
  database: {description: The platform's database (may not exist yet)., type: str, required: true}
  services:
    description: "The services, [{name, schema, connection_limit}] (postgresql_service_schemas)."
    type: list
    elements: dict
    required: true
  passwords:
    description: Password of each service's login role, by role name.
    type: dict
    required: true
    no_log: true
  reporting_role: {description: The read-only reporting role., type: str, required: true}
  reporting_schemas:
    description: "Schemas the reporting role reads, [{name, schema}]: name is the role whose future tables it reads."
    type: list
    elements: dict
    required: true
  owner_role:
    description: Owner role of the database, whose future tables the reporting role reads too.
    type: str
    required: true
  owner_connection_limit: {description: Connection limit of the owner role., type: int, required: true}
  reporting_connection_limit: {description: Connection limit of the reporting role., type: int, required: true}
  replication_role: {description: The role replicas stream as., type: str, required: true}
  replication_connection_limit: {description: Connection limit of the replication role., type: int, required: true}
  extensions:
    description: "Extensions of the database, [{name, schema}] (schema public when left out)."
    type: list
    elements: dict
    required: true
  replication_slots:
    description: Physical slots the primary keeps for its replicas.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Find what the per-service tasks would change
  openpolicy.deploy.postgresql_service_gaps:
    login_unix_socket: /var/run/postgresql
    login_port: 5432
    database: openpolicy
    services: "{{ postgresql_service_schemas }}"
    passwords: "{{ postgresql_role_passwords }}"
    reporting_role: openpolicy_reporting
    reporting_schemas: "{{ __postgresql_reporting_schemas }}"
    owner_role: openpolicy_owner
    owner_connection_limit: 10
    reporting_connection_limit: 5
    replication_role: replicator
    replication_connection_limit: 10
    extensions: [{name: pgcrypto}]
    replication_slots: [db2]
  become: true
  become_user: postgres
"""

RETURN = r"""
roles:
  description: Services whose login role is missing or differs (attributes, connection limit, password).
  returned: always
  type: list
schemas:
  description: Schemas missing or owned by another role than their service's.
  returned: always
  type: list
reporting_tables:
  description: Schemas holding a table, view or foreign table the reporting role has no SELECT grant on.
  returned: always
  type: list
reporting_defaults:
  description: Schemas whose default privileges do not give the reporting role SELECT on future tables.
  returned: always
  type: list
shared:
  description: >-
    Database-wide objects that differ, among replication_role, owner_role, reporting_role, database,
    public_privileges, connect, membership, schema_usage, extensions and replication_slots.
  returned: always
  type: list
"""

import base64  # noqa: E402 - after the documentation, as Ansible modules are laid out
import hashlib  # noqa: E402
import hmac  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# postgresql_user's role_attr_flags for a service role: LOGIN,NOSUPERUSER,NOCREATEDB,NOCREATEROLE,NOREPLICATION.
SERVICE_ROLE_FLAGS = {"rolcanlogin": True, "rolsuper": False, "rolcreatedb": False, "rolcreaterole": False,
                      "rolreplication": False}  # fmt: skip
# ... and of the replication role: LOGIN,REPLICATION,NOSUPERUSER,NOCREATEDB,NOCREATEROLE.
REPLICATION_ROLE_FLAGS = SERVICE_ROLE_FLAGS | {"rolreplication": True}
# The reporting role's setting (postgresql_user's `configuration`), as pg_db_role_setting keeps it.
READ_ONLY_SETTING = "default_transaction_read_only=on"
# Every database-wide object the role's tasks set, in their order (the `shared` return).
SHARED = ("replication_role", "owner_role", "reporting_role", "database", "public_privileges", "connect",
          "membership", "schema_usage", "extensions", "replication_slots")  # fmt: skip
# What GRANT ... ON ALL TABLES IN SCHEMA covers: tables, views, materialized views, foreign and
# partitioned tables.
TABLE_KINDS = ("r", "v", "m", "f", "p")


def password_verifies(stored: str | None, role: str, password: str) -> bool:
    """True when PostgreSQL's stored verifier (pg_authid.rolpassword) accepts `password`."""
    if not stored:
        return False
    if stored.startswith("SCRAM-SHA-256$"):
        try:
            iterations_salt, keys = stored[len("SCRAM-SHA-256$") :].split("$", 1)
            iterations, salt = iterations_salt.split(":", 1)
            stored_key, server_key = keys.split(":", 1)
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        except ValueError:
            return False
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        expected_server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key)) and (
            hmac.compare_digest(expected_server, base64.b64decode(server_key))
        )
    if stored.startswith("md5"):
        return hmac.compare_digest(stored, "md5" + hashlib.md5((password + role).encode()).hexdigest())
    return False


def role_differs(authid: dict[str, dict], name: str, passwords: dict, connection_limit: int, flags: dict) -> bool:
    """A role against the flags, limit and password the role sets: authid is pg_authid by rolname."""
    row = authid.get(name)
    return (
        row is None
        or any(row[flag] != wanted for flag, wanted in flags.items())
        or row["rolconnlimit"] != int(connection_limit)
        or not password_verifies(row["rolpassword"], name, passwords.get(name, ""))
    )


def role_gaps(authid: dict[str, dict], services: list[dict], passwords: dict[str, str]) -> list[str]:
    """Services whose login role differs: authid is pg_authid by rolname."""
    return [
        s["name"]
        for s in services
        if role_differs(authid, s["name"], passwords, s.get("connection_limit", 20), SERVICE_ROLE_FLAGS)
    ]


def shared_gaps(state: dict, wanted: dict) -> list[str]:
    """The database-wide objects that differ, in SHARED's order. `state` is what the server holds
    (see read_cluster and read_database), `wanted` the module's parameters; a database not there
    yet differs in all of its own objects."""
    authid, passwords = state["authid"], wanted["passwords"]
    owner, reporting, replication = wanted["owner_role"], wanted["reporting_role"], wanted["replication_role"]
    differs = {
        "replication_role": role_differs(
            authid, replication, passwords, wanted["replication_connection_limit"], REPLICATION_ROLE_FLAGS
        ),
        "owner_role": role_differs(authid, owner, passwords, wanted["owner_connection_limit"], SERVICE_ROLE_FLAGS),
        "reporting_role": READ_ONLY_SETTING not in state["reporting_settings"]
        or role_differs(authid, reporting, passwords, wanted["reporting_connection_limit"], SERVICE_ROLE_FLAGS),
        "membership": not {s["name"] for s in wanted["services"]} <= state["owner_member_of"],
        "replication_slots": not set(wanted["replication_slots"]) <= state["physical_slots"],
    }
    database = state["database"]
    if database is None:
        differs |= dict.fromkeys(("database", "public_privileges", "connect", "schema_usage", "extensions"), True)
    else:
        connecting = {s["name"] for s in wanted["services"]} | {reporting}
        extensions = {e["name"]: e.get("schema") or "public" for e in wanted["extensions"]}
        differs |= {
            "database": database["owner"] != owner or database["encoding"] != "UTF8",
            "public_privileges": database["public_privileges"],
            "connect": not connecting <= database["connect"],
            "schema_usage": not {s["schema"] for s in wanted["services"]} <= database["usage_schemas"],
            "extensions": any(database["extensions"].get(name) != schema for name, schema in extensions.items()),
        }
    return [name for name in SHARED if differs[name]]


def schema_gaps(owners: dict[str, str], services: list[dict]) -> list[str]:
    """Schemas missing or owned by another role: owners is pg_namespace's owner by schema."""
    return [s["schema"] for s in services if owners.get(s["schema"]) != s["name"]]


def reporting_gaps(ungranted: set[str], defaults: dict[tuple[str, str], bool], schemas: list[dict], owner: str):
    """Schemas with a table the reporting role cannot read, and schemas whose default privileges
    (for the service's role and the owner role) do not grant it SELECT."""
    tables = [s["schema"] for s in schemas if s["schema"] in ungranted]
    future = [
        s["schema"]
        for s in schemas
        if not all(defaults.get((role, s["schema"]), False) for role in dict.fromkeys([s["name"], owner]))
    ]
    return tables, future


def granted_to(acl: str, kind: str, owner: str, privilege: str) -> str:
    """SQL: the roles an ACL column grants `privilege`; a NULL ACL holds the object kind's defaults."""
    return (
        f"SELECT r.rolname FROM aclexplode(coalesce({acl}, acldefault('{kind}', {owner}))) a"
        f" JOIN pg_roles r ON r.oid = a.grantee WHERE a.privilege_type = '{privilege}'"
    )


def read_cluster(cur, p: dict) -> dict:
    """Roles, settings, memberships and slots: the same in every database (connection to postgres)."""
    names = [s["name"] for s in p["services"]] + [p["replication_role"], p["owner_role"], p["reporting_role"]]
    cur.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolconnlimit,"
        " rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
        (names,),
    )
    columns = [c.name for c in cur.description]
    authid = {row[0]: dict(zip(columns, row, strict=True)) for row in cur.fetchall()}
    cur.execute(
        "SELECT coalesce(s.setconfig, '{}') FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
        " WHERE r.rolname = %s AND s.setdatabase = 0",
        (p["reporting_role"],),
    )
    settings = cur.fetchone()
    cur.execute(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
        (p["owner_role"],),
    )
    member_of = {row[0] for row in cur.fetchall()}
    cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical'")
    slots = {row[0] for row in cur.fetchall()}
    cur.execute(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding),"
        " EXISTS (SELECT 1 FROM aclexplode(coalesce(datacl, acldefault('d', datdba))) a"
        "   WHERE a.grantee = 0 AND a.privilege_type IN ('CONNECT', 'TEMPORARY')),"
        f" ARRAY({granted_to('datacl', 'd', 'datdba', 'CONNECT')})"
        " FROM pg_database WHERE datname = %s",
        (p["database"],),
    )
    row = cur.fetchone()
    database = None
    if row is not None:
        database = {"owner": row[0], "encoding": row[1], "public_privileges": row[2], "connect": set(row[3])}
    return {"authid": authid, "reporting_settings": list(settings[0]) if settings else [],
            "owner_member_of": member_of, "physical_slots": slots, "database": database}  # fmt: skip


def read_database(cur, p: dict, database: dict) -> tuple[dict[str, str], set[str], dict]:
    """Schema owners, ungranted tables and default privileges (connection to the database); the
    schemas the reporting role may use and the extensions go into `database`."""
    every_schema = [s["schema"] for s in p["reporting_schemas"]]
    cur.execute("SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = ANY(%s)", (every_schema,))
    owners = dict(cur.fetchall())
    # A missing reporting role grants nothing: every schema with a table shows up, as it should.
    cur.execute(
        "SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = ANY(%s) AND c.relkind = ANY(%s) AND NOT EXISTS ("
        "  SELECT 1 FROM aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee"
        "  WHERE r.rolname = %s AND a.privilege_type = 'SELECT')",
        (every_schema, list(TABLE_KINDS), p["reporting_role"]),
    )
    ungranted = {row[0] for row in cur.fetchall()}
    cur.execute(
        "SELECT pg_get_userbyid(d.defaclrole), n.nspname, EXISTS ("
        "  SELECT 1 FROM aclexplode(d.defaclacl) a JOIN pg_roles r ON r.oid = a.grantee"
        "  WHERE r.rolname = %s AND a.privilege_type = 'SELECT')"
        " FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace"
        " WHERE d.defaclobjtype = 'r' AND n.nspname = ANY(%s)",
        (p["reporting_role"], every_schema),
    )
    defaults = {(role, schema): granted for role, schema, granted in cur.fetchall()}
    cur.execute(
        f"SELECT n.nspname FROM pg_namespace n WHERE %s IN ({granted_to('n.nspacl', 'n', 'n.nspowner', 'USAGE')})",
        (p["reporting_role"],),
    )
    database["usage_schemas"] = {row[0] for row in cur.fetchall()}
    cur.execute("SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace")
    database["extensions"] = dict(cur.fetchall())
    return owners, ungranted, defaults


def read(module: AnsibleModule) -> dict:
    try:
        import psycopg2
    except ImportError:
        module.fail_json(msg="postgresql_service_gaps: python3-psycopg2 is not installed on the host")
    p = module.params
    connect = {"host": p["login_unix_socket"], "port": p["login_port"]}
    with psycopg2.connect(dbname="postgres", **connect) as conn, conn.cursor() as cur:
        state = read_cluster(cur, p)
    conn.close()
    gaps = {"roles": role_gaps(state["authid"], p["services"], p["passwords"])}
    every_schema = [s["schema"] for s in p["reporting_schemas"]]
    if state["database"] is None:
        # A first run: every per-service task has work to do.
        return gaps | {"schemas": [s["schema"] for s in p["services"]], "reporting_tables": every_schema,
                       "reporting_defaults": every_schema, "shared": shared_gaps(state, p)}  # fmt: skip
    with psycopg2.connect(dbname=p["database"], **connect) as conn, conn.cursor() as cur:
        owners, ungranted, defaults = read_database(cur, p, state["database"])
    conn.close()
    tables, future = reporting_gaps(ungranted, defaults, p["reporting_schemas"], p["owner_role"])
    return gaps | {
        "schemas": schema_gaps(owners, p["services"]),
        "reporting_tables": tables,
        "reporting_defaults": future,
        "shared": shared_gaps(state, p),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "login_unix_socket": {"type": "path", "required": True},
            "login_port": {"type": "int", "required": True},
            "database": {"type": "str", "required": True},
            "services": {"type": "list", "elements": "dict", "required": True},
            "passwords": {"type": "dict", "required": True, "no_log": True},
            "reporting_role": {"type": "str", "required": True},
            "reporting_schemas": {"type": "list", "elements": "dict", "required": True},
            "owner_role": {"type": "str", "required": True},
            "owner_connection_limit": {"type": "int", "required": True},
            "reporting_connection_limit": {"type": "int", "required": True},
            "replication_role": {"type": "str", "required": True},
            "replication_connection_limit": {"type": "int", "required": True},
            "extensions": {"type": "list", "elements": "dict", "required": True},
            "replication_slots": {"type": "list", "elements": "str", "required": True},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **read(module))


if __name__ == "__main__":
    main()
