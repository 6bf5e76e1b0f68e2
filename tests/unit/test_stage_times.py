"""The stage times after a run's recap (plugins/callback/stage_times.py), through ansible-playbook."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.helpers import REPO, load_plugin, toolchain_env

stage_times = load_plugin("callback", "stage_times")


def test_a_stage_is_the_play_name_before_the_bar():
    assert stage_times.stage_of("Provision hosts | baseline on every host") == "Provision hosts"
    assert stage_times.stage_of("Deploy | the services, tier by tier") == "Deploy"
    assert stage_times.stage_of("a play without a bar") == "a play without a bar"
    assert stage_times.stage_of("  ") == "(unnamed play)"


def test_lines_give_seconds_share_and_total():
    lines = stage_times.stage_lines({"Preflight": 3.0, "Provision hosts": 9.0})
    assert lines[0].split() == ["Preflight", "3.0", "s", "25", "%"]
    assert lines[1].split() == ["Provision", "hosts", "9.0", "s", "75", "%"]
    assert lines[2].split() == ["total", "12.0", "s"]


def test_a_run_prints_each_stage_once_in_order_after_the_recap(tmp_path: Path):
    def play(name: str, seconds: float) -> dict:
        return {"name": name, "hosts": "localhost", "gather_facts": False,
                "tasks": [{"name": "Wait", "ansible.builtin.pause": {"seconds": seconds}}]}  # fmt: skip

    plays = [play("Preflight | inputs", 1), play("Provision hosts | one", 1), play("Provision hosts | two", 1)]
    (tmp_path / "run.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "run.yml")],
        cwd=REPO, env=toolchain_env(), text=True, capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    after = result.stdout.split("PLAY RECAP", 1)[1].split("STAGES (seconds each took)", 1)[1]
    rows = [line.split() for line in after.splitlines() if line.strip() and not line.strip().startswith("*")]
    assert [row[0] for row in rows] == ["Preflight", "Provision", "total"]
    assert float(rows[1][2]) >= 2.0, rows  # the two plays of one stage add up
