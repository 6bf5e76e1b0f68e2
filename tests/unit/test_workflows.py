"""The CI/CD pipeline (.github/workflows, .github/actions) runs only what exists here.

actionlint (pinned, make lint) checks the workflows' syntax and expressions; these tests check
what actionlint cannot know: every make target, pytest path, playbook and inventory a workflow
names exists, every `-e name=` is accepted by the playbook it is passed to (a role's
meta/argument_specs.yml or a `-e name=` the playbook documents), actions are pinned by commit,
secrets reach scripts only through the environment, manual inputs are checked before anything
runs, and Trivy gates every deploy and promotion.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

WORKFLOW_DIR = REPO / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
ACTIONS = sorted((REPO / ".github" / "actions").glob("*/action.yml"))
EXPRESSION = re.compile(r"\$\{\{\s*(inputs|matrix)\.([A-Za-z0-9_-]+)\s*\}\}")
EXTRA_VAR = re.compile(r"""-e\s+["']?([A-Za-z_][A-Za-z0-9_]*)=""")
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")


@functools.cache
def load(path: Path) -> dict:
    """The parsed file (cached: the expansion reads the same workflows many times; never mutated)."""
    return yaml.safe_load(path.read_text())


def triggers(doc: dict) -> dict:
    # YAML 1.1 reads the bare key `on` as true.
    value = doc.get("on", doc.get(True))
    return value if isinstance(value, dict) else {name: {} for name in ([value] if isinstance(value, str) else value)}


def callers_values(workflow: Path, name: str) -> set[str]:
    """The values every caller of a reusable workflow passes for one input (expanded)."""
    out: set[str] = set()
    for path in WORKFLOWS:
        doc = load(path)
        for job in (doc.get("jobs") or {}).values():
            if job.get("uses") == f"./.github/workflows/{workflow.name}":
                out |= expand(str((job.get("with") or {})[name]), path, job)
    return out


def expression_values(kind: str, name: str, workflow: Path | None, job: dict | None) -> set[str]:
    if kind == "matrix":
        values = ((job or {}).get("strategy") or {}).get("matrix", {}).get(name)
        assert isinstance(values, list), f"{workflow}: matrix.{name} is not a static list"
        return {str(v) for v in values}
    on = triggers(load(workflow)) if workflow else {}
    dispatch = ((on.get("workflow_dispatch") or {}).get("inputs") or {}).get(name)
    if dispatch:
        return {str(v) for v in dispatch.get("options") or []} or {"<free>"}
    if name in ((on.get("workflow_call") or {}).get("inputs") or {}):
        return callers_values(workflow, name)
    raise AssertionError(f"{workflow}: inputs.{name} is not declared")


def expand(text: str, workflow: Path | None, job: dict | None) -> set[str]:
    """Every value ``text`` takes: ${{ inputs.x }} and ${{ matrix.x }} replaced by theirs."""
    match = EXPRESSION.search(text)
    if not match:
        return {text}
    out: set[str] = set()
    for value in expression_values(match[1], match[2], workflow, job):
        out |= expand(text[: match.start()] + value + text[match.end() :], workflow, job)
    return out


def scripts() -> list[tuple[Path, dict | None, dict, str]]:
    """(file, job, step, script) of every `run:`, shell variables from `env:` expanded."""
    out = []
    for path in WORKFLOWS + ACTIONS:
        doc = load(path)
        if path in ACTIONS:
            jobs = [(None, {"steps": doc["runs"]["steps"]})]
        else:
            jobs = [(job, job) for job in (doc.get("jobs") or {}).values()]
        for job, holder in jobs:
            for step in holder.get("steps") or []:
                if "run" not in step:
                    continue
                # A composite action's inputs come from its callers: its scripts stay as written.
                env = {} if path in ACTIONS else {**((job or {}).get("env") or {}), **(step.get("env") or {})}
                for script in {step["run"]} if path in ACTIONS else expand(step["run"], path, job):
                    variants = {script}
                    for var, value in env.items():
                        pattern = re.compile(r"\$\{?" + re.escape(var) + r"\b\}?")
                        if not any(pattern.search(s) for s in variants) or not EXPRESSION.search(str(value)):
                            continue
                        values = expand(str(value), path, job)
                        variants = {pattern.sub(v, s) for s in variants for v in values}
                    out += [(path, job, step, s) for s in variants]
    return out


