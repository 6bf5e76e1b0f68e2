"""Unit tests of roles/pgbackrest/files/backup_job.py (the role's job runner): lock, metrics, exit
codes and the log line.

The runner is started as a process against a named fake: tests/unit's `fake_pgbackrest`
fixture writes a `pgbackrest` script first on PATH that records its arguments and behaves as
each test tells it (succeed, fail, hang). The real pgBackRest runs in molecule/pgbackrest.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "roles" / "pgbackrest" / "files" / "backup_job.py"

# The fake: behaviour from FAKE_PGBACKREST_MODE, arguments appended to FAKE_PGBACKREST_CALLS.
FAKE_PGBACKREST = """#!/usr/bin/env python3
import json, os, sys, time
calls = os.environ["FAKE_PGBACKREST_CALLS"]
with open(calls, "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
mode = os.environ.get("FAKE_PGBACKREST_MODE", "ok")
command = sys.argv[-1]
if command == "backup":
    if mode == "fail":
        print("ERROR: [056]: unable to find primary cluster - cannot proceed", file=sys.stderr)
        sys.exit(56)
    # PostgreSQL's end of the backup, as pgBackRest says it at log level info (FAKE_AWAIT_COUNT:
    # then wait up to 10 s for the row count to start, and record whether it started before).
    if os.environ.get("FAKE_AWAIT_COUNT"):
        time.sleep(0.3)
        early = os.path.exists(calls + ".count")
    if "--log-level-console=info" in sys.argv and not os.environ.get("FAKE_NO_STOP_LINE"):
        with open(calls + ".stopped", "w") as handle:
            handle.write(str(time.time()))
        print("P00   INFO: backup stop archive = 000000010000000000000004, lsn = 0/4000138", flush=True)
    if os.environ.get("FAKE_AWAIT_COUNT"):
        deadline = time.time() + 10
        while not os.path.exists(calls + ".count") and time.time() < deadline:
            time.sleep(0.02)
        with open(calls + ".saw_count", "w") as handle:
            handle.write("early" if early else "yes" if os.path.exists(calls + ".count") else "no")
    if mode == "fail_after_stop":
        print("ERROR: [082]: WAL segment 000000010000000000000004 was not archived before the 60000ms timeout",
              file=sys.stderr)
        sys.exit(82)
    if mode == "hang" or (mode == "hang_once" and not os.path.exists(calls + ".hung")):
        open(calls + ".hung", "w").close()
        time.sleep(60)
    if mode == "orphan":
        import subprocess
        worker = subprocess.Popen(["sleep", "60"])
        with open(calls + ".orphan", "w") as handle:
            handle.write(str(worker.pid))
    kind = next(arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--type="))
    with open(calls + ".last", "w") as handle:
        handle.write(json.dumps({"type": kind, "start": int(time.time())}))
    sys.exit(0)
if command == "info":
    backups = []
    if os.path.exists(calls + ".last"):
        last = json.load(open(calls + ".last"))
        letter = {"full": "F", "diff": "D", "incr": "I"}[last["type"]]
        backups.append({
            "label": "20261126-010000F" + ("" if letter == "F" else "_20261126-020000" + letter),
            "type": last["type"],
            "timestamp": {"start": last["start"], "stop": last["start"] + 2},
            "info": {"size": 31000000, "delta": 31000000, "repository": {"size": 6000000, "delta": 6000000}},
        })
    stanza_id = int(os.environ.get("FAKE_STANZA_SYSTEM_ID", "7300000000000000001"))
    db = [{"id": 1, "repo-key": 1, "system-id": stanza_id, "version": "15"}]
    print(json.dumps([{"name": "openpolicy", "status": {"code": 0}, "db": db, "backup": backups}]))
    sys.exit(0)
sys.exit(1)
"""


@pytest.fixture
def fake_pgbackrest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pgbackrest"
    fake.write_text(FAKE_PGBACKREST)
    fake.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PGBACKREST_CALLS", str(calls))
    monkeypatch.setenv("FAKE_PGBACKREST_MODE", "ok")
    return calls


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    paths = {"textfile": tmp_path / "textfile", "state": tmp_path / "state"}
    paths["textfile"].mkdir()
    return paths


def runner_command(dirs: dict[str, Path], *args: str) -> list[str]:
    common = ["--stanza", "openpolicy", "--textfile-dir", str(dirs["textfile"]), "--state-dir", str(dirs["state"])]
    return [sys.executable, str(RUNNER), args[0], *common, *args[1:]]


def run_job(dirs: dict[str, Path], *args: str, mode: str = "ok") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAKE_PGBACKREST_MODE": mode}
    return subprocess.run(runner_command(dirs, *args), capture_output=True, text=True, env=env, timeout=60, check=False)


def metrics(dirs: dict[str, Path], name: str = "openpolicy_backup_openpolicy.prom") -> dict[str, float]:
    samples = {}
    for line in (dirs["textfile"] / name).read_text().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def test_successful_backup_publishes_metrics_and_one_log_line(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    before = time.time()
    result = run_job(dirs, "backup", "--type", "full", "--annotation", "reason=test")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    expected = r"^backup_job time=\S+ stanza=openpolicy type=full result=success exit=0 duration=[0-9.]+ "
    assert re.match(expected, lines[0])
    assert "label=20261126-010000F" in lines[0]
    samples = metrics(dirs)
    labels = '{stanza="openpolicy",type="full"}'
    assert samples[f"openpolicy_backup_last_run_success{labels}"] == 1
    assert samples[f"openpolicy_backup_last_success_timestamp_seconds{labels}"] >= int(before)
    assert samples[f"openpolicy_backup_last_run_exit_code{labels}"] == 0
    assert samples[f"openpolicy_backup_last_success_size_bytes{labels}"] == 31000000
    assert samples[f"openpolicy_backup_last_success_repo_size_bytes{labels}"] == 6000000
    assert samples['openpolicy_backup_runs_total{stanza="openpolicy",type="full",result="success"}'] == 1
    assert samples['openpolicy_backup_last_success_info{stanza="openpolicy",type="full",label="20261126-010000F"}'] == 1
    backup_call = json.loads(fake_pgbackrest.read_text().splitlines()[0])
    assert backup_call == ["--stanza=openpolicy", "--type=full", "--log-level-console=info", "--annotation=reason=test",
                           "backup"]  # fmt: skip


def test_timestamps_keep_every_digit(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    assert run_job(dirs, "backup", "--type", "full").returncode == 0
    text = (dirs["textfile"] / "openpolicy_backup_openpolicy.prom").read_text()
    assert re.search(r'last_success_timestamp_seconds\{stanza="openpolicy",type="full"\} \d{10}\n', text)
    assert "e+" not in text


def test_failed_backup_exits_non_zero_and_keeps_the_last_success(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    assert run_job(dirs, "backup", "--type", "full").returncode == 0
    labels = '{stanza="openpolicy",type="full"}'
    success_time = metrics(dirs)[f"openpolicy_backup_last_success_timestamp_seconds{labels}"]
    time.sleep(1.1)
    result = run_job(dirs, "backup", "--type", "full", mode="fail")
    assert result.returncode == 56
    assert len(result.stdout.splitlines()) == 1
    assert "result=failed exit=56" in result.stdout
    assert 'error="ERROR: [056]: unable to find primary cluster - cannot proceed"' in result.stdout
    samples = metrics(dirs)
    assert samples[f"openpolicy_backup_last_run_success{labels}"] == 0
    assert samples[f"openpolicy_backup_last_run_exit_code{labels}"] == 56
    assert samples[f"openpolicy_backup_last_success_timestamp_seconds{labels}"] == success_time
    assert samples['openpolicy_backup_runs_total{stanza="openpolicy",type="full",result="failed"}'] == 1
    assert samples['openpolicy_backup_runs_total{stanza="openpolicy",type="full",result="success"}'] == 1


def test_types_are_tracked_apart(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    assert run_job(dirs, "backup", "--type", "full").returncode == 0
    assert run_job(dirs, "backup", "--type", "incr", mode="fail").returncode != 0
    samples = metrics(dirs)
    assert samples['openpolicy_backup_last_run_success{stanza="openpolicy",type="full"}'] == 1
    assert samples['openpolicy_backup_last_run_success{stanza="openpolicy",type="incr"}'] == 0
    assert 'openpolicy_backup_last_success_timestamp_seconds{stanza="openpolicy",type="incr"}' not in samples


def test_first_run_failing_publishes_no_success_time(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    assert run_job(dirs, "backup", "--type", "diff", mode="fail").returncode == 56
    samples = metrics(dirs)
    assert samples['openpolicy_backup_last_run_success{stanza="openpolicy",type="diff"}'] == 0
    assert not any(name.startswith("openpolicy_backup_last_success_timestamp_seconds") for name in samples)


def test_missing_pgbackrest_is_a_failed_run(dirs: dict[str, Path], tmp_path: Path) -> None:
    result = run_job(dirs, "backup", "--type", "full", "--pgbackrest", str(tmp_path / "absent"))
    assert result.returncode == 127
    assert metrics(dirs)['openpolicy_backup_last_run_exit_code{stanza="openpolicy",type="full"}'] == 127


def test_a_second_run_is_skipped_while_the_first_holds_the_lock(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    env = {**os.environ, "FAKE_PGBACKREST_MODE": "hang"}
    command = runner_command(dirs, "backup", "--type", "full")
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not fake_pgbackrest.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        second = run_job(dirs, "backup", "--type", "incr", "--lock-wait", "1")
        assert time.monotonic() - started >= 1
        assert second.returncode == 75
        assert "result=skipped exit=75" in second.stdout
        assert len(fake_pgbackrest.read_text().splitlines()) == 1, "the second run must not call pgbackrest"
        samples = metrics(dirs)
        assert samples['openpolicy_backup_runs_total{stanza="openpolicy",type="incr",result="skipped"}'] == 1
        assert 'openpolicy_backup_last_run_success{stanza="openpolicy",type="incr"}' not in samples
    finally:
        first.kill()
        first.wait()


def kill_pgbackrest_of(job: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    pid = None
    while pid is None and time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True, check=False)
        pid = int(found.stdout.split()[0]) if found.stdout.strip() else None
        time.sleep(0.05)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def test_killed_pgbackrest_fails_then_the_next_run_succeeds(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    env = {**os.environ, "FAKE_PGBACKREST_MODE": "hang"}
    job = subprocess.Popen(runner_command(dirs, "backup", "--type", "full"), env=env, stdout=subprocess.PIPE, text=True)
    kill_pgbackrest_of(job)
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 137
    assert "result=failed exit=137" in output
    assert 'error="pgbackrest killed by SIGKILL"' in output
    assert metrics(dirs)['openpolicy_backup_last_run_exit_code{stanza="openpolicy",type="full"}'] == 137
    assert run_job(dirs, "backup", "--type", "full").returncode == 0
    samples = metrics(dirs)
    assert samples['openpolicy_backup_last_run_success{stanza="openpolicy",type="full"}'] == 1
    assert samples['openpolicy_backup_runs_total{stanza="openpolicy",type="full",result="failed"}'] == 1


def test_metrics_are_replaced_atomically(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    assert run_job(dirs, "backup", "--type", "full").returncode == 0
    first_inode = (dirs["textfile"] / "openpolicy_backup_openpolicy.prom").stat().st_ino
    assert run_job(dirs, "backup", "--type", "full").returncode == 0
    path = dirs["textfile"] / "openpolicy_backup_openpolicy.prom"
    assert path.stat().st_ino != first_inode, "a rename, not an in-place rewrite"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(item.name for item in dirs["textfile"].iterdir()) == ["openpolicy_backup_openpolicy.prom"]


def test_json_log_line(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    result = run_job(dirs, "backup", "--type", "full", "--json")
    line = json.loads(result.stdout)
    assert line["result"] == "success"
    assert line["label"] == "20261126-010000F"
    assert line["manifest"] == "off"


def test_bad_type_is_a_usage_error(dirs: dict[str, Path]) -> None:
    result = run_job(dirs, "backup", "--type", "weekly")
    assert result.returncode == 2
    assert "invalid choice: 'weekly'" in result.stderr


def test_record_drill_keeps_the_last_success_when_a_drill_fails(dirs: dict[str, Path]) -> None:
    ok = run_job(dirs, "record-drill", "--success", "1", "--restore-seconds", "12.5", "--data-age-seconds", "300")
    assert ok.returncode == 0
    name = "openpolicy_restore_drill_openpolicy.prom"
    passed = metrics(dirs, name)
    labels = '{stanza="openpolicy"}'
    assert passed[f"openpolicy_restore_drill_restore_duration_seconds{labels}"] == 12.5
    assert passed[f"openpolicy_restore_drill_data_age_seconds{labels}"] == 300
    time.sleep(1.1)
    assert run_job(dirs, "record-drill", "--success", "0", "--detail", "row counts differ").returncode == 0
    failed = metrics(dirs, name)
    assert failed[f"openpolicy_restore_drill_last_run_success{labels}"] == 0
    success_key = f"openpolicy_restore_drill_last_success_timestamp_seconds{labels}"
    assert failed[success_key] == passed[success_key]


def test_archive_status_without_a_server_reports_failure(dirs: dict[str, Path], tmp_path: Path) -> None:
    result = run_job(dirs, "archive-status", "--pg-port", "1", "--pg-host", str(tmp_path))
    assert result.returncode == 1
    samples = metrics(dirs, "openpolicy_wal_archive_openpolicy.prom")
    assert samples['openpolicy_wal_archive_status_success{stanza="openpolicy"}'] == 0


def test_workers_that_outlive_pgbackrest_are_ended(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    # pgBackRest's workers hold the stanza lock; left behind they would fail every later run.
    assert run_job(dirs, "backup", "--type", "full", mode="orphan").returncode == 0
    worker = int(Path(str(fake_pgbackrest) + ".orphan").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    state = Path(f"/proc/{worker}/stat")
    assert not state.exists() or state.read_text().split()[2] == "Z"


# psql for the system-id check and the manifest: the id from FAKE_CLUSTER_SYSTEM_ID; the count
# writes its pid beside the fake pgbackrest's calls (.count), takes FAKE_PSQL_SECONDS, then prints
# its snapshot's time and rows per schema unless FAKE_PSQL_MANIFEST=fail (a table the reporting
# role cannot read).
FAKE_PSQL = """#!/usr/bin/env python3
import os, sys, time
query = " ".join(sys.argv[1:])
if "pg_control_system" in query:
    print(os.environ.get("FAKE_CLUSTER_SYSTEM_ID", "7300000000000000001"))
    sys.exit(0)
with open(os.environ["FAKE_PGBACKREST_CALLS"] + ".count", "w") as handle:
    handle.write(str(os.getpid()))
snapshot = time.time()
time.sleep(float(os.environ.get("FAKE_PSQL_SECONDS", "0")))
if os.environ.get("FAKE_PSQL_MANIFEST") == "fail":
    print('ERROR:  permission denied for table sessions', file=sys.stderr)
    sys.exit(1)
print(snapshot)
print("auth\\t3")
"""


@pytest.fixture
def fake_psql(fake_pgbackrest: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake = Path(os.environ["PATH"].split(os.pathsep)[0]) / "psql"
    fake.write_text(FAKE_PSQL)
    fake.chmod(0o755)
    return fake


def backup_with_manifest(
    dirs: dict[str, Path], *login: str, mode: str = "ok", **env: str
) -> subprocess.CompletedProcess[str]:
    login = login or ("--manifest-conninfo", "host=db dbname=openpolicy")
    command = runner_command(dirs, "backup", "--type", "full", "--json", *login)
    env = {**os.environ, "FAKE_PGBACKREST_MODE": mode, **env}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def manifests(dirs: dict[str, Path]) -> list[Path]:
    return sorted((dirs["state"] / "manifests" / "openpolicy").glob("*.json"))


def last_manifest(dirs: dict[str, Path]) -> str | None:
    return json.loads((dirs["state"] / "openpolicy.json").read_text())["full"].get("last_manifest")


def backup_calls(calls: Path) -> list[list[str]]:
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [args for args in map(json.loads, lines) if args[-1] == "backup"]


def test_a_cluster_that_is_not_the_stanzas_is_refused(
    fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path]
) -> None:
    result = backup_with_manifest(dirs, FAKE_CLUSTER_SYSTEM_ID="7399999999999999999")
    assert result.returncode == 65, result.stdout + result.stderr
    assert "system id 7399999999999999999 is not stanza openpolicy's 7300000000000000001" in result.stdout
    assert backup_calls(fake_pgbackrest) == []
    assert not Path(f"{fake_pgbackrest}.count").exists(), "no count for a refused cluster"
    samples = metrics(dirs)
    assert samples['openpolicy_backup_cluster_system_id_match{stanza="openpolicy"}'] == 0
    assert samples['openpolicy_backup_last_run_success{stanza="openpolicy",type="full"}'] == 0


def test_the_stanzas_own_cluster_is_backed_up(fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    result = backup_with_manifest(dirs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(backup_calls(fake_pgbackrest)) == 1
    samples = metrics(dirs)
    assert samples['openpolicy_backup_cluster_system_id_match{stanza="openpolicy"}'] == 1
    assert samples['openpolicy_backup_last_manifest_success{stanza="openpolicy",type="full"}'] == 1


def test_the_manifest_is_counted_from_postgresqls_end_of_the_backup(
    fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path]
) -> None:
    # The backup waits up to 10 s after its stop line for the count to start: counted once
    # pgBackRest ended, it never would. The count outlasts the backup by half a second: the
    # runner waits for it.
    result = backup_with_manifest(dirs, FAKE_AWAIT_COUNT="1", FAKE_PSQL_SECONDS="0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert Path(f"{fake_pgbackrest}.saw_count").read_text() == "yes", "the count started before PostgreSQL's end"
    line = json.loads(result.stdout)
    assert line["manifest"] == "ok" and "manifest_error" not in line
    [path] = manifests(dirs)
    manifest = json.loads(path.read_text())
    assert path.name == f"{line['label']}.json"
    assert manifest["schemas"] == {"auth": 3}
    # The drill restores to recorded_at: the count's start, after PostgreSQL's end of the backup
    # (a restore cannot stop before it).
    assert manifest["recorded_at_epoch"] >= float(Path(f"{fake_pgbackrest}.stopped").read_text())
    assert manifest["recorded_at"].startswith(time.strftime("%Y-%m-%d", time.gmtime(manifest["recorded_at_epoch"])))
    assert last_manifest(dirs) == "ok"


def test_without_a_stop_line_the_rows_are_counted_after_the_backup(
    fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path]
) -> None:
    result = backup_with_manifest(dirs, FAKE_NO_STOP_LINE="1")
    assert json.loads(result.stdout)["manifest"] == "ok", result.stdout + result.stderr
    [path] = manifests(dirs)
    ended = json.loads(fake_pgbackrest.with_suffix(".jsonl.last").read_text())["start"]
    assert json.loads(path.read_text())["recorded_at_epoch"] >= ended


def test_a_failed_backup_records_no_manifest_and_ends_its_count(
    fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path]
) -> None:
    # pgBackRest fails after PostgreSQL's end of the backup (the last WAL never archived): the
    # count has started by then.
    started = time.monotonic()
    result = backup_with_manifest(dirs, mode="fail_after_stop", FAKE_AWAIT_COUNT="1", FAKE_PSQL_SECONDS="30")
    assert result.returncode == 82, result.stdout + result.stderr
    assert "was not archived before the 60000ms timeout" in json.loads(result.stdout)["error"]
    assert time.monotonic() - started < 20, "the runner waited for the count of a failed backup"
    assert json.loads(result.stdout)["result"] == "failed"
    assert manifests(dirs) == []
    assert last_manifest(dirs) is None
    count = Path(f"/proc/{Path(f'{fake_pgbackrest}.count').read_text()}/stat")
    assert not count.exists() or count.read_text().split()[2] == "Z", "the count outlived the run"


def test_a_failed_count_is_published(fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    result = backup_with_manifest(dirs, FAKE_PSQL_MANIFEST="fail")
    assert result.returncode == 0, result.stdout + result.stderr
    line = json.loads(result.stdout)
    assert line["result"] == "success" and line["manifest"] == "failed"
    assert line["manifest_error"] == "counting rows failed: ERROR:  permission denied for table sessions"
    assert manifests(dirs) == []
    assert last_manifest(dirs) == "failed"
    assert metrics(dirs)['openpolicy_backup_last_manifest_success{stanza="openpolicy",type="full"}'] == 0


def test_the_settings_file_gives_the_manifest_its_login(
    fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path], tmp_path: Path
) -> None:
    settings = tmp_path / "manifest.json"
    settings.write_text(json.dumps({"conninfo": "host=db dbname=openpolicy"}))
    result = backup_with_manifest(dirs, "--manifest-settings", str(settings))
    assert json.loads(result.stdout)["manifest"] == "ok", result.stdout + result.stderr
    assert len(manifests(dirs)) == 1
    # An empty login turns the manifest off: no count, no system id read.
    settings.write_text(json.dumps({"conninfo": ""}))
    Path(f"{fake_pgbackrest}.count").unlink()
    result = backup_with_manifest(dirs, "--manifest-settings", str(settings))
    assert json.loads(result.stdout)["manifest"] == "off", result.stdout + result.stderr
    assert not Path(f"{fake_pgbackrest}.count").exists()


def test_unreadable_settings_fail_the_manifest_not_the_backup(
    fake_psql: Path, fake_pgbackrest: Path, dirs: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "absent.json"
    result = backup_with_manifest(dirs, "--manifest-settings", str(missing))
    assert result.returncode == 0, result.stdout + result.stderr
    line = json.loads(result.stdout)
    assert line["result"] == "success" and line["manifest"] == "failed"
    assert line["manifest_error"].startswith(f"cannot read the manifest settings {missing} (FileNotFoundError")
    assert metrics(dirs)['openpolicy_backup_last_manifest_success{stanza="openpolicy",type="full"}'] == 0


def test_a_killed_run_is_published_then_retried_once(fake_pgbackrest: Path, dirs: dict[str, Path]) -> None:
    env = {**os.environ, "FAKE_PGBACKREST_MODE": "hang_once"}
    command = runner_command(dirs, "backup", "--type", "incr", "--retry-after-kill", "0.2")
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    hung = Path(f"{fake_pgbackrest}.hung")
    deadline = time.monotonic() + 10
    while not hung.exists() and time.monotonic() < deadline:  # killed before it hangs, it would hang again
        time.sleep(0.05)
    kill_pgbackrest_of(job)
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 0, output
    lines = output.splitlines()
    assert "result=failed exit=137" in lines[0] and "result=retrying" in lines[1] and "result=success" in lines[2]
    samples = metrics(dirs)
    assert samples['openpolicy_backup_runs_total{stanza="openpolicy",type="incr",result="failed"}'] == 1
    assert samples['openpolicy_backup_runs_total{stanza="openpolicy",type="incr",result="success"}'] == 1
    assert samples['openpolicy_backup_last_run_success{stanza="openpolicy",type="incr"}'] == 1
