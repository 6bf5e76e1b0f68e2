#!/usr/bin/env python3
"""Scheduled backup jobs of openpolicy-deploy: pgBackRest runs with a lock, metrics and one log line.

Usage:
    backup_job.py backup --stanza S --type full|diff|incr    take a backup (repository host)
    backup_job.py archive-status --stanza S                   publish WAL archiving metrics (db host)
    backup_job.py record-drill --stanza S --success 0|1 ...   publish a restore drill's result
    backup_job.py row-counts --stanza S --conninfo C          print rows per schema (restore drills)

Every run writes Prometheus metrics atomically into node_exporter's textfile collector
directory and prints one log line (logfmt, or JSON with --json). A failed backup exits
non-zero and leaves the last success time as it was; a run that cannot take the lock within
--lock-wait seconds exits 75 and counts as skipped. Before a backup, a cluster whose system id is
not the stanza's (a new cluster on a rebuilt host, not the live database) is refused (exit 65).

The row-count manifest of a backup (rows per schema, which restore drills compare with the
restored copy) is counted in one snapshot once PostgreSQL has ended the backup (pgBackRest's
"backup stop archive" line), while pgBackRest still waits for the last WAL and writes its
manifest. Its recorded_at, the moment a drill restores to, is the snapshot's time on the
database server: a restore of the backup can stop there, and the rows the drill finds are the
rows counted, writes or not. It is recorded only for a backup that succeeded. Its login comes
from --manifest-settings (the file the role writes on the repository host, so that every run
counts the same way) or --manifest-conninfo; with neither, the manifest is off.
Installed by roles/pgbackrest; stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BACKUP_TYPES = ("full", "diff", "incr")
EXIT_SKIPPED = 75  # EX_TEMPFAIL: another run holds the lock
EXIT_FOREIGN_CLUSTER = 65  # EX_DATAERR: the cluster is not the one the stanza backs up
DEFAULT_TEXTFILE_DIR = "/var/lib/node_exporter/textfile_collector"
DEFAULT_STATE_DIR = "/var/lib/openpolicy/backup"

MANIFEST_TIMEOUT = 1800.0  # seconds the count may take, from its start
# pgBackRest's info line once PostgreSQL has ended the backup (pg_backup_stop): a restore of the
# backup can stop at any moment after it, so the count starts there.
BACKUP_STOPPED = "backup stop archive = "
OUTPUT_POLL = 0.02  # seconds between two looks at a running pgBackRest's output
# The count's transaction: one snapshot for every table (in read committed, each count that
# query_to_xml runs would take its own, the last ones up to the whole count later), taken by the
# first statement, which prints its start on the server's clock: the moment the rows are of, in
# the time the commits in the WAL are stamped with.
SNAPSHOT_QUERIES = ("set transaction isolation level repeatable read, read only",
                    "select extract(epoch from statement_timestamp())")  # fmt: skip
# Row counts per schema, every ordinary table counted exactly, in one read-only statement.
MANIFEST_QUERY = """
select n.nspname, coalesce(sum((xpath('/row/c/text()', query_to_xml(
         format('select count(*) as c from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint), 0)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and not c.relispartition
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
group by n.nspname order by n.nspname
"""
ARCHIVER_QUERY = """
select archived_count, failed_count,
       coalesce(extract(epoch from last_archived_time), 0)::bigint,
       coalesce(extract(epoch from last_failed_time), 0)::bigint,
       pg_is_in_recovery()::int, current_setting('archive_mode')
from pg_stat_archiver
"""


SYSTEM_ID_QUERY = "select system_identifier from pg_control_system()"


class JobError(Exception):
    """A step of the job failed; the message says which."""


# --- Metrics and state ----------------------------------------------------------------------


def label_text(labels: dict[str, str]) -> str:
    escaped = (
        f'{key}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for key, value in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def sample_value(value: float) -> str:
    """Whole numbers without an exponent (unix times keep every digit), others in full precision."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def render_metrics(metrics: Sequence[tuple[str, str, str, list[tuple[dict[str, str], float]]]]) -> str:
    """Prometheus text format: (name, type, help, [(labels, value)]) per metric family."""
    lines: list[str] = []
    for name, kind, help_text, samples in metrics:
        if not samples:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{label_text(labels)} {sample_value(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, content: str, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old or the new file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(content)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.chmod(tmp.name, mode)
    os.replace(tmp.name, path)


def load_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise JobError(f"cannot read the state file {path}: {error}") from error


@contextlib.contextmanager
def job_lock(path: Path, wait_seconds: float) -> Iterator[bool]:
    """Hold an exclusive flock on `path`; yield False when it stayed busy for wait_seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_line(fields: dict[str, Any], as_json: bool) -> None:
    fields = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields}
    if as_json:
        print(json.dumps(fields, sort_keys=False), flush=True)
        return
    parts = []
    for key, value in fields.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        parts.append(f'{key}="{text}"' if (" " in text or not text) else f"{key}={text}")
    print("backup_job " + " ".join(parts), flush=True)


# --- pgBackRest -------------------------------------------------------------------------------


def run(command: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; a missing executable is exit status 127, like a shell's."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as error:
        return subprocess.CompletedProcess(command, 127, "", str(error))


def run_process_group(
    command: Sequence[str], on_output: Callable[[str], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in a process group of its own and end whatever of the group outlives it.

    pgBackRest's worker processes inherit the stanza lock; when the main process is killed
    (OOM killer, an operator's SIGKILL) they linger, holding it, and every later run fails
    with "is another pgBackRest process running?". Killing the group frees the lock. Output
    goes to files, not pipes: a lingering worker would keep a pipe open and the read waiting.
    on_output, if given, gets each new piece of the standard output while the command runs.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        try:
            process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, start_new_session=True)
        except FileNotFoundError as error:
            return subprocess.CompletedProcess(command, 127, "", str(error))
        read = 0
        while True:
            try:
                returncode = process.wait(timeout=None if on_output is None else OUTPUT_POLL)
                break
            except subprocess.TimeoutExpired:
                piece = os.pread(stdout.fileno(), 1 << 16, read)
                read += len(piece)
                if piece and on_output is not None:
                    on_output(piece.decode(errors="replace"))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(command, returncode, stdout.read(), stderr.read())


def exit_status(returncode: int) -> int:
    """A process killed by signal N reports -N; shells and systemd call that 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def stanza_info(pgbackrest: str, stanza: str) -> dict[str, Any]:
    result = run([pgbackrest, f"--stanza={stanza}", "--output=json", "info"], timeout=300)
    if result.returncode != 0:
        raise JobError(f"pgbackrest info failed ({exit_status(result.returncode)}): {last_line(result.stderr)}")
    try:
        info = json.loads(result.stdout)[0]
        if not isinstance(info, dict):
            raise TypeError("not an object")
        return info
    except (ValueError, IndexError, TypeError) as error:
        raise JobError(f"pgbackrest info printed no stanza list: {error}") from error


def backup_info(pgbackrest: str, stanza: str) -> list[dict[str, Any]]:
    return list(stanza_info(pgbackrest, stanza).get("backup", []))


def stanza_system_id(info: dict[str, Any]) -> str:
    """System id of the cluster the stanza backs up now (its newest db entry), '' for a new stanza."""
    databases = [db for db in info.get("db", []) if isinstance(db, dict) and "system-id" in db]
    return str(max(databases, key=lambda db: db.get("id", 0))["system-id"]) if databases else ""


def cluster_system_id(conninfo: str) -> str:
    result = run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", SYSTEM_ID_QUERY], timeout=60)
    if result.returncode != 0:
        raise JobError(f"reading the cluster's system id failed: {last_line(result.stderr)}")
    return result.stdout.strip()


def foreign_cluster(args: argparse.Namespace, state: dict[str, Any], conninfo: str) -> str:
    """Why the cluster must not be backed up into the stanza ('' when it may).

    pgBackRest refuses a different system id too, but only deep in the run and with a generic
    error; checked here first, the refusal has its own exit status, metric and alert. Without a
    login (manifest off) or a stanza without a cluster yet, nothing is checked.
    """
    if not conninfo:
        return ""
    expected = stanza_system_id(stanza_info(args.pgbackrest, args.stanza))
    if not expected:
        return ""
    found = cluster_system_id(conninfo)
    state["cluster"] = {"system_id": found, "stanza_system_id": expected, "match": int(found == expected)}
    if found == expected:
        return ""
    return (
        f"refused: the cluster's system id {found} is not stanza {args.stanza}'s {expected}; "
        "a new cluster is not the live database (docs/runbooks/backup-foreign-cluster.md)"
    )


def failure_text(status: int, output: str) -> str:
    """The error of a failed run; a killed pgBackRest prints nothing, so the signal is named."""
    if status > 128:
        with contextlib.suppress(ValueError):
            killed = f"pgbackrest killed by {signal.Signals(status - 128).name}"
            return f"{killed}: {output}" if output else killed
    return output


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def row_count_command(conninfo: str) -> list[str]:
    """psql printing the snapshot's time (a line of its own), then a line per schema: name, rows."""
    command = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
    for query in (*SNAPSHOT_QUERIES, MANIFEST_QUERY):
        command += ["-c", query]
    return [*command, "-d", conninfo]


def parse_row_counts(output: str) -> tuple[float | None, dict[str, int]]:
    """(the snapshot's Unix time, rows per schema) of row_count_command's output."""
    snapshot, schemas = None, {}
    for line in output.splitlines():
        if "\t" in line:
            schema, rows = line.split("\t", 1)
            schemas[schema] = int(rows)
        elif line.strip() and snapshot is None:
            snapshot = float(line)
    return snapshot, schemas


def row_counts(conninfo: str) -> dict[str, int]:
    """Rows per schema of the database `conninfo` names (every ordinary table counted)."""
    result = run(row_count_command(conninfo), timeout=MANIFEST_TIMEOUT)
    if result.returncode != 0:
        raise JobError(f"counting rows failed: {last_line(result.stderr)}")
    return parse_row_counts(result.stdout)[1]


class RowCount:
    """The manifest's count: its own psql, read once pgBackRest has ended.

    Counted after pgBackRest, the rows of a 1 GB database added 0.3 to 0.5 s to every run
    (bench/bench_backup.py); from PostgreSQL's end of the backup on, the count overlaps
    pgBackRest's wait for the last WAL and its manifest. Output goes to files: read only after
    the backup, a pipe could fill up (a line per schema) and hold psql past its timeout.
    """

    def __init__(self, conninfo: str) -> None:
        self.started = time.monotonic()
        # Closed by cancel(), which every run calls once the backup has ended.
        self.stdout = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.process: subprocess.Popen[str] | None = None
        self.error = ""
        try:
            command = row_count_command(conninfo)
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr, text=True
            )
        except OSError as error:
            self.error = str(error)

    def collect(self) -> tuple[float | None, dict[str, int]]:
        """(Snapshot time, rows per schema), once the count has ended (within MANIFEST_TIMEOUT)."""
        try:
            if self.process is None:
                raise JobError(f"counting rows failed: {self.error}")
            try:
                # wait() looks once more before it gives up: a count that ended long ago, during a
                # backup longer than the timeout, is read all the same.
                self.process.wait(timeout=max(0.0, self.started + MANIFEST_TIMEOUT - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise JobError(f"counting rows took longer than {MANIFEST_TIMEOUT:g} s") from None
            self.stdout.seek(0)
            self.stderr.seek(0)
            if self.process.returncode != 0:
                raise JobError(f"counting rows failed: {last_line(self.stderr.read())}")
            return parse_row_counts(self.stdout.read())
        finally:
            self.cancel()

    def cancel(self) -> None:
        """End the count if it still runs (a failed backup gets no manifest) and drop its output."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stdout.close()
        self.stderr.close()


def manifest_conninfo(args: argparse.Namespace) -> str:
    """The manifest's libpq conninfo ('' when it is off): --manifest-conninfo, or the conninfo of
    the settings file (--manifest-settings: JSON {"conninfo": ...}, written by the role)."""
    if not args.manifest_settings:
        return str(args.manifest_conninfo)
    try:
        return str(json.loads(Path(args.manifest_settings).read_text())["conninfo"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise JobError(f"cannot read the manifest settings {args.manifest_settings} ({reason})") from error


def timestamp_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


class CountAtStop:
    """Starts the manifest's count once pgBackRest's output says PostgreSQL ended the backup.

    A restore of a backup cannot stop before that end (PostgreSQL refuses a target before its
    consistent point), so a count started earlier could not be checked by a drill: writes made
    meanwhile would show up as differences. A pgBackRest that printed no such line has its
    rows counted once it ended.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.count: RowCount | None = None
        self.output = ""

    def __call__(self, piece: str) -> None:
        if self.count is None:
            self.output = self.output[-len(BACKUP_STOPPED) :] + piece
            if BACKUP_STOPPED in self.output:
                self.count = RowCount(self.conninfo)

    def started(self) -> RowCount:
        if self.count is None:
            self.count = RowCount(self.conninfo)
        return self.count

    def cancel(self) -> None:
        if self.count is not None:
            self.count.cancel()


def record_manifest(args: argparse.Namespace, label: str, count: RowCount) -> None:
    """Write the per-schema row counts next to the backup's label (JobError: the count failed).

    recorded_at, the moment a drill restores to, is the count's snapshot (the server's time): after
    PostgreSQL's end of the backup, so a restore of the backup can stop there.
    """
    snapshot, schemas = count.collect()
    if snapshot is None:
        raise JobError("counting rows printed no snapshot time")
    manifest = {
        "label": label,
        "stanza": args.stanza,
        "recorded_at": timestamp_text(snapshot),
        "recorded_at_epoch": snapshot,
        "schemas": schemas,
    }
    directory = Path(args.state_dir) / "manifests" / args.stanza
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / f"{label}.json", json.dumps(manifest, indent=2) + "\n", mode=0o640)


# --- Commands ---------------------------------------------------------------------------------


def backup_metrics(stanza: str, state: dict[str, Any]) -> str:
    families: dict[str, tuple[str, str, list[tuple[dict[str, str], float]]]] = {
        "openpolicy_backup_last_success_timestamp_seconds": ("gauge", "Unix time the last good backup ended.", []),
        "openpolicy_backup_last_run_success": ("gauge", "1 if the last run of this type succeeded, else 0.", []),
        "openpolicy_backup_last_run_timestamp_seconds": ("gauge", "Unix time the last run ended.", []),
        "openpolicy_backup_last_run_duration_seconds": ("gauge", "Seconds the last run took.", []),
        "openpolicy_backup_last_run_exit_code": ("gauge", "Exit status of the last run (128+N: killed by N).", []),
        "openpolicy_backup_last_success_size_bytes": ("gauge", "Database size in the last good backup.", []),
        "openpolicy_backup_last_success_repo_size_bytes": ("gauge", "Repository bytes the last good backup added.", []),
        "openpolicy_backup_runs_total": ("counter", "Runs by result (success, failed, skipped).", []),
        "openpolicy_backup_last_success_info": ("gauge", "Label of the last good backup of this type.", []),
        "openpolicy_backup_last_manifest_success": ("gauge", "1 if the last good backup got its row counts.", []),
        "openpolicy_backup_cluster_system_id_match": ("gauge", "1 if the cluster is the stanza's.", []),
    }  # fmt: skip
    if "cluster" in state:
        families["openpolicy_backup_cluster_system_id_match"][2].append(({"stanza": stanza}, state["cluster"]["match"]))
    for backup_type in BACKUP_TYPES:
        entry = state.get(backup_type)
        if not entry:
            continue
        labels = {"stanza": stanza, "type": backup_type}
        samples = {
            "openpolicy_backup_last_run_success": entry.get("last_run_success"),
            "openpolicy_backup_last_run_timestamp_seconds": entry.get("last_run_timestamp"),
            "openpolicy_backup_last_run_duration_seconds": entry.get("last_run_duration"),
            "openpolicy_backup_last_run_exit_code": entry.get("last_run_exit_code"),
            "openpolicy_backup_last_success_timestamp_seconds": entry.get("last_success_timestamp"),
            "openpolicy_backup_last_success_size_bytes": entry.get("last_success_size"),
            "openpolicy_backup_last_success_repo_size_bytes": entry.get("last_success_repo_size"),
        }
        for name, value in samples.items():
            if value is not None:
                families[name][2].append((labels, float(value)))
        for result, count in sorted(entry.get("runs", {}).items()):
            families["openpolicy_backup_runs_total"][2].append(({**labels, "result": result}, float(count)))
        if entry.get("last_manifest") in ("ok", "failed"):
            families["openpolicy_backup_last_manifest_success"][2].append(
                (labels, float(entry["last_manifest"] == "ok"))
            )
        if entry.get("last_success_label"):
            families["openpolicy_backup_last_success_info"][2].append(
                ({**labels, "label": entry["last_success_label"]}, 1.0)
            )
    return render_metrics([(name, kind, text, samples) for name, (kind, text, samples) in families.items()])


def publish_backup_state(args: argparse.Namespace, state: dict[str, Any]) -> None:
    write_atomically(Path(args.state_dir) / f"{args.stanza}.json", json.dumps(state, indent=2) + "\n")
    metrics_path = Path(args.textfile_dir) / f"openpolicy_backup_{args.stanza}.prom"
    write_atomically(metrics_path, backup_metrics(args.stanza, state))


def command_backup(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    with job_lock(state_dir / f"{args.stanza}.lock", args.lock_wait) as locked:
        state_path = state_dir / f"{args.stanza}.json"
        if not locked:
            state = load_state(state_path)
            entry = state.setdefault(args.type, {})
            entry.setdefault("runs", {})["skipped"] = entry.get("runs", {}).get("skipped", 0) + 1
            publish_backup_state(args, state)
            log_line({"stanza": args.stanza, "type": args.type, "result": "skipped", "exit": EXIT_SKIPPED,
                      "reason": f"another run held the lock for {args.lock_wait:g}s"}, args.json)  # fmt: skip
            return EXIT_SKIPPED
        status = run_backup(args, load_state(state_path))
        if status > 128 and args.retry_after_kill > 0:
            # Killed (OOM killer, an operator's kill -9): the failure is published; one more run
            # resumes the partial backup, so the scheduled unit is not left failed by a kill.
            log_line({"stanza": args.stanza, "type": args.type, "result": "retrying",
                      "after": args.retry_after_kill}, args.json)  # fmt: skip
            time.sleep(args.retry_after_kill)
            status = run_backup(args, load_state(state_path))
        return status


def take_backup(
    args: argparse.Namespace, started: float, on_output: Callable[[str], None] | None = None
) -> tuple[int, str, dict[str, Any]]:
    """pgBackRest's backup, then its entry in the info: (exit status, error, the backup's entry).

    Its info lines go to the standard output for on_output (pgbackrest.conf's console level is
    warn); errors stay on the standard error.
    """
    command = [args.pgbackrest, f"--stanza={args.stanza}", f"--type={args.type}", "--log-level-console=info"]
    command += [f"--annotation={item}" for item in args.annotation]
    command.append("backup")
    result = run_process_group(command, on_output)
    status = exit_status(result.returncode)
    if status != 0:
        # Its errors are on the standard error; of the standard output, its info lines are not one.
        notices = "\n".join(line for line in result.stdout.splitlines() if " INFO: " not in line)
        return status, failure_text(status, last_line(result.stderr) or last_line(notices)), {}
    try:
        backups = [item for item in backup_info(args.pgbackrest, args.stanza) if item.get("type") == args.type]
        backup = backups[-1] if backups else {}
        if not backup or backup.get("timestamp", {}).get("start", 0) < int(started) - 1:
            raise JobError(f"pgbackrest info shows no {args.type} backup started by this run")
    except JobError as info_error:
        return 1, str(info_error), {}
    return 0, "", backup


def run_backup(args: argparse.Namespace, state: dict[str, Any]) -> int:
    started = time.time()
    manifest, manifest_error, conninfo = "off", "", ""
    try:
        conninfo = manifest_conninfo(args)
    except JobError as settings_error:
        # The backup runs all the same: it matters more than its count.
        manifest, manifest_error = "failed", str(settings_error)
    try:
        refusal = foreign_cluster(args, state, conninfo)
    except JobError:
        refusal = ""  # cluster or repository unreachable: the backup itself fails and says why
    if refusal:
        status, error, backup = EXIT_FOREIGN_CLUSTER, refusal, {}
        ended = time.time()
    else:
        count = CountAtStop(conninfo) if conninfo else None
        try:
            status, error, backup = take_backup(args, started, count)
            ended = time.time()
            if status == 0 and count is not None:
                try:
                    record_manifest(args, backup.get("label", ""), count.started())
                    manifest = "ok"
                except JobError as count_error:
                    manifest, manifest_error = "failed", str(count_error)
        finally:
            if count is not None:
                count.cancel()  # a failed backup gets no manifest: its count is ended unread
    fields: dict[str, Any] = {"stanza": args.stanza, "type": args.type}
    entry = state.setdefault(args.type, {})
    runs = entry.setdefault("runs", {})
    entry.update(last_run_timestamp=ended, last_run_duration=ended - started, last_run_exit_code=status)
    if status == 0:
        info = backup.get("info", {})
        entry.update(
            last_run_success=1,
            last_success_timestamp=float(backup.get("timestamp", {}).get("stop", ended)),
            last_success_size=info.get("size", 0),
            last_success_repo_size=info.get("repository", {}).get("delta", 0),
            last_success_label=backup.get("label", ""),
        )
        runs["success"] = runs.get("success", 0) + 1
        fields.update(result="success", exit=0, duration=ended - started, label=backup.get("label", ""))
        fields.update(size=info.get("size", 0), repo_size=info.get("repository", {}).get("delta", 0))
        fields["manifest"] = entry["last_manifest"] = manifest
        if manifest_error:
            fields["manifest_error"] = manifest_error
    else:
        entry["last_run_success"] = 0
        runs["failed"] = runs.get("failed", 0) + 1
        fields.update(result="failed", exit=status, duration=ended - started, error=error)
    publish_backup_state(args, state)
    log_line(fields, args.json)
    return 0 if status == 0 else (status if 0 < status < 256 else 1)


def command_archive_status(args: argparse.Namespace) -> int:
    now = time.time()
    labels = {"stanza": args.stanza}
    command = ["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-p", str(args.pg_port)]
    command += ["-c", ARCHIVER_QUERY]
    if args.pg_host:
        command += ["-h", args.pg_host]
    result = run(command, timeout=60)
    values = last_line(result.stdout).split("\t") if result.returncode == 0 else []
    families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        ("openpolicy_wal_archive_status_timestamp_seconds", "gauge", "Unix time of this status.", [(labels, now)]),
    ]
    ok = len(values) == 6
    families.append(("openpolicy_wal_archive_status_success", "gauge", "1 if pg_stat_archiver could be read.",
                     [(labels, 1.0 if ok else 0.0)]))  # fmt: skip
    if ok:
        archived, failed, last_archived, last_failed, in_recovery = (int(value) for value in values[:5])
        samples = {
            "openpolicy_wal_archive_archived_total": ("counter", "WAL files archived since the stats reset.", archived),
            "openpolicy_wal_archive_failed_total": ("counter", "Failed archive attempts since the reset.", failed),
            "openpolicy_wal_archive_last_archived_timestamp_seconds": ("gauge", "Last archived WAL.", last_archived),
            "openpolicy_wal_archive_last_failed_timestamp_seconds": ("gauge", "Last failed attempt.", last_failed),
            "openpolicy_wal_archive_in_recovery": ("gauge", "1 on a replica (the primary archives).", in_recovery),
        }
        families += [(name, kind, text, [(labels, value)]) for name, (kind, text, value) in samples.items()]
    write_atomically(Path(args.textfile_dir) / f"openpolicy_wal_archive_{args.stanza}.prom", render_metrics(families))
    fields: dict[str, Any] = {"stanza": args.stanza, "job": "archive-status", "result": "success" if ok else "failed"}
    if ok:
        fields.update(archived=values[0], failed=values[1], last_archived=values[2], last_failed=values[3])
    else:
        fields["error"] = last_line(result.stderr) or "unexpected output from psql"
    log_line(fields, args.json)
    return 0 if ok else 1


def command_row_counts(args: argparse.Namespace) -> int:
    print(json.dumps(row_counts(args.conninfo), sort_keys=True), flush=True)
    return 0


def command_record_drill(args: argparse.Namespace) -> int:
    now = time.time()
    state_path = Path(args.state_dir) / f"{args.stanza}-drill.json"
    state = load_state(state_path)
    state.update(last_run_timestamp=now, last_run_success=int(args.success))
    if args.success:
        state.update(last_success_timestamp=now, restore_seconds=args.restore_seconds)
        state.update(data_age_seconds=args.data_age_seconds)
    labels = {"stanza": args.stanza}
    names = [
        ("openpolicy_restore_drill_last_run_timestamp_seconds", "Last drill end.", "last_run_timestamp"),
        ("openpolicy_restore_drill_last_run_success", "1 if the last drill passed, else 0.", "last_run_success"),
        ("openpolicy_restore_drill_last_success_timestamp_seconds", "Last passed drill.", "last_success_timestamp"),
        ("openpolicy_restore_drill_restore_duration_seconds", "Restore to accepting connections.", "restore_seconds"),
        ("openpolicy_restore_drill_data_age_seconds", "Age of the restored data at the drill.", "data_age_seconds"),
    ]
    families = [(name, "gauge", text, [(labels, float(state[key]))]) for name, text, key in names if key in state]
    write_atomically(state_path, json.dumps(state, indent=2) + "\n")
    write_atomically(Path(args.textfile_dir) / f"openpolicy_restore_drill_{args.stanza}.prom", render_metrics(families))
    log_line({"stanza": args.stanza, "job": "restore-drill", "result": "success" if args.success else "failed",
              "restore_seconds": args.restore_seconds, "data_age_seconds": args.data_age_seconds,
              "detail": args.detail}, args.json)  # fmt: skip
    return 0


# --- Command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="backup_job.py", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stanza", required=True, help="pgBackRest stanza")
    common.add_argument("--textfile-dir", default=DEFAULT_TEXTFILE_DIR, help="node_exporter textfile collector dir")
    common.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="lock, last results and manifests")
    common.add_argument("--json", action="store_true", help="print the log line as JSON")
    commands = parser.add_subparsers(dest="command", required=True)

    backup = commands.add_parser("backup", parents=[common], help="take a backup")
    backup.add_argument("--type", required=True, choices=BACKUP_TYPES)
    backup.add_argument("--pgbackrest", default="pgbackrest", help="pgbackrest executable")
    backup.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for a running job")
    backup.add_argument("--annotation", action="append", default=[], help="key=value stored with the backup")
    backup.add_argument("--retry-after-kill", type=float, default=0.0, help="seconds before one more run after a kill")
    manifest = backup.add_mutually_exclusive_group()
    manifest.add_argument("--manifest-conninfo", default="", help="libpq conninfo for the row-count manifest")
    manifest.add_argument("--manifest-settings", default="", help='JSON file {"conninfo": ...} ("" turns it off)')

    status = commands.add_parser("archive-status", parents=[common], help="publish WAL archiving metrics")
    status.add_argument("--pg-port", type=int, default=5432)
    status.add_argument("--pg-host", default="", help="socket directory or host (psql's default if empty)")

    drill = commands.add_parser("record-drill", parents=[common], help="publish a restore drill's result")
    drill.add_argument("--success", type=int, choices=(0, 1), required=True)
    drill.add_argument("--restore-seconds", type=float, default=0.0)
    drill.add_argument("--data-age-seconds", type=float, default=0.0)
    drill.add_argument("--detail", default="")
    counts = commands.add_parser("row-counts", parents=[common], help="print rows per schema as JSON")
    counts.add_argument("--conninfo", required=True, help="libpq conninfo of the database")
    args = parser.parse_args(argv)
    if args.command == "backup" and any("=" not in item for item in args.annotation):
        parser.error("--annotation expects key=value")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handlers = {"backup": command_backup, "archive-status": command_archive_status}
    handlers.update({"record-drill": command_record_drill, "row-counts": command_row_counts})
    try:
        if args.command in {"backup", "record-drill"}:
            Path(args.state_dir).mkdir(parents=True, exist_ok=True)
        return handlers[args.command](args)
    except (JobError, OSError, subprocess.SubprocessError) as error:
        log_line({"stanza": args.stanza, "job": args.command, "result": "failed", "error": str(error)}, args.json)
        return 1


if __name__ == "__main__":
    sys.exit(main())
