"""Jinja's compiled code for each template and conditional, kept for the rest of the run.

ansible-core 2.19 compiles a template from its text every time it renders one: lexing, parsing,
generating Python and compiling that. The same few hundred strings (a role default, a `when:`)
come back task after task, so a no-op deploy.yml spent about 1.3 s of its 7.4 s compiling,
more than half of it text it had compiled before. Jinja's own bytecode cache does the same for
templates read from files, which Ansible does not use for these strings.

What is kept is only the code object: pure function of the text and of the settings the code
generator and lexer read (the template's delimiters and whitespace overrides, the environment's
optimizer and autoescape switches, Ansible's backslash escaping and embedded-template setting).
Every render still builds its template from that code in its own environment, with its own
globals and variables, exactly as Jinja's `from_string` does.

The code of text read from this project's own roles and playbooks is also kept across runs, in
one file under ~/.cache/openpolicy-deploy/jinja-code (OPENPOLICY_CACHE moves it) named by the
Python, Jinja and ansible-core that made it: every run compiled the same 350-odd texts again,
some 0.3 s of a cold deploy.yml. Only that text: it is in git, where no secret goes (ansible-core
tags each text with the file it came from). Text from an inventory, a vault, the extra-vars or a
role elsewhere can hold a value the operator typed, and is kept for the run only. The run that
compiled something new writes the file again when it ends (under a name of its own, then
renamed: a run beside it reads the old file or the new one, never half of one).

The cache is installed by the project's strategy plugin (ansible.cfg's default) and holds at
most MAX_ENTRIES code objects.
"""

from __future__ import annotations

import atexit
import hashlib
import marshal
import os
import sys
import threading
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.environment import TemplateExpression

try:  # ansible-core 2.19's (versions.toml): where its Jinja environment lives
    from ansible._internal._datatag._tags import Origin, VaultedValue
    from ansible._internal._templating import _jinja_bits
    from ansible.release import __version__ as ansible_version
except ImportError:  # another ansible-core: templates compile as they always did
    _jinja_bits = None

MAX_ENTRIES = 20_000
# The file never holds more: past it, a run writes only what it used.
MAX_KEPT_ENTRIES = 5_000
DISK_CACHE = Path(os.environ.get("OPENPOLICY_CACHE", Path.home() / ".cache" / "openpolicy-deploy")) / "jinja-code"
# This checkout (plugins/plugin_utils/ is two folders down): the folders whose text is kept.
PROJECT = Path(__file__).resolve().parents[2]
KEPT_FOLDERS = tuple(f"{PROJECT / folder}{os.sep}" for folder in ("roles", "playbooks"))

_code: dict[tuple, Any] = {}
# What the file held when the run began, and what this run compiled from the project's text.
_kept: dict[tuple, Any] = {}
_new: dict[tuple, Any] = {}
# The key of the expression whose code the next compile of a node tree is for, and whether
# that expression's text is kept on disk.
_pending = threading.local()
# Whether text from a file's path is kept (the path as Origin gives it; resolved once).
_path_kept: dict[str, bool] = {}
_state = {"file": None, "pid": None}


def _key(env: Any, kind: str, source: str, flag: bool) -> tuple:
    ctx = _jinja_bits._TemplateCompileContext.current(optional=True)
    return (
        kind,
        str(source),
        flag,
        tuple(getattr(env, name) for name in _jinja_bits._TEMPLATE_OVERRIDE_FIELD_NAMES),
        env.line_statement_prefix,
        env.line_comment_prefix,
        env.optimized,
        env.autoescape,
        ctx.escape_backslashes if ctx else None,
        _jinja_bits._TemplateConfig.allow_embedded_templates,
    )


def _store(key: tuple, code: Any, keep: bool = False) -> Any:
    if len(_code) >= MAX_ENTRIES:
        _code.clear()
    _code[key] = code
    if keep:
        _new[key] = code
    return code


def _lookup(key: tuple) -> Any:
    code = _code.get(key)
    if code is None and (code := _kept.get(key)) is not None:
        _code[key] = code
    return code


def kept_on_disk(source: Any) -> bool:
    """Whether the code of `source` may be written to disk: text ansible-core read from a file of
    this project's roles or playbooks, and not from a vault."""
    origin = Origin.get_tag(source)
    if origin is None or not origin.path or VaultedValue.is_tagged_on(source):
        return False
    kept = _path_kept.get(origin.path)
    if kept is None:
        kept = _path_kept[origin.path] = os.path.realpath(origin.path).startswith(KEPT_FOLDERS)
    return kept


def cache_file() -> Path:
    """The file of this Python, Jinja and ansible-core (whose code generators made the code)."""
    identity = repr((sys.version, marshal.version, jinja2.__version__, ansible_version)).encode()
    return DISK_CACHE / f"{hashlib.sha256(identity).hexdigest()[:16]}.marshal"


def _read(path: Path) -> dict:
    try:
        entries = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_new() -> None:
    """At the run's end, in the process that installed the cache (never a forked worker): the
    file again with what this run compiled, when it compiled anything new."""
    path = _state["file"]
    if not _new or path is None or os.getpid() != _state["pid"]:
        return
    entries = _read(path) | _new
    if len(entries) > MAX_KEPT_ENTRIES:
        entries = {key: code for key, code in _code.items() if key in entries}
    try:
        DISK_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            marshal.dump(entries, out)
        partial.replace(path)
    except (OSError, ValueError):
        pass  # kept for this run only: the next one compiles it again
    _new.clear()


def install() -> None:
    """Wrap the environment's compile and compile_expression, once per process."""
    if _jinja_bits is None:
        return
    env_class = _jinja_bits.AnsibleEnvironment
    if getattr(env_class.compile, "__wrapped__", None) is not None:
        return
    _state["file"], _state["pid"] = cache_file(), os.getpid()
    _kept.update(_read(_state["file"]))
    atexit.register(_write_new)
    compile_uncached = env_class.compile
    compile_expression_uncached = env_class.compile_expression

    # Jinja's signature, positional arguments included.
    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):  # noqa: PLR0917
        expression_key = getattr(_pending, "key", None)
        if expression_key is not None and isinstance(source, nodes.Template):
            # The node tree Jinja's compile_expression built for the expression being cached.
            _pending.key = None
            code = compile_uncached(self, source, name, filename, raw, defer_init)
            return _store(expression_key, code, getattr(_pending, "keep", False))
        if (
            not isinstance(source, str)
            or name is not None
            or filename is not None
            or raw
            or self._debuggable_template_source
        ):
            return compile_uncached(self, source, name, filename, raw, defer_init)
        key = _key(self, "template", source, defer_init)
        code = _lookup(key)
        if code is None:
            code = _store(key, compile_uncached(self, source, name, filename, raw, defer_init), kept_on_disk(source))
        return code

    def compile_expression(self, source, undefined_to_none=True):
        if self._debuggable_template_source:
            return compile_expression_uncached(self, source, undefined_to_none)
        key = _key(self, "expression", source, undefined_to_none)
        code = _lookup(key)
        if code is None:
            _pending.key, _pending.keep = key, kept_on_disk(source)
            try:
                return compile_expression_uncached(self, source, undefined_to_none)
            finally:
                _pending.key = None
        # What Jinja's compile_expression returns, from the kept code.
        template = self.template_class.from_code(self, code, self.make_globals(None), None)
        return TemplateExpression(template, undefined_to_none)

    compile.__wrapped__ = compile_uncached
    compile_expression.__wrapped__ = compile_expression_uncached
    env_class.compile = compile
    env_class.compile_expression = compile_expression
