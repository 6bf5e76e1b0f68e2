"""helm lint --strict for every chart, and every ci/ values file rendered on its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.charts import render
from tests.charts.k8s_schema import validate_all

CHARTS = sorted(path.parent for path in render.CHARTS.glob("*/Chart.yaml"))
CI_FILES = sorted(render.CHARTS.glob("*/ci/*.yaml"))


def lint(chart: Path, *values: Path) -> subprocess.CompletedProcess:
    render.build_dependencies()
    command = [render.helm_binary(), "lint", "--strict", str(chart), "--kube-version", render.KUBE_VERSION]
    for path in values:
        command += ["--values", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_every_chart_is_here() -> None:
    assert {chart.name for chart in CHARTS} == {"openpolicy-common", "openpolicy-service", "openpolicy-platform"}


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.name)
def test_chart_metadata(chart: Path) -> None:
    meta = render.yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == chart.name
    assert meta["version"] == "0.1.0"
    assert meta["kubeVersion"] == ">=1.30.0-0"
    if meta.get("type") != "library":
        assert (chart / "values.schema.json").is_file(), "every app chart has a values schema"
        assert (chart / "ci" / "lint-values.yaml").is_file()


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.name)
def test_helm_lint_strict(chart: Path) -> None:
    values = [chart / "ci" / "lint-values.yaml"] if (chart / "ci" / "lint-values.yaml").is_file() else []
    result = lint(chart, *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout


@pytest.mark.parametrize("values_file", CI_FILES, ids=lambda path: f"{path.parent.parent.name}/{path.name}")
def test_ci_values_render_and_validate(values_file: Path) -> None:
    chart = values_file.parent.parent
    namespace = render.PLATFORM_RELEASE_NAMESPACE if chart == render.PLATFORM_CHART else "openpolicy-dev"
    manifests = render.helm_template(chart, "ci", namespace, values_files=(values_file,))
    assert manifests
    assert validate_all(manifests) == []
    assert lint(chart, values_file).returncode == 0


def open_objects(schema: object, path: str = "") -> list[str]:
    """Object schemas that accept keys nobody declared (free maps must say what their values are)."""
    found: list[str] = []
    if path.startswith("/allOf"):  # if/then overlays: they narrow keys the closed base schema declares
        return found
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            closed = "additionalProperties" in schema or "patternProperties" in schema
            if not closed:
                found.append(path or "/")
        for key, value in schema.items():
            found += open_objects(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += open_objects(value, f"{path}/{index}")
    return found


@pytest.mark.parametrize("chart", render.APP_CHARTS, ids=lambda chart: chart.name)
def test_values_schema_is_closed_everywhere(chart: Path) -> None:
    schema = json.loads((chart / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    # Helm's own keys, and the three pass-through parts of a Kubernetes Affinity.
    allowed = {"/properties/global", "/properties/openpolicy-common"} | {
        f"/properties/affinity/properties/{key}" for key in ("nodeAffinity", "podAffinity", "podAntiAffinity")
    }
    assert set(open_objects(schema)) <= allowed