SCRIPTS = scripts()


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z0-9][a-z0-9-]*):", text, re.MULTILINE))
    scenarios = {p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml")}
    return targets | {f"molecule-{s}" for s in scenarios}


def accepted_extra_vars(playbook: Path) -> set[str]:
    """Options of every role's argument specs, the operator's names that role defaults or playbooks
    map to role variables (`{{ confirm | default('') }}`: the shared preflight reads them on every
    run), and the `-e name=` the playbook's comments document."""
    names = set()
    for spec in (REPO / "roles").glob("*/meta/argument_specs.yml"):
        for entry in (load(spec).get("argument_specs") or {}).values():
            names |= set((entry or {}).get("options") or {})
    for mapping in [*(REPO / "roles").glob("*/defaults/main.yml"), *(REPO / "playbooks").glob("*.yml")]:
        names |= set(re.findall(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\|\s*default\(", mapping.read_text()))
    comments = "\n".join(line for line in playbook.read_text().splitlines() if line.lstrip().startswith("#"))
    return names | set(re.findall(r"-e ([a-z_][a-z0-9_]*)=", comments))


def test_there_is_a_pipeline():
    names = {p.stem for p in WORKFLOWS}
    assert {"checks", "deploy", "promote", "rollback", "restore", "scheduled", "image-scan"} <= names
    assert SCRIPTS


def test_actionlint_is_the_pinned_version():
    pinned = tomllib.loads((REPO / "versions.toml").read_text())["go"]["actionlint"]
    binary = REPO / ".toolchain" / "bin" / "actionlint"
    if not binary.exists():
        pytest.skip("actionlint is not built yet (make bootstrap)")
    out = subprocess.run([str(binary), "-version"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == pinned


def test_every_make_target_exists():
    targets = make_targets()
    used = {(path.name, t) for path, _, _, s in SCRIPTS for t in re.findall(r"\bmake\s+([a-z0-9][a-z0-9_-]*)", s)}
    assert used, "no workflow runs make"
    assert [u for u in used if u[1] not in targets] == []


def test_every_pytest_path_exists():
    used = {p for _, _, _, s in SCRIPTS for p in re.findall(r"pytest\s+((?:tests|molecule)/\S+)", s)}
    assert used
    assert [p for p in used if not (REPO / p).exists()] == []


def test_every_playbook_and_inventory_exists():
    playbooks = {p for _, _, _, s in SCRIPTS for p in re.findall(r"playbooks/[a-z_]+\.yml", s)}
    inventories = {i for _, _, _, s in SCRIPTS for i in re.findall(r"""-i\s+["']?(inventories/[a-z]+)""", s)}
    assert playbooks and inventories
    assert [p for p in playbooks if not (REPO / p).is_file()] == []
    assert [i for i in inventories if not (REPO / i / "hosts.yml").is_file()] == []


def test_every_extra_var_is_accepted_by_its_playbook():
    unknown = []
    for path, _, _, script in SCRIPTS:
        playbooks = set(re.findall(r"playbooks/[a-z_]+\.yml", script))
        if not playbooks:
            continue
        assert len(playbooks) == 1, f"{path.name}: one playbook per step, got {playbooks}"
        playbook = REPO / playbooks.pop()
        accepted = accepted_extra_vars(playbook)
        unknown += [(path.name, playbook.name, n) for n in EXTRA_VAR.findall(script) if n not in accepted]
    assert unknown == []


def test_actions_are_pinned_by_commit():
    uses = []
    for path in WORKFLOWS + ACTIONS:
        uses += [(path.name, u) for u in re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", path.read_text(), re.MULTILINE)]
    remote = [(n, u) for n, u in uses if not u.startswith("./")]
    assert remote
    assert [(n, u) for n, u in remote if not PINNED.match(u)] == []


def test_secrets_reach_scripts_only_through_the_environment():
    for path in WORKFLOWS + ACTIONS:
        for _, _, step, _ in [s for s in SCRIPTS if s[0] == path]:
            assert "secrets." not in step["run"], f"{path.name}: a secret in a script's text: {step.get('name')}"
    action = (REPO / ".github" / "actions" / "toolchain" / "action.yml").read_text()
    assert "umask 077" in action
    assert 'printf \'%s\\n\' "$VAULT_PASSWORD" > "$RUNNER_TEMP/vault-password"' in action
    assert not re.search(r"(echo|cat).*\$(VAULT_PASSWORD|SSH_KEY|KUBECONFIG_TEXT)\b", action)


def needs_of(jobs: dict, name: str) -> set[str]:
    direct = jobs[name].get("needs") or []
    direct = [direct] if isinstance(direct, str) else direct
    out = set(direct)
    for parent in direct:
        out |= needs_of(jobs, parent)
    return out


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_manual_inputs_are_checked_before_anything_runs(path: Path):
    inputs = (triggers(load(path)).get("workflow_dispatch") or {}).get("inputs") or {}
    free = [n for n, spec in inputs.items() if spec.get("type", "string") == "string"]
    if not inputs or (not free and path.stem == "scheduled"):
        return
    jobs = load(path)["jobs"]
    assert "inputs" in jobs, f"{path.name}: no job checks the inputs"
    assert all("inputs" in needs_of(jobs, name) for name in jobs if name != "inputs")
    checked = " ".join(str(v) for step in jobs["inputs"]["steps"] for v in (step.get("env") or {}).values())
    for name in free:
        assert f"inputs.{name} " in checked + " ", f"{path.name}: input {name} is not checked"
    assert 'echo "::error::$1"; exit 1' in str(jobs["inputs"]["steps"])


def test_trivy_blocks_on_critical_and_uploads_sarif():
    steps = load(WORKFLOW_DIR / "image-scan.yml")["jobs"]["scan"]["steps"]
    trivy = next(s for s in steps if s.get("uses", "").startswith("aquasecurity/trivy-action@"))
    assert trivy["with"]["severity"] == "CRITICAL" and trivy["with"]["exit-code"] == "1"
    assert trivy["with"]["format"] == "sarif"
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert upload["if"].startswith("always()")


def test_every_deploy_and_promotion_waits_for_its_scan_and_approval():
    deploy = load(WORKFLOW_DIR / "deploy.yml")["jobs"]
    for environment in ("dev", "staging", "production"):
        scan = f"scan-{environment}"
        assert deploy[scan]["with"]["environment"] == environment
        assert scan in needs_of(deploy, environment) and "checks" in needs_of(deploy, environment)
    assert {"dev", "scan-staging"} <= needs_of(deploy, "staging") and "staging" in needs_of(deploy, "production")
    called = load(WORKFLOW_DIR / "deploy-environment.yml")["jobs"]["deploy"]
    assert called["environment"] == "${{ inputs.environment }}"
    promote = load(WORKFLOW_DIR / "promote.yml")["jobs"]
    assert "scan" in needs_of(promote, "pins") and promote["pins"]["environment"] == "${{ inputs.from }}"
    for name in ("rollback", "restore"):
        job = load(WORKFLOW_DIR / f"{name}.yml")["jobs"][name]
        assert job["environment"] == "${{ inputs.environment }}"


def test_restore_inputs_use_the_roles_patterns():
    """The workflow's checks are the playbook's: same patterns as roles/pgbackrest. The role ends
    them with Python's \\Z (no trailing newline), which bash's =~ spells $."""
    script = load(WORKFLOW_DIR / "restore.yml")["jobs"]["inputs"]["steps"][0]["run"]
    validate = (REPO / "roles" / "pgbackrest" / "tasks" / "validate.yml").read_text()
    variables = load(REPO / "roles" / "pgbackrest" / "vars" / "main.yml")
    backup_set = re.search(r"^backup_set='(.+)'$", script, re.MULTILINE)[1].removesuffix("$") + "\\Z"
    target_time = re.search(r"^target_time='(.+)'$", script, re.MULTILINE)[1].removesuffix("$") + "\\Z"
    assert f"match('{backup_set}')" in validate
    assert target_time == variables["__pgbackrest_target_time_pattern"]


def test_scheduled_checks_run_the_drift_backup_and_drill_playbooks():
    doc = load(WORKFLOW_DIR / "scheduled.yml")
    crons = [entry["cron"] for entry in triggers(doc)["schedule"]]
    jobs = doc["jobs"]
    for name, playbook in (("drift", "drift"), ("backup-verification", "backup"), ("restore-drill", "restore_drill")):
        assert any(cron in jobs[name]["if"] for cron in crons), name
        assert f"playbooks/{playbook}.yml" in str(jobs[name]["steps"])
