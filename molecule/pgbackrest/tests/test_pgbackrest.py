"""Verify role pgbackrest and the backup playbooks on the scenario's two hosts.

Runs in file order, each test building on the last: the full backup of converge, the
encrypted repository, a point-in-time restore through playbooks/restore.yml, a SIGKILLed
backup, the next run fired by a systemd timer, the archive status timer, a restore drill and
the bad inputs. Hosts are reached with `podman exec` (testinfra's podman backend); the
playbooks run as an operator runs them, against Molecule's inventory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

DB = "pgb-db1"
BACKUP = "pgb-backup1"
STANZA = "openpolicy"
PG_PORT = 57432
REPO = "/var/lib/pgbackrest"
TEXTFILE = "/var/lib/node_exporter/textfile_collector"
ROOT = Path(__file__).resolve().parents[3]


def podman(container: str, command: str, user: str = "root", check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", "exec", "--user", user, container, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command} on {container}: rc {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def sql(query: str, port: int = PG_PORT, database: str = "openpolicy", container: str = DB) -> str:
    quoted = query.replace("'", "'\"'\"'")
    return podman(container, f"psql -X -At -p {port} -d {database} -c '{quoted}'", user="postgres").stdout.strip()


def pgbackrest(command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return podman(BACKUP, f"pgbackrest --stanza={STANZA} {command}", user="pgbackrest", check=check)


def backups() -> list[dict]:
    return json.loads(pgbackrest("--output=json info").stdout)[0]["backup"]


def metrics(container: str, name: str) -> dict[str, float]:
    samples = {}
    for line in podman(container, f"cat {TEXTFILE}/{name}").stdout.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def vault_password_file() -> Path:
    """A throwaway vault password (0600, outside git): the shared preflight runs roles/secrets,
    which keeps the environment's generated secrets in an ansible-vault file."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"openpolicy-pgbackrest-molecule-vault-{os.getuid()}"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(os.urandom(24).hex() + "\n")
    return path


