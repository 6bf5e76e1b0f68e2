"""The chart READMEs' parameter tables are generated from the values annotations and up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import chart_readme
from tests.charts import render


def test_committed_readmes_are_up_to_date() -> None:
    run = subprocess.run(
        [sys.executable, str(render.ROOT / "scripts" / "chart_readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_a_stale_table_and_an_undocumented_key_are_reported(tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(
        "## @section Things\n## @param replicas How many\nreplicas: 2\n## @param gone Not there\nextra: {a: 1}\n"
    )
    (chart / "README.md").write_text("# demo\n\n<!-- parameters:start -->\nold\n<!-- parameters:end -->\n")
    assert chart_readme.main(["--check", str(chart)]) == 1
    table, problems = chart_readme.values_tables(chart)
    assert "| `replicas` | How many | `2` |" in table
    assert problems == ["demo: @param gone names no key of values.yaml", "demo: extra.a has no @param"]
    chart_readme.main([str(chart)])
    assert "| `replicas` | How many | `2` |" in (chart / "README.md").read_text()
