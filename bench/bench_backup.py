#!/usr/bin/env python3
"""Backup and restore figures for a 1 GB pgbench database, in one run:

- backup: the toolkit's job runner (roles/pgbackrest/files/backup_job.py, as the timers run it)
  and playbooks/backup.yml, against a raw `pgbackrest backup` and `pg_dump -Fc`;
- restore: playbooks/restore.yml onto the db host (in place, --delta) and onto the scratch
  host (an empty cluster), against a raw `pgbackrest restore` into an emptied data directory
  (stop, restore, start, wait until it accepts connections) and `pg_restore -j2`.

The backups run in turn for five rounds and the restores for three; each figure is the median
of its rounds (every run is kept in the results file).

It uses the two hosts of the Molecule scenario `pgbackrest` (create, prepare, converge,
then destroy at the end unless --keep): the db host runs PostgreSQL on 57432, the backup
host holds the repository. pgbench's tables go into the `openpolicy` database, readable by the
reporting role, so the job runner's row-count manifest counts them like a real database's rows;
every run of the runner and of backup.yml must have recorded its manifest, or the bench stops.

Prints one line per figure and the ratios. Not part of `make test` (no timing is asserted).

    python bench/bench_backup.py [--scale 70] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

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


def timed(label: str, figures: dict[str, float], action: Callable[[], object]) -> object:
    # What the previous run wrote (a restore writes the whole cluster) is flushed first: its
    # writeback slowed the next run's pgBackRest by seconds, charged to whichever ran next.
    os.sync()
    started = time.monotonic()
    result = action()
    figures[label] = time.monotonic() - started
    print(f"{label:<52} {figures[label]:7.1f} s", flush=True)
    return result


def last_backup_seconds() -> float:
    """pgBackRest's own time for the newest backup (its info: whole seconds, start to stop)."""
    info = json.loads(podman(BACKUP, f"pgbackrest --stanza={STANZA} --output=json info", user="pgbackrest"))
    stamp = info[0]["backup"][-1]["timestamp"]
    return float(stamp["stop"] - stamp["start"])


INSIDE = re.compile(r"stopped to accepting ([0-9.]+) s")


def stopped_to_accepting(output: str) -> float:
    """What restore.yml's one command on the host took, from the stop to accepting connections."""
    found = INSIDE.search(" ".join(output.split()))
    return float(found[1]) if found else float("nan")


def inventory() -> list[str]:
    pattern = "/root/.ansible/tmp/molecule.*.pgbackrest/inventory/ansible_inventory.yml"
    files = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not files:
        sys.exit("bench_backup: no Molecule inventory of scenario pgbackrest")
    return ["-i", files[-1], "-i", str(Path(files[-1]).parent / "hosts")]


def playbook(name: str, *extra: str) -> str:
    return run(["ansible-playbook", *inventory(), str(REPO / "playbooks" / name), *extra]).stdout


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


RAW_BACKUP = "backup: raw pgbackrest --type=full backup"
RUNNER = "backup: job runner (timer's unit), full"
BACKUP_YML = "backup: playbooks/backup.yml -e type=full"
RAW_RESTORE = "restore: raw pgbackrest restore (empty dir, to accepting)"
ONTO_DB = "restore: restore.yml onto the db host (--delta)"
ONTO_SCRATCH = "restore: restore.yml onto the scratch host (empty)"


# Five rounds of backups, three of restores: on this shared machine the same backup moves by up
# to two seconds from one run to the next (one incremental took 2.7 to 4.9 s), as much as the 2 s
# the toolkit may add; one raw restore took 6.5 s in one run and 8.2 s in the next, which moved
# the scratch host's margin from +5.3 to +3.1 s while restore.yml itself took 11.7 and 11.3 s.
BACKUP_ROUNDS = 5
RESTORE_ROUNDS = 3
STATE = f"/var/lib/openpolicy/backup/{STANZA}.json"


def check_manifest(label: str) -> None:
    """Stop unless the newest full backup has its row-count manifest: a count that fails at once
    (a table the reporting role cannot read) would leave its time out of the figures unseen."""
    entry = json.loads(podman(BACKUP, f"cat {STATE}"))["full"]
    status, backup = entry.get("last_manifest", "none"), entry.get("last_success_label", "")
    manifest = f"/var/lib/openpolicy/backup/manifests/{STANZA}/{backup}.json"
    if status != "ok" or podman(BACKUP, f"test -s {manifest} && echo found || true") != "found":
        sys.exit(f"bench_backup: {label}: the row-count manifest of backup {backup} is {status!r}, not 'ok' "
                 "(manifest_error in the run's log line says why)")  # fmt: skip


