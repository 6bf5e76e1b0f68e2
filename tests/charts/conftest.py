"""Fixtures of the chart tests: every release rendered once per session with the real helm."""

from __future__ import annotations

import pytest

from tests.charts import render


@pytest.fixture(scope="session")
def rendered() -> dict[tuple[str, str], list[dict]]:
    """{(environment, release): manifests} for the nine services and the baseline, in every environment."""
    return render.render_all()


@pytest.fixture(scope="session")
def all_manifests(rendered: dict[tuple[str, str], list[dict]]) -> list[dict]:
    return [manifest for manifests in rendered.values() for manifest in manifests]