def playbook(name: str, *extra: str, vault: bool = True) -> subprocess.CompletedProcess[str]:
    # Molecule's inventory file and its extra hosts file (the control group); the folder
    # also holds credentials/, which is no inventory source.
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    if vault:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file())
    command = ["ansible-playbook", "-i", str(inventory), "-i", str(inventory.parent / "hosts")]
    command += [str(ROOT / "playbooks" / name), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The preflight's line, else the failed task's (the restore plan's checks after the preflight)."""
    lines = result.stdout.splitlines()
    found = [line for line in lines if "preflight: " in line] or [line for line in lines if "msg: " in line]
    assert found, result.stdout[-3000:]
    return found[0]


def test_full_backup_exists_and_check_passes() -> None:
    assert any(backup["type"] == "full" for backup in backups())
    pgbackrest("check")


def test_repository_is_encrypted() -> None:
    info = json.loads(pgbackrest("--output=json info").stdout)[0]
    assert info["cipher"] == "aes-256-cbc"
    # Every file of the repository is OpenSSL-encrypted ("Salted__" header), WAL and backups,
    # and the passphrase lives only in the repository host's own configuration.
    files = podman(BACKUP, f"find {REPO}/archive {REPO}/backup -type f | head -50").stdout.split()
    assert len(files) > 5
    for path in files:
        head = podman(BACKUP, f"head -c 8 {path}").stdout
        assert head == "Salted__", path
    assert podman(DB, "grep -c cipher /etc/pgbackrest/pgbackrest.conf", check=False).stdout.strip() == "0"
    assert podman(BACKUP, "stat -c '%U %a' /etc/pgbackrest/pgbackrest.conf").stdout.strip() == "pgbackrest 640"


# The restore plan's warning when the primary's current WAL did not reach the repository.
NOT_PUSHED = "did not reach the repository"


def test_point_in_time_restore_returns_exactly_the_rows_before_t() -> None:
    # Tables of a service schema, made by the service's role as a service would: the reporting
    # role reads them through default privileges, so backups keep their row-count manifest.
    sql("drop table if exists auth.pitr; set role auth_service; create table auth.pitr (id int primary key)")
    sql("insert into auth.pitr select generate_series(1, 100)")
    time.sleep(1.5)
    target = sql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')") + "+00"
    time.sleep(1.5)
    sql("insert into auth.pitr select generate_series(101, 150)")
    assert sql("select count(*) from auth.pitr") == "150"
    started = time.monotonic()
    # Without the vault's password: restore.yml reads no secret (pgBackRest on the hosts reads
    # the repository's passphrase from its own settings).
    result = playbook("restore.yml", "-e", json.dumps({"target_time": target, "restore_host": DB}), vault=False)
    print(f"restore.yml to {target}: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:]
    # The plan pushed the primary's current WAL (a warning otherwise, and the restore goes on).
    assert NOT_PUSHED not in result.stdout, result.stdout[-4000:]
    assert sql("select count(*), max(id) from auth.pitr") == "100|100"
    assert sql("select pg_is_in_recovery()") == "f"
    # Back to a fresh full backup on the new timeline, as the runbook says after a restore.
    assert playbook("backup.yml", "-e", "type=full").returncode == 0


def test_wal_is_archived_within_the_archive_timeout() -> None:
    # The most a point-in-time restore can lose is what sits in the current WAL segment:
    # archive_timeout (15 s in this scenario) bounds it.
    timeout = int(sql("show archive_timeout").rstrip("s"))
    sql("set role auth_service; create table if not exists auth.loss (id int)")
    sql("insert into auth.loss values (1)")
    segment = sql("select pg_walfile_name(pg_current_wal_lsn())")
    deadline = time.monotonic() + timeout + 15
    archived = ""
    while time.monotonic() < deadline:
        archived = sql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
        if archived >= segment:
            break
        time.sleep(1)
    assert archived >= segment, f"{segment} not archived within {timeout} s (+15 s for the async push)"
    archive = podman(BACKUP, f"find {REPO}/archive -name '{segment[8:]}*' -o -name '{segment}*'").stdout
    assert segment in archive


def test_sigkilled_backup_leaves_the_repository_consistent() -> None:
    # Enough data that a gzip-9 full backup runs for several seconds.
    podman(DB, f"pgbench -i -s 4 -q -p {PG_PORT} openpolicy", user="postgres")
    # Loaded by hand as postgres, outside the service roles' default privileges: granted to the
    # reporting role as an operator would, or later backups lose their row-count manifest.
    sql("grant usage on schema public to openpolicy_reporting")
    sql("grant select on all tables in schema public to openpolicy_reporting")
    runner = (
        "PGBACKREST_COMPRESS_TYPE=gz PGBACKREST_COMPRESS_LEVEL=9 PGBACKREST_PROCESS_MAX=1 "
        f"/usr/local/bin/openpolicy-backup-job backup --stanza {STANZA} --type full "
        f"--textfile-dir {TEXTFILE} --state-dir /var/lib/openpolicy/backup > /tmp/killed-run.log 2>&1 &"
    )
    podman(BACKUP, f"touch /tmp/killed-run.start && {runner}", user="pgbackrest")
    pid = ""
    for _ in range(100):
        # pgBackRest's main process (its workers' command lines end in backup:local).
        found = podman(BACKUP, "pgrep -u pgbackrest -f -- '--type=full .*backup$'", check=False).stdout.split()
        if found:
            pid = found[0]
            break
        time.sleep(0.1)
    assert pid, "the backup never started"
    # Killed while it copies its first file (the largest, it goes first): a fixed sleep raced a
    # backup that finished sooner on a quiet machine. Files of the repository it wrote since the
    # start marker, the partial one included.
    copying = f"find {REPO}/backup/{STANZA} -path '*/pg_data/*' -type f -newer /tmp/killed-run.start | head -1"
    for _ in range(300):
        if podman(BACKUP, copying, check=False).stdout.strip():
            break
        time.sleep(0.1)
    podman(BACKUP, f"kill -KILL {pid}")
    for _ in range(100):
        if "result=" in podman(BACKUP, "cat /tmp/killed-run.log", check=False).stdout:
            break
        time.sleep(0.2)
    log = podman(BACKUP, "cat /tmp/killed-run.log").stdout
    assert "result=failed exit=137" in log, log
    samples = metrics(BACKUP, f"openpolicy_backup_{STANZA}.prom")
    assert samples[f'openpolicy_backup_last_run_success{{stanza="{STANZA}",type="full"}}'] == 0
    assert samples[f'openpolicy_backup_last_run_exit_code{{stanza="{STANZA}",type="full"}}'] == 137
    assert samples[f'openpolicy_backup_last_success_timestamp_seconds{{stanza="{STANZA}",type="full"}}'] > 0
    verify = pgbackrest("verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_next_run_fired_by_the_systemd_timer_succeeds() -> None:
    # Point the incremental timer at "every 5 seconds" for a moment: the real unit, timer and
    # runner run as they would at their scheduled time.
    before = metrics(BACKUP, f"openpolicy_backup_{STANZA}.prom")
    key = f'openpolicy_backup_last_run_timestamp_seconds{{stanza="{STANZA}",type="incr"}}'
    dropin = "/run/systemd/system/openpolicy-backup-incr.timer.d"
    podman(
        BACKUP,
        f"mkdir -p {dropin} && printf '[Timer]\\nOnCalendar=\\nOnCalendar=*:*:0/5\\n' > {dropin}/soon.conf"
        " && systemctl daemon-reload && systemctl restart openpolicy-backup-incr.timer",
    )
    try:
        after: dict[str, float] = {}
        for _ in range(120):
            after = metrics(BACKUP, f"openpolicy_backup_{STANZA}.prom")
            if after.get(key, 0) > before.get(key, 0):
                break
            time.sleep(1)
    finally:
        podman(BACKUP, f"rm -rf {dropin} && systemctl daemon-reload && systemctl restart openpolicy-backup-incr.timer")
    assert after.get(key, 0) > before.get(key, 0), "the timer never ran the job"
    assert after[f'openpolicy_backup_last_run_success{{stanza="{STANZA}",type="incr"}}'] == 1
    journal = podman(BACKUP, "journalctl -u openpolicy-backup-incr.service --no-pager -o cat").stdout
    assert re.search(r"backup_job time=\S+ stanza=openpolicy type=incr result=success exit=0", journal), journal
    # The metrics file shows both: the killed full run failed, the incremental succeeded.
    assert after[f'openpolicy_backup_last_run_success{{stanza="{STANZA}",type="full"}}'] == 0
    assert after[f'openpolicy_backup_runs_total{{stanza="{STANZA}",type="full",result="failed"}}'] >= 1
    assert pgbackrest("verify", check=False).returncode == 0


def test_archive_status_timer_runs_on_the_db_host() -> None:
    assert podman(DB, "cat /proc/1/comm").stdout.strip() == "systemd"
    log = podman(DB, "journalctl -u openpolicy-wal-archive-status.service --no-pager -o cat").stdout
    assert re.search(r"job=archive-status result=success", log), log
    # The status is the last minute's: a run while an earlier case had PostgreSQL stopped (the
    # point-in-time restore) wrote 0, and a run between that restore (its server starts counting
    # from 0) and the next archived segment wrote a count of 0. The next run, a minute later at
    # most, reads both again.
    success = f'openpolicy_wal_archive_status_success{{stanza="{STANZA}"}}'
    archived = f'openpolicy_wal_archive_archived_total{{stanza="{STANZA}"}}'
    deadline = time.monotonic() + 90
    samples = metrics(DB, f"openpolicy_wal_archive_{STANZA}.prom")
    while (samples[success] != 1 or samples[archived] <= 0) and time.monotonic() < deadline:
        time.sleep(5)
        samples = metrics(DB, f"openpolicy_wal_archive_{STANZA}.prom")
    assert samples[success] == 1, podman(DB, "journalctl -u openpolicy-wal-archive-status.service -n 5 -o cat").stdout
    assert samples[archived] > 0
    assert time.time() - samples[f'openpolicy_wal_archive_status_timestamp_seconds{{stanza="{STANZA}"}}'] < 180


WRITER_STOP = "/tmp/openpolicy-drill-writer-stop"


def start_writer() -> subprocess.Popen[str]:
    """One session on the primary committing a row of policy.drill_writes every 50 ms until
    WRITER_STOP exists. Its commits are asynchronous: a commit whose WAL flush is under way when
    the manifest's count takes its snapshot is in the restored copy but not in the count (the
    flush's milliseconds, the drill's tolerance), and this test is about the count, not the flush."""
    columns = "id bigint generated always as identity, written_at timestamptz not null default clock_timestamp()"
    sql(f"set role policy_service; create table if not exists policy.drill_writes ({columns})")
    podman(DB, f"rm -f {WRITER_STOP}")
    session = "set role policy_service; set synchronous_commit = off;"
    loop = (f"{{ echo '{session}'; while [ ! -e {WRITER_STOP} ] && sleep 0.05;"
            " do echo 'insert into policy.drill_writes default values;'; done; }"
            f" | psql -X -q -v ON_ERROR_STOP=1 -p {PG_PORT} -d openpolicy")  # fmt: skip
    return subprocess.Popen(["podman", "exec", "--user", "postgres", DB, "bash", "-c", loop], text=True)


def test_restore_drill_passes_and_records_metrics() -> None:
    sql("set role policy_service; create table if not exists policy.drill_items as select generate_series(1, 1234) id")
    # Rows written all through the backup, and as its rows are counted: the drill restores to the
    # count's snapshot and finds the same rows (tolerance 0 %). Counted at the backup's start, or
    # a little before its snapshot, they differed.
    writer = start_writer()
    try:
        assert playbook("backup.yml", "-e", "type=diff").returncode == 0
    finally:
        podman(DB, f"touch {WRITER_STOP}")
        assert writer.wait(timeout=30) == 0
    stop = backups()[-1]["timestamp"]
    during = sql(f"select count(*) from policy.drill_writes where written_at between to_timestamp({stop['start']})"
                 f" and to_timestamp({stop['stop']})")  # fmt: skip
    assert int(during) > 0, "no row was written during the backup"
    # No write after the backup: recovery to the manifest's moment needs a commit after it, which
    # the restore plan makes on the primary itself (a quiet database must restore too).
    started = time.monotonic()
    # Without the vault's password: the drill reads no secret (this inventory keeps its vault
    # outside group_vars, so nothing else asks for the password).
    result = playbook("restore_drill.yml", vault=False)
    print(f"restore_drill.yml: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:]
    assert NOT_PUSHED not in result.stdout, result.stdout[-4000:]
    samples = metrics(BACKUP, f"openpolicy_restore_drill_{STANZA}.prom")
    assert samples[f'openpolicy_restore_drill_last_run_success{{stanza="{STANZA}"}}'] == 1
    assert 0 < samples[f'openpolicy_restore_drill_restore_duration_seconds{{stanza="{STANZA}"}}'] < 300
    assert samples[f'openpolicy_restore_drill_data_age_seconds{{stanza="{STANZA}"}}'] > 0
    # The copy is dropped afterwards; the original still runs.
    assert "restore" not in podman(BACKUP, "pg_lsclusters -h").stdout
    assert sql("select count(*) from policy.drill_items") == "1234"


def test_backup_playbook_writes_the_label(tmp_path: Path) -> None:
    label_file = tmp_path / "label"
    extra = {"type": "incr", "backup_label_file": str(label_file), "backup_reason": "test"}
    # Without the vault's password: backup.yml reads no secret, the manifest's login is the
    # backup host's own (its settings file), and its rows are counted all the same.
    result = playbook("backup.yml", "-e", json.dumps(extra), vault=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "row-count manifest ok" in " ".join(result.stdout.split()), result.stdout[-3000:]
    label = label_file.read_text().strip()
    assert re.fullmatch(r"\d{8}-\d{6}F_\d{8}-\d{6}I", label)
    assert label in [backup["label"] for backup in backups()]


def test_backup_playbook_in_check_mode_takes_no_backup() -> None:
    before = [backup["label"] for backup in backups()]
    result = playbook("backup.yml", "--check", "-e", "type=incr")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "check mode: no backup taken (incr of stanza" in result.stdout, result.stdout[-3000:]
    assert [backup["label"] for backup in backups()] == before


FUTURE = "2999-01-01 00:00:00+00"
PAST = "2001-01-01 00:00:00+00"
BAD_INPUTS = {
    "future": ("restore.yml", {"target_time": FUTURE}, f"target_time: {FUTURE} is in the future"),
    "before-oldest": ("restore.yml", {"target_time": PAST}, f"target_time: {PAST} is before the end of the oldest"),
    "not-a-time": ("restore.yml", {"target_time": "yesterday"}, "target_time: expected 'YYYY-MM-DD HH:MM:SS'"),
    "unknown-set": ("restore.yml", {"backup_set": "20010101-000000F"}, "backup_set: 20010101-000000F is not in stanza"),
    "host-outside-groups": (
        "restore.yml",
        {"restore_host": "localhost"},
        "restore_host: localhost is in neither group db nor db_scratch",
    ),
    "patroni-member": (
        "restore.yml",
        {"pgbackrest_pg_manager": "patroni"},
        "restore_host: pgb-db1 is a Patroni member",
    ),
    # Named by the -e name the operator typed (the shared preflight), not the role's variable.
    "type": ("backup.yml", {"type": "weekly"}, "preflight: type: expected one of full, diff, incr"),
    "passphrase": ("backup.yml", {"pgbackrest_repo_cipher_pass": ""}, "pgbackrest_repo_cipher_pass: missing"),
    "cron": (
        "provision_backups.yml",
        {"pgbackrest_schedule_incr": "61 * * * *"},
        "pgbackrest_schedule_incr: not a valid cron expression (minute field '61'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_fail_before_any_change(case: str) -> None:
    playbook_name, extra, message = BAD_INPUTS[case]
    rows_before = sql("select count(*) from auth.pitr")
    postmaster_before = podman(DB, "head -1 /var/lib/postgresql/15/main/postmaster.pid").stdout.strip()
    result = playbook(playbook_name, "-e", json.dumps(extra))
    assert result.returncode != 0
    assert message in one_error_line(result)
    # Nothing ran on the managed hosts (the control host may have read or made its secrets).
    assert not re.search(r"pgb-\S+\s*:\s*ok=\d+\s+changed=[1-9]", result.stdout)
    assert podman(DB, "head -1 /var/lib/postgresql/15/main/postmaster.pid").stdout.strip() == postmaster_before
    assert sql("select count(*) from auth.pitr") == rows_before