class Step(NamedTuple):
    action: Callable[[], object]
    # pgBackRest's own part of the run, from the run's output; called after the run's timing.
    inside: Callable[[object], float]
    # Untimed, before each run.
    before: Callable[[], object] = lambda: None


def measure_rounds(steps: dict[str, Step], rounds: int, figures: dict[str, float], inside: dict[str, float],
                   runs: dict[str, list[float]]) -> None:  # fmt: skip
    """The steps in turn for the rounds (so that the machine's load falls on each alike), and the
    median of each step's runs and of pgBackRest's part in them."""
    within: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            step.before()
            output = timed(label, figures, step.action)
            runs.setdefault(label, []).append(round(figures[label], 2))
            within[label].append(step.inside(output))
    for label in steps:
        figures[label] = statistics.median(runs[label])
        inside[label] = statistics.median(within[label])
        each = ", ".join(f"{elapsed:.1f}" for elapsed in runs[label])
        print(f"{label:<52} {figures[label]:7.1f} s (median of {each})", flush=True)


def backup_steps() -> dict[str, Step]:
    """Raw, the timer's unit, backup.yml; inside: pgBackRest's own start to stop of the backup."""

    def checked(label: str) -> Callable[[object], float]:
        def inside(_output: object) -> float:
            check_manifest(label)
            return last_backup_seconds()

        return inside

    return {
        RAW_BACKUP: Step(
            lambda: podman(BACKUP, f"pgbackrest --stanza={STANZA} --type=full backup", user="pgbackrest"),
            lambda _output: last_backup_seconds(),
            archived,
        ),
        # The unit the full backup timer starts (Type=oneshot: returns when the run ends).
        RUNNER: Step(
            lambda: podman(BACKUP, "systemctl start openpolicy-backup-full.service"), checked(RUNNER), archived
        ),
        BACKUP_YML: Step(lambda: playbook("backup.yml", "-e", "type=full"), checked(BACKUP_YML), archived),
    }


def archived() -> None:
    """Every backup starts with the archive caught up (untimed). One that starts right after
    another, before the WAL segment the other's stop closed is archived, waits at its start for
    that segment ("check archive for prior segment" in pgBackRest's log): three of six backup.yml
    runs right after the timer's unit took 2.5 s longer, the job runner's own duration with them.
    In the rounds it fell on backup.yml mostly: 5.7 to 5.8 s, or 6.6 to 6.8 s when it waited."""
    podman(BACKUP, f"pgbackrest --stanza={STANZA} check", user="pgbackrest")


