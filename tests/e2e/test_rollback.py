"""rollback.yml on the session's cluster: one service to a named or to its previous revision,
the whole environment to the previous release set.

The tests of this module build on each other in file order: set 1 is the nine services at
1.4.2, set 2 has auth-service and policy-service at 1.5.0.
"""

from __future__ import annotations

import pytest

from tests.e2e.deploy_env import SERVICES, DeployEnv, failure_messages, output
from tests.helpers import Kube

pytestmark = pytest.mark.cluster

NAMESPACE = "openpolicy-e2e-rollback"
UPGRADED = ("auth-service", "policy-service")


@pytest.fixture(scope="module")
def env(kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory):
    deploy_env = DeployEnv(kube, cluster_vars, NAMESPACE, tmp_path_factory.mktemp("credentials"))
    first = deploy_env.deploy()
    assert first.returncode == 0, output(first)
    second = deploy_env.deploy(service_releases_versions=dict.fromkeys(UPGRADED, "1.5.0"))
    assert second.returncode == 0, output(second)
    yield deploy_env
    deploy_env.remove()


def content(entry: dict) -> tuple:
    return entry["chart_version"], entry["app_version"], entry["values_checksum"]


def test_two_sets_are_recorded(env: DeployEnv):
    sets = env.release_sets()
    assert [(s["number"], s["previous"]) for s in sets] == [(1, 0), (2, 1)]
    changed = {n for n in SERVICES if content(sets[0]["services"][n]) != content(sets[1]["services"][n])}
    assert changed == set(UPGRADED)
    assert all(env.image_tag(s) == "1.5.0" for s in UPGRADED)


def test_environment_returns_to_the_previous_set(env: DeployEnv):
    before = env.serving()
    result = env.rollback()
    assert result.returncode == 0, output(result)
    sets = env.release_sets()
    first, restored = sets[0], sets[-1]
    assert restored["number"] == 3 and restored["reason"] == "rollback to set 1"
    # Every service serves what it served in set 1; only the upgraded ones got a new revision.
    for name in SERVICES:
        assert content(restored["services"][name]) == content(first["services"][name]), name
    after = env.serving()
    for name in SERVICES:
        if name in UPGRADED:
            assert after[name] == before[name] + 1
            assert env.descriptions(name)[after[name]] == f"Rollback to {first['services'][name]['revision']}"
            assert env.image_tag(name) == "1.4.2"
        else:
            assert after[name] == before[name], name
    assert all(have == want for have, want in env.ready().values())
    assert "release set 3 recorded" in result.stdout


def test_no_set_before_the_first(env: DeployEnv):
    """Set 3 restored set 1, which has no previous set: a second rollback has nowhere to go."""
    before = env.snapshot()
    result = env.rollback()
    assert result.returncode != 0
    assert failure_messages(result)[-1].startswith("preflight: release_set: set 3 has no previous set"), output(result)
    assert env.snapshot() == before


def test_one_service_returns_to_a_named_revision(env: DeployEnv):
    before = env.serving()
    result = env.rollback(service="auth-service", revision="2")
    assert result.returncode == 0, output(result)
    after = env.serving()
    assert after["auth-service"] == before["auth-service"] + 1
    assert env.descriptions("auth-service")[after["auth-service"]] == "Rollback to 2"
    assert env.image_tag("auth-service") == "1.5.0"
    assert {k: v for k, v in after.items() if k != "auth-service"} == {
        k: v for k, v in before.items() if k != "auth-service"
    }
    latest = env.release_sets()[-1]
    assert latest["reason"] == "rollback of auth-service to revision 2" and latest["previous"] == 3


def test_one_service_returns_to_its_previous_revision(env: DeployEnv):
    """Without -e revision: the latest earlier revision that served other content (1.4.2)."""
    before = env.serving()
    result = env.rollback(service="auth-service")
    assert result.returncode == 0, output(result)
    assert env.serving()["auth-service"] == before["auth-service"] + 1
    assert env.image_tag("auth-service") == "1.4.2"
    assert (
        "- auth-service" in result.stdout and "service               version  revision  ready  status" in result.stdout
    )
