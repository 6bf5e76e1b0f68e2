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
globals and variables, exactly as Jinja's `from_string` does. Nothing is kept on disk: a
template's text can hold a value the operator typed.

The cache is installed by the project's strategy plugin (ansible.cfg's default) and holds at
most MAX_ENTRIES code objects.
"""

from __future__ import annotations

import threading
from typing import Any

from jinja2 import nodes
from jinja2.environment import TemplateExpression

try:  # ansible-core 2.19's (versions.toml): where its Jinja environment lives
    from ansible._internal._templating import _jinja_bits
except ImportError:  # another ansible-core: templates compile as they always did
    _jinja_bits = None

MAX_ENTRIES = 20_000

_code: dict[tuple, Any] = {}
# The key of the expression whose code the next compile of a node tree is for.
_pending = threading.local()


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


def _store(key: tuple, code: Any) -> Any:
    if len(_code) >= MAX_ENTRIES:
        _code.clear()
    _code[key] = code
    return code


def install() -> None:
    """Wrap the environment's compile and compile_expression, once per process."""
    if _jinja_bits is None:
        return
    env_class = _jinja_bits.AnsibleEnvironment
    if getattr(env_class.compile, "__wrapped__", None) is not None:
        return
    compile_uncached = env_class.compile
    compile_expression_uncached = env_class.compile_expression

    # Jinja's signature, positional arguments included.
    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):  # noqa: PLR0917
        expression_key = getattr(_pending, "key", None)
        if expression_key is not None and isinstance(source, nodes.Template):
            # The node tree Jinja's compile_expression built for the expression being cached.
            _pending.key = None
            return _store(expression_key, compile_uncached(self, source, name, filename, raw, defer_init))
        if (
            not isinstance(source, str)
            or name is not None
            or filename is not None
            or raw
            or self._debuggable_template_source
        ):
            return compile_uncached(self, source, name, filename, raw, defer_init)
        key = _key(self, "template", source, defer_init)
        code = _code.get(key)
        if code is None:
            code = _store(key, compile_uncached(self, source, name, filename, raw, defer_init))
        return code

    def compile_expression(self, source, undefined_to_none=True):
        if self._debuggable_template_source:
            return compile_expression_uncached(self, source, undefined_to_none)
        key = _key(self, "expression", source, undefined_to_none)
        code = _code.get(key)
        if code is None:
            _pending.key = key
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
