#!/usr/bin/env python3
"""Backup and restore figures for a 1 GB pgbench database, in one run:

- backup: the toolkit's job runner (scripts/backup_job.py, as the timers run it) and
  playbooks/backup.yml, against a raw `pgbackrest backup` and `pg_dump -Fc`;
- restore: playbooks/restore.yml onto the db host (in place, --delta) and onto the scratch
  host (an empty cluster), against a raw `pgbackrest restore` into an emptied data directory
  (stop, restore, start, wait until it accepts connections) and `pg_restore -j2`.

It uses the two hosts of the Molecule scenario `pgbackrest` (create, prepare, converge,
then destroy at the end unless --keep): the db host runs PostgreSQL on 57432, the backup
host holds the repository. pgbench's tables go into the `openpolicy` database, so the job
runner's row-count manifest counts them like a real database's rows.

Prints one line per figure and the ratios. Not part of `make test` (no timing is asserted).

    python bench/bench_backup.py [--scale 70] [--keep]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.results_file import write_results  # noqa: E402

DB = "pgb-db1"
BACKUP = "pgb-backup1"
PORT = 57432
STANZA = "openpolicy"


def env() -> dict[str, str]:
    tools = REPO / ".toolchain"
    return {
        **os.environ,
        "PATH": f"{tools / 'bin'}:{tools / 'venv' / 'bin'}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "CONTAINERS_CONF": str(REPO / "images" / "containers.conf"),
        # The shared preflight runs roles/secrets, whose vault needs a password: a throwaway one.
        "ANSIBLE_VAULT_PASSWORD_FILE": str(vault_password_file()),
    }


def vault_password_file() -> Path:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"openpolicy-pgbackrest-molecule-vault-{os.getuid()}"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(os.urandom(24).hex() + "\n")
    return path


def run(command: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, env=env(), cwd=REPO, check=False)
    if check and result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr
        sys.exit(f"bench_backup: {' '.join(command)} failed ({result.returncode}):\n{output}")
    return result


def podman(container: str, command: str, user: str = "root") -> str:
    return run(["podman", "exec", "--user", user, container, "bash", "-c", command]).stdout.strip()


def timed(label: str, figures: dict[str, float], action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    figures[label] = time.monotonic() - started
    print(f"{label:<52} {figures[label]:7.1f} s", flush=True)


def inventory() -> list[str]:
    pattern = "/root/.ansible/tmp/molecule.*.pgbackrest/inventory/ansible_inventory.yml"
    files = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not files:
        sys.exit("bench_backup: no Molecule inventory of scenario pgbackrest")
    return ["-i", files[-1], "-i", str(Path(files[-1]).parent / "hosts")]


def playbook(name: str, *extra: str) -> None:
    run(["ansible-playbook", *inventory(), str(REPO / "playbooks" / name), *extra])


def wait_accepting(container: str, port: int) -> None:
    podman(container, f"until pg_isready -q -h /var/run/postgresql -p {port}; do sleep 0.1; done", user="postgres")


def raw_restore() -> None:
    """Stop, empty the data directory, restore, start, wait: what restore.yml automates."""
    podman(DB, "pg_ctlcluster 15 main stop -m fast && find /var/lib/postgresql/15/main -mindepth 1 -delete")
    podman(DB, f"pgbackrest --stanza={STANZA} restore", user="postgres")
    podman(DB, "pg_ctlcluster 15 main start")
    wait_accepting(DB, PORT)
    recovered = f"until [ \"$(psql -X -At -p {PORT} -c 'select pg_is_in_recovery()')\" = f ]; do sleep 0.2; done"
    podman(DB, recovered, user="postgres")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 is about 1.05 GB)")
    parser.add_argument("--keep", action="store_true", help="leave the scenario's hosts up")
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    print("bench_backup: Molecule scenario pgbackrest (create, prepare, converge) ...", flush=True)
    for step in ("create", "prepare", "converge"):
        run(["molecule", step, "-s", "pgbackrest"])
    try:
        timed(f"pgbench -i -s {args.scale} (load)", figures, lambda: podman(
            DB, f"pgbench -i -q -s {args.scale} -p {PORT} openpolicy", user="postgres"))  # fmt: skip
        query = "select pg_size_pretty(sum(pg_database_size(oid))) from pg_database"
        size = podman(DB, f'psql -X -At -p {PORT} -c "{query}"', user="postgres")
        print(f"{'cluster size':<52} {size:>9}", flush=True)
        podman(BACKUP, f"pgbackrest --stanza={STANZA} check", user="pgbackrest")

        timed("backup: raw pgbackrest --type=full backup", figures, lambda: podman(
            BACKUP, f"pgbackrest --stanza={STANZA} --type=full backup", user="pgbackrest"))  # fmt: skip
        # The unit the full backup timer starts (Type=oneshot: returns when the run ends).
        timed("backup: job runner (timer's unit), full", figures, lambda: podman(
            BACKUP, "systemctl start openpolicy-backup-full.service"))  # fmt: skip
        timed("backup: playbooks/backup.yml -e type=full", figures, lambda: playbook("backup.yml", "-e", "type=full"))
        timed("backup: pg_dump -Fc", figures, lambda: podman(
            DB, f"pg_dump -Fc -p {PORT} -f /tmp/bench.dump openpolicy", user="postgres"))  # fmt: skip

        timed("restore: raw pgbackrest restore (empty dir, to accepting)", figures, raw_restore)
        timed("restore: restore.yml onto the db host (--delta)", figures, lambda: playbook(
            "restore.yml", "-e", json.dumps({"restore_host": DB})))  # fmt: skip
        timed("restore: restore.yml onto the scratch host (empty)", figures, lambda: playbook(
            "restore.yml", "-e", json.dumps({"restore_host": BACKUP})))  # fmt: skip
        podman(DB, f"dropdb --if-exists -p {PORT} bench_restore && createdb -p {PORT} bench_restore", user="postgres")
        timed("restore: pg_restore -j2", figures, lambda: podman(
            DB, f"pg_restore -j2 -p {PORT} -d bench_restore /tmp/bench.dump", user="postgres"))  # fmt: skip
    finally:
        if not args.keep:
            run(["molecule", "destroy", "-s", "pgbackrest"], check=False)

    raw_backup = figures["backup: raw pgbackrest --type=full backup"]
    raw_restore_time = figures["restore: raw pgbackrest restore (empty dir, to accepting)"]
    print("ratios and overheads:")
    for label in ("backup: job runner (timer's unit), full", "backup: playbooks/backup.yml -e type=full",
                  "backup: pg_dump -Fc"):  # fmt: skip
        ratio, extra = figures[label] / raw_backup, figures[label] - raw_backup
        print(f"  {label:<58} x{ratio:5.2f}  {extra:+6.1f} s vs raw pgBackRest")
    restores = ("restore: restore.yml onto the db host (--delta)", "restore: restore.yml onto the scratch host (empty)")
    for label in (*restores, "restore: pg_restore -j2"):
        ratio, extra = figures[label] / raw_restore_time, figures[label] - raw_restore_time
        print(f"  {label:<58} x{ratio:5.2f}  {extra:+6.1f} s vs raw pgBackRest")
    base = {"backup": raw_backup, "restore": raw_restore_time}
    ratios = {
        f"{label} / raw": round(value / base[kind], 2)
        for label, value in figures.items()
        if (kind := label.split(":")[0]) in base
    }
    rounded = {label: round(value, 2) for label, value in figures.items()}
    write_results("backup", {**rounded, "ratios": ratios}, notes=f"pgbench scale {args.scale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
