"""The strategy's cache of Jinja's compiled code: the same results as compiling every time, one
compile per text and settings, and errors that still name what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys

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
def results() -> dict:
    """The script's figures, from one run shared by the tests below."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=toolchain_env(PYTHONPATH=str(REPO / ".collections")),
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
