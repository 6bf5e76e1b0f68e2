"""Ansible module: which per-service roles, schemas and reporting grants differ, in one connection."""

from __future__ import annotations

DOCUMENTATION = r"""
module: postgresql_service_gaps
short_description: Find in one connection what roles/postgresql's per-service tasks would change
description:
  - Reads pg_authid, pg_namespace, pg_class and pg_default_acl once and names, per kind, the services
    whose login role, schema, grants on existing tables or default privileges differ from what the
    role sets. The role then runs its per-service tasks for those alone; on a rerun with nothing to
    change that is one module call instead of one call per service and kind.
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
"""

import base64  # noqa: E402 - after the documentation, as Ansible modules are laid out
import hashlib  # noqa: E402
import hmac  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# postgresql_user's role_attr_flags for a service role: LOGIN,NOSUPERUSER,NOCREATEDB,NOCREATEROLE,NOREPLICATION.
SERVICE_ROLE_FLAGS = {"rolcanlogin": True, "rolsuper": False, "rolcreatedb": False, "rolcreaterole": False,
                      "rolreplication": False}  # fmt: skip
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


def role_gaps(authid: dict[str, dict], services: list[dict], passwords: dict[str, str]) -> list[str]:
    """Services whose login role differs: authid is pg_authid by rolname."""
    gaps = []
    for service in services:
        row = authid.get(service["name"])
        if (
            row is None
            or any(row[flag] != wanted for flag, wanted in SERVICE_ROLE_FLAGS.items())
            or row["rolconnlimit"] != int(service.get("connection_limit", 20))
            or not password_verifies(row["rolpassword"], service["name"], passwords.get(service["name"], ""))
        ):
            gaps.append(service["name"])
    return gaps


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


def read(module: AnsibleModule) -> dict:
    try:
        import psycopg2
    except ImportError:
        module.fail_json(msg="postgresql_service_gaps: python3-psycopg2 is not installed on the host")
    p = module.params
    connect = {"host": p["login_unix_socket"], "port": p["login_port"]}
    with psycopg2.connect(dbname="postgres", **connect) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolconnlimit,"
            " rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
            ([s["name"] for s in p["services"]],),
        )
        columns = [c.name for c in cur.description]
        authid = {row[0]: dict(zip(columns, row, strict=True)) for row in cur.fetchall()}
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (p["database"],))
        database_exists = cur.fetchone() is not None
    conn.close()
    gaps = {"roles": role_gaps(authid, p["services"], p["passwords"])}
    every_schema = [s["schema"] for s in p["reporting_schemas"]]
    if not database_exists:
        # A first run: every per-service task has work to do.
        return gaps | {"schemas": [s["schema"] for s in p["services"]], "reporting_tables": every_schema,
                       "reporting_defaults": every_schema}  # fmt: skip
    with psycopg2.connect(dbname=p["database"], **connect) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = ANY(%s)", (every_schema,)
        )
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
    conn.close()
    tables, future = reporting_gaps(ungranted, defaults, p["reporting_schemas"], p["owner_role"])
    return gaps | {
        "schemas": schema_gaps(owners, p["services"]),
        "reporting_tables": tables,
        "reporting_defaults": future,
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
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **read(module))


if __name__ == "__main__":
    main()