def restore_steps(figures: dict[str, float]) -> dict[str, Step]:
    """Raw, restore.yml onto the db host and onto an empty scratch host; inside: stop to accepting."""
    return {
        RAW_RESTORE: Step(raw_restore, lambda _output: figures[RAW_RESTORE]),
        ONTO_DB: Step(
            lambda: playbook("restore.yml", "-e", json.dumps({"restore_host": DB})),
            lambda output: stopped_to_accepting(str(output)),
        ),
        ONTO_SCRATCH: Step(
            lambda: playbook("restore.yml", "-e", json.dumps({"restore_host": BACKUP})),
            lambda output: stopped_to_accepting(str(output)),
            # Empty as a drill finds it (the drill drops its copy): the restore registers the cluster.
            before=lambda: podman(BACKUP, "pg_dropcluster 15 restore --stop 2>/dev/null || true"),
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 is about 1.05 GB)")
    parser.add_argument("--keep", action="store_true", help="leave the scenario's hosts up")
    parser.add_argument("--reuse", action="store_true", help="on hosts a --keep run left: no converge, no load")
    args = parser.parse_args(argv)
    # The scenario's hosts and ports are fixed: wait for a `make molecule-pgbackrest` (this
    # checkout's or another's) instead of running into it.
    lock = Path("/tmp/openpolicy-molecule-pgbackrest.lock").open("w")  # noqa: SIM115 (held until exit)
    fcntl.flock(lock, fcntl.LOCK_EX)
    figures: dict[str, float] = {}
    if not args.reuse:
        # Destroyed first: hosts a --keep run left would be taken as created, with their data
        # (a restored copy doubled the cluster to 2.1 GB).
        print("bench_backup: Molecule scenario pgbackrest (destroy, create, prepare, converge) ...", flush=True)
        for step in ("destroy", "create", "prepare", "converge"):
            run(["molecule", step, "-s", "pgbackrest"])
    try:
        if not args.reuse:
            timed(f"pgbench -i -s {args.scale} (load)", figures, lambda: podman(
                DB, f"pgbench -i -q -s {args.scale} -p {PORT} openpolicy", user="postgres"))  # fmt: skip
        # pgbench's tables are postgres's, in schema public: the reporting role that counts the
        # manifest's rows reads them once granted, as in a real database (roles/postgresql grants
        # it on the service schemas and public). Without it every count failed at once.
        grants = ("grant usage on schema public to openpolicy_reporting",
                  "grant select on all tables in schema public to openpolicy_reporting")  # fmt: skip
        podman(DB, f"psql -X -q -v ON_ERROR_STOP=1 -p {PORT} -d openpolicy -c '{grants[0]}' -c '{grants[1]}'",
               user="postgres")  # fmt: skip
        query = "select pg_size_pretty(sum(pg_database_size(oid))) from pg_database"
        size = podman(DB, f'psql -X -At -p {PORT} -c "{query}"', user="postgres")
        print(f"{'cluster size':<52} {size:>9}", flush=True)
        podman(BACKUP, f"pgbackrest --stanza={STANZA} check", user="pgbackrest")

        # inside: pgBackRest's own part of each run, so that the toolkit's share is measured
        # within one run (this machine's load moves the raw figures by tens of seconds).
        inside: dict[str, float] = {}
        backup_runs: dict[str, list[float]] = {}
        measure_rounds(backup_steps(), BACKUP_ROUNDS, figures, inside, backup_runs)
        timed("backup: pg_dump -Fc", figures, lambda: podman(
            DB, f"pg_dump -Fc -p {PORT} -f /tmp/bench.dump openpolicy", user="postgres"))  # fmt: skip

        restore_runs: dict[str, list[float]] = {}
        measure_rounds(restore_steps(figures), RESTORE_ROUNDS, figures, inside, restore_runs)
        podman(DB, f"dropdb --if-exists -p {PORT} bench_restore && createdb -p {PORT} bench_restore", user="postgres")
        timed("restore: pg_restore -j2", figures, lambda: podman(
            DB, f"pg_restore -j2 -p {PORT} -d bench_restore /tmp/bench.dump", user="postgres"))  # fmt: skip
    finally:
        if not args.keep:
            run(["molecule", "destroy", "-s", "pgbackrest"], check=False)

    raw_backup_time = figures[RAW_BACKUP]
    raw_restore_time = figures[RAW_RESTORE]
    print("ratios and overheads (the toolkit's share: the run's time less pgBackRest's own inside it):")
    shares = {}
    for label in (RUNNER, BACKUP_YML, "backup: pg_dump -Fc", ONTO_DB, ONTO_SCRATCH, "restore: pg_restore -j2"):
        base = raw_backup_time if label.startswith("backup") else raw_restore_time
        ratio, extra = figures[label] / base, figures[label] - base
        line = f"  {label:<52} x{ratio:5.2f}  {extra:+6.1f} s vs raw pgBackRest"
        if label in inside:
            shares[label] = figures[label] - inside[label]
            line += f"; pgBackRest inside {inside[label]:5.1f} s, toolkit's share {shares[label]:5.1f} s"
        print(line, flush=True)
    shares[RAW_BACKUP] = figures[RAW_BACKUP] - inside[RAW_BACKUP]
    print(f"  {RAW_BACKUP:<52} pgBackRest's own CLI beyond its backup: {shares[RAW_BACKUP]:5.1f} s")
    base = {"backup": raw_backup_time, "restore": raw_restore_time}
    ratios = {
        f"{label} / raw": round(value / base[kind], 2)
        for label, value in figures.items()
        if (kind := label.split(":")[0]) in base
    }
    rounded = {label: round(value, 2) for label, value in figures.items()}
    write_results(
        "backup",
        {
            **rounded,
            "ratios": ratios,
            "pgbackrest_inside_s": {label: round(value, 2) for label, value in inside.items()},
            "toolkit_share_s": {label: round(value, 2) for label, value in shares.items()},
            "backup_runs_s": backup_runs,
            "restore_runs_s": restore_runs,
        },
        notes=f"pgbench scale {args.scale}; the db and backup hosts are podman containers (podman connection) on "
        "the same 2-core machine as the other helpers' runs: see load_average_1m; pgBackRest's time inside "
        "a backup is its info's start to stop (whole seconds); every runner and backup.yml run recorded its "
        "row-count manifest (checked)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
