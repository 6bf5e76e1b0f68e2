"""The repository builds as the collection openpolicy.deploy (galaxy.yml), installs into a path of
its own, and a playbook in another folder uses its roles by their full names."""

from __future__ import annotations

import ast
import subprocess
import tarfile

import yaml

from tests.helpers import REPO, recap, toolchain_env

PLAYBOOK = [
    {
        "name": "Use the collection's roles by their full names",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Check the local cluster's inputs",
                "ansible.builtin.include_role": {"name": "openpolicy.deploy.k8s_cluster", "tasks_from": "validate"},
                "vars": {"k8s_cluster_provider": "kwok", "k8s_cluster_name": "elsewhere", "k8s_cluster_nodes": 2},
            },
            {
                "name": "Check a host's baseline inputs",
                "ansible.builtin.import_role": {"name": "openpolicy.deploy.host_baseline", "tasks_from": "validate"},
                "when": False,
            },
        ],
    }
]


def run(*command: str, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, text=True, capture_output=True, check=False, timeout=600)


def test_built_collection_runs_from_another_folder(tmp_path):
    env = toolchain_env()
    built = run("ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(REPO), cwd=REPO, env=env)
    assert built.returncode == 0, built.stderr
    (artifact,) = tmp_path.glob("openpolicy-deploy-*.tar.gz")
    with tarfile.open(artifact) as tar:
        members = tar.getnames()
    assert "roles/k8s_cluster/files/local_cluster.py" in members and "plugins/module_utils/catalog.py" in members
    assert not [m for m in members if m.startswith(("inventories/", "tests/", ".collections", "molecule/"))]

    collections = tmp_path / "collections"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "play.yml").write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    (elsewhere / "ansible.cfg").write_text("[defaults]\n")
    # Only the installed copy: not this checkout's roles, plugins or .collections link.
    env.update(
        ANSIBLE_CONFIG=str(elsewhere / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=f"{collections}:{REPO / '.toolchain' / 'collections'}",
        ANSIBLE_ROLES_PATH=str(elsewhere),
    )
    env.pop("ANSIBLE_VAULT_IDENTITY_LIST", None)
    installed = run(
        "ansible-galaxy",
        "collection",
        "install",
        "--no-deps",
        "-p",
        str(collections),
        str(artifact),
        cwd=elsewhere,
        env=env,
    )
    assert installed.returncode == 0, installed.stderr
    assert (collections / "ansible_collections" / "openpolicy" / "deploy" / "MANIFEST.json").is_file(), installed.stdout
    syntax = run("ansible-playbook", "-i", "localhost,", "--syntax-check", "play.yml", cwd=elsewhere, env=env)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    played = run("ansible-playbook", "-i", "localhost,", "-c", "local", "play.yml", cwd=elsewhere, env=env)
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-2000:]
    assert recap(played)["localhost"]["failed"] == 0

    bad = run(
        "ansible-playbook",
        "-i",
        "localhost,",
        "-c",
        "local",
        "play.yml",
        "-e",
        "k8s_cluster_nodes=0",
        cwd=elsewhere,
        env=env,
    )
    assert bad.returncode != 0 and "k8s_cluster_nodes: expected a whole number from 1 to 1000" in bad.stdout


def test_every_plugin_documents_itself_in_yaml_ansible_doc_reads():
    """DOCUMENTATION, EXAMPLES and RETURN of every module and plugin parse as YAML: ansible-doc
    (and ansible-lint, which only printed an error) could not read a description item holding ': '."""
    problems = []
    for path in sorted((REPO / "plugins").glob("*/*.py")):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
                continue
            name = node.targets[0].id
            if name not in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                continue
            try:
                document = yaml.safe_load(node.value.value)
            except yaml.YAMLError as error:
                problems.append(f"{path.relative_to(REPO)} {name}: {str(error).splitlines()[0]}")
                continue
            if name == "DOCUMENTATION" and not isinstance(document, dict):
                problems.append(f"{path.relative_to(REPO)} {name}: expected a mapping")
    assert not problems, problems
