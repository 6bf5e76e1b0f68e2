"""The strategy's cache of Jinja's compiled code: the same results as compiling every time, one
compile per text and settings, and errors that still name what is wrong."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, toolchain_env

# Run in a process of its own: the cache wraps ansible-core's Jinja environment for the whole
# process, and the comparison needs one run without it first.
SCRIPT = r"""
import json, sys
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible._internal._templating import _jinja_bits
from ansible_collections.openpolicy.deploy.plugins.plugin_utils import template_code_cache

VARS = {"a": 1, "names": ["x", "y"], "path": "c:\\new", "nested": "{{ a + 41 }}"}
TEMPLATES = [
    "{{ a + 1 }}",
    "{{ names | join(',') }}-{{ a }}",
    "{{ nested }}",
    "{{ path }}",
    '{{ "c:\\new" }}',
    "#jinja2:variable_start_string:'[[', variable_end_string:']]'\n[[ a ]] {{ a }}",
    "{% for n in names %}{{ n }}{% endfor %}",
]
CONDITIONALS = ["a == 1", "names | length > 1", "undefined_thing | default(false)"]
BROKEN = ["{{ a + }}", "{% for %}"]


def run():
    templar = Templar(loader=DataLoader(), variables=VARS)
    out = [templar.template(trust_as_template(t)) for t in TEMPLATES]
    out += [templar.evaluate_conditional(trust_as_template(c)) for c in CONDITIONALS]
    for broken in BROKEN:
        try:
            templar.template(trust_as_template(broken))
        except AnsibleError as error:
            out.append(type(error).__name__ + ": " + str(error).splitlines()[0])
    return out


compiles = []
original = _jinja_bits.AnsibleEnvironment.compile


def counted(self, source, *args, **kwargs):
    compiles.append(source if isinstance(source, str) else "<expression>")
    return original(self, source, *args, **kwargs)


_jinja_bits.AnsibleEnvironment.compile = counted
uncached = run()
compiles_uncached = len(compiles)
template_code_cache.install()
template_code_cache.install()  # a second install changes nothing
first = run()
compiles.clear()
second = run()
third = run()
print(json.dumps({
    "uncached": uncached, "first": first, "second": second, "third": third,
    "compiles_uncached": compiles_uncached, "compiles_after_first": len(compiles),
    "entries": len(template_code_cache._code),
}, default=str))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """The script's figures, from one run shared by the tests below (a cache folder of its own)."""
    return run_script(SCRIPT, tmp_path_factory.mktemp("cache"))


def run_script(script: str, cache_folder: Path) -> dict:
    """A script's last line of JSON, run in a process of its own with `cache_folder` as
    OPENPOLICY_CACHE."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=toolchain_env(PYTHONPATH=str(REPO / ".collections"), OPENPOLICY_CACHE=str(cache_folder)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_cached_code_renders_what_compiling_each_time_renders_and_compiles_each_text_once(results: dict):
    assert results["first"] == results["uncached"]
    assert results["second"] == results["uncached"]
    assert results["third"] == results["uncached"]
    # Every text compiled without the cache; with it, only the broken ones again (an error is
    # never kept), however many renders.
    assert results["compiles_uncached"] >= 10
    assert results["compiles_after_first"] == 2 * 2
    # The override header and the plain template, the backslash in an expression constant, the
    # conditionals: each its own entry.
    assert results["entries"] >= 10


def test_errors_still_name_the_broken_template(results: dict):
    errors = [line for line in results["second"] if isinstance(line, str) and "Error" in line]
    assert len(errors) == 2
    assert all("AnsibleTemplateSyntaxError" in line or "syntax" in line.lower() for line in errors), errors


# Two runs in a row, sharing the cache folder: the first compiles and keeps the code of the text
# read from the project's roles, the second finds it there. Text from an inventory, from a file
# outside the project, typed in (no origin) or vaulted is compiled by each run and never written.
KEPT_SCRIPT = r"""
import json, marshal, sys
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible._internal._datatag._tags import Origin, VaultedValue
from ansible._internal._templating import _jinja_bits
from ansible_collections.openpolicy.deploy.plugins.plugin_utils import template_code_cache as cache

ROLE = str(cache.PROJECT / "roles" / "secrets" / "tasks" / "main.yml")
texts = {
    "role": Origin(path=ROLE).tag("{{ a + 1 }}-kept"),
    "role_conditional": Origin(path=ROLE).tag("a == 1 and 'kept' != ''"),
    "inventory": Origin(path=str(cache.PROJECT / "inventories" / "local" / "hosts.yml")).tag("{{ a }}-inventory"),
    "elsewhere": Origin(path="/etc/ansible/roles/x/tasks/main.yml").tag("{{ a }}-elsewhere"),
    "typed": "{{ a }}-typed",
    "vaulted": VaultedValue(ciphertext="x").tag(Origin(path=ROLE).tag("{{ a }}-vaulted")),
}
compiles = []
original = _jinja_bits.AnsibleEnvironment.compile


def counted(self, source, *args, **kwargs):
    compiles.append(str(source) if isinstance(source, str) else "<expression>")
    return original(self, source, *args, **kwargs)


_jinja_bits.AnsibleEnvironment.compile = counted
cache.install()
templar = Templar(loader=DataLoader(), variables={"a": 1})
out = {}
for name, text in texts.items():
    text = trust_as_template(text)
    out[name] = templar.evaluate_conditional(text) if name.endswith("conditional") else templar.template(text)
print(json.dumps({"out": out, "compiles": compiles, "file": str(cache.cache_file())}))
"""


def kept_run(cache_folder: Path) -> dict:
    return run_script(KEPT_SCRIPT, cache_folder)


def kept_texts(path: str) -> set[str]:
    return {key[1] for key in marshal.loads(Path(path).read_bytes())}


def test_code_of_the_projects_roles_is_kept_across_runs_and_nothing_else(tmp_path):
    first = kept_run(tmp_path)
    assert first["out"] == {
        "role": "2-kept",
        "role_conditional": True,
        "inventory": "1-inventory",
        "elsewhere": "1-elsewhere",
        "typed": "1-typed",
        "vaulted": "1-vaulted",
    }
    assert kept_texts(first["file"]) == {"{{ a + 1 }}-kept", "a == 1 and 'kept' != ''"}
    assert oct(os.stat(first["file"]).st_mode & 0o777) == "0o600"

    second = kept_run(tmp_path)
    assert second["out"] == first["out"]
    # Only what is never kept is compiled again.
    never_kept = ["{{ a }}-inventory", "{{ a }}-elsewhere", "{{ a }}-typed", "{{ a }}-vaulted"]
    assert sorted(second["compiles"]) == sorted(never_kept)


def test_an_unreadable_cache_file_is_compiled_past_and_written_again(tmp_path):
    path = kept_run(tmp_path)["file"]
    with open(path, "wb") as broken:
        broken.write(b"\x00not marshal")
    again = kept_run(tmp_path)
    assert again["out"]["role"] == "2-kept"
    assert "{{ a + 1 }}-kept" in again["compiles"]
    assert kept_texts(path) == {"{{ a + 1 }}-kept", "a == 1 and 'kept' != ''"}
