"""Mail templates: Jinja2 syntax, rendered in a sandbox that reads nothing but the send's
variables, at a bounded cost (docs/sending.md "Templates").

What a template can do is checked twice:
- when it is stored (`check`): the syntax, and a list of constructs it may use. No macros,
  calls, imports, includes, `self` or `_private` names; filters and tests from a short list.
- when it is rendered (`render`): Jinja2's `ImmutableSandboxedEnvironment` with no globals
  (no `range`, `cycler`, `lipsum`...), `StrictUndefined` (a variable the request lacks is an
  error, not an empty string) and no attribute of any object (a template reads keys of its
  variables; `user.name` is `user["name"]`). Every loop step, operator and filter charges a
  budget (steps, characters produced, wall time) and the output has a size cap, so a template
  cannot make the API spin or allocate without limit.

Autoescape is on for `html` and off for `subject` and `text`.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import markupsafe
from jinja2 import Environment, StrictUndefined, TemplateError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import TESTS
from jinja2.visitor import NodeTransformer

from services.errors import ValidationFailed

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
# Each of subject, text and html as stored (characters).
MAX_SOURCE_CHARS = 256 * 1024
# Each rendered part, and any one string or list a template builds while rendering.
MAX_OUTPUT_CHARS = 1_000_000
# Loop steps, operators and filters of one render.
MAX_STEPS = 200_000
# Characters produced by operators and filters in one render (a loop that builds a big
# string again and again stops here even when each string is under MAX_OUTPUT_CHARS).
MAX_WORK_CHARS = 20_000_000
MAX_RENDER_S = 1.0
# Bits of any whole number an operator may produce: `**` and `*` are charged by their operands'
# bit lengths before Python computes them (bits(base) * exponent for `**`).
MAX_INT_BITS = 4096
# A template's size once parsed: lexer tokens (counted before parsing, which costs more) and
# AST nodes (counted before compiling, which costs most: about 0.1 ms a node).
MAX_TOKENS = 30_000
MAX_NODES = 5_000
# Compiled templates kept per process, by a hash of their source.
COMPILED_CACHE_SIZE = 256

_SAFE_FILTERS = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "replace",
    "reverse",
    "round",
    "sort",
    "string",
    "striptags",
    "sum",
    "title",
    "trim",
    "truncate",
    "unique",
    "upper",
    "urlencode",
    "wordcount",
)
_SAFE_TESTS = (
    "boolean",
    "defined",
    "divisibleby",
    "eq",
    "equalto",
    "even",
    "false",
    "float",
    "ge",
    "greaterthan",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lessthan",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sequence",
    "string",
    "true",
    "undefined",
    "upper",
)
_LOOP_ATTRS = frozenset(
    (
        "index",
        "index0",
        "revindex",
        "revindex0",
        "first",
        "last",
        "length",
        "previtem",
        "nextitem",
        "depth",
        "depth0",
    )
)
# Names the Jinja2 compiler gives a meaning of its own; a template has only its variables.
_RESERVED_NAMES = frozenset({"self", "caller", "varargs", "kwargs", "super"})
_FORBIDDEN: dict[type[nodes.Node], str] = {
    nodes.Macro: "macros",
    nodes.CallBlock: "call blocks",
    nodes.Call: "function and method calls",
    nodes.Import: "imports",
    nodes.FromImport: "imports",
    nodes.Include: "includes",
    nodes.Extends: "extends",
    nodes.Block: "blocks",
    nodes.EvalContextModifier: "autoescape blocks",
    nodes.ScopedEvalContextModifier: "autoescape blocks",
}
_SCALARS = (str, int, float, bool, type(None))
_PRINTABLE = (*_SCALARS, markupsafe.Markup)


class TemplateInvalid(ValidationFailed):
    """The template cannot be used."""

    code = "template_invalid"


class TemplateVariableMissing(ValidationFailed):
    """The template uses a variable the request does not give."""

    code = "template_variable_missing"


class _OverBudget(Exception):
    """A render went over one of its limits; the message says which."""


@dataclass
class _Budget:
    deadline: float
    steps: int = 0
    work: int = 0

    def charge(self, chars: int = 0) -> None:
        self.steps += 1
        self.work += chars
        if self.steps > MAX_STEPS:
            raise _OverBudget(f"it takes more than {MAX_STEPS} steps (loops, operators, filters)")
        if self.work > MAX_WORK_CHARS:
            raise _OverBudget(f"it builds more than {MAX_WORK_CHARS} characters while rendering")
        if chars > MAX_OUTPUT_CHARS:
            raise _OverBudget(f"it builds a value longer than {MAX_OUTPUT_CHARS} characters")
        if time.monotonic() > self.deadline:
            raise _OverBudget(f"it takes more than {MAX_RENDER_S:g} s to render")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "template_budget", default=None
)


def _current() -> _Budget:
    # Jinja2 folds constant expressions while compiling: those run here without a render's
    # budget, under a fresh one of their own.
    return _budget.get() or _Budget(time.monotonic() + MAX_RENDER_S)


def _charge(chars: int = 0) -> None:
    _current().charge(chars)


def _spend(work: int) -> None:
    """Work done on values already built (comparing, sorting, walking): the render's budget of
    steps, characters and time, with no per-value cap."""
    budget = _current()
    budget.work += work
    budget.charge()


def _size(value: Any) -> int:
    """Characters (or items) of a value that operators and filters produce."""
    if isinstance(value, str | list | tuple | dict):
        return len(value)
    return 0


def _printable_size(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """A bound on len(str(value)), computed without building it; stops past `limit`."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v) + 4
        elif isinstance(v, dict):
            total += 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            total += 2 + 2 * len(v)
            stack.extend(v)
        else:
            total += 32
        if total > limit:
            raise _OverBudget(f"it prints a value longer than {limit} characters")
    return total


def _finalize(value: Any) -> Any:
    """Every `{{ ... }}`: a list or dict is printed only when its text stays under the cap."""
    if not isinstance(value, _SCALARS):
        _charge(_printable_size(value))
    return value


def _is_nested(value: Any) -> bool:
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list | tuple) and any(
        isinstance(v, list | tuple | dict) for v in value
    )


def _literal(value: Any) -> Any:
    """A list, tuple or dict written in the template holds scalars or flat lists only: nesting
    without bound would let a comparison or a print walk an exponential structure."""
    items = value.values() if isinstance(value, dict) else value
    if any(_is_nested(v) for v in items):
        raise _OverBudget("a list or dict written in the template nests more than two levels")
    _charge(len(value))
    return value


def _iterate(value: Any) -> Iterator[Any]:
    """Each step of a `for` loop charges the budget."""
    if isinstance(value, dict):
        value = list(value)
    for item in value:
        _charge()
        yield item


def _concat(values: list[Any], autoescape: bool) -> str:
    """`a ~ b`: the same join Jinja2 makes, with the result's length checked first."""
    parts = []
    for v in values:
        if not isinstance(v, _PRINTABLE):
            _printable_size(v)
        parts.append(markupsafe.escape(v) if autoescape else markupsafe.soft_str(v))
    _charge(sum(len(p) for p in parts))
    joined = "".join(parts)
    # Every part went through escape() above: the joined text is safe as it is.
    return markupsafe.Markup(joined) if autoescape else joined  # noqa: S704


def _weight(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """Nested element count: characters of texts plus items of lists and dicts, all the way
    down, counting a list that appears n times n times (printing or comparing it walks it n
    times). Stops with _OverBudget past `limit`, so the walk itself costs at most `limit`."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v) + 1
        elif isinstance(v, dict):
            total += 1 + len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            total += 1 + len(v)
            stack.extend(v)
        else:
            total += 1
        if total > limit:
            raise _OverBudget(f"it builds a value of more than {limit} items or characters")
    return total


def _int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _too_big_number() -> _OverBudget:
    return _OverBudget(f"it computes a number longer than {MAX_INT_BITS} bits")


def _check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse the operations whose result would be huge, from the size of their operands,
    before Python computes them."""
    if op == "*":
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, str | list | tuple) and isinstance(n, int):
            # A list of lists multiplied: every copy of every nested item counts.
            if n > 0 and _weight(seq) * n > MAX_OUTPUT_CHARS:
                raise _OverBudget(f"it builds a value longer than {MAX_OUTPUT_CHARS} characters")
        elif isinstance(seq, str | list | tuple) or isinstance(n, str | list | tuple):
            raise _OverBudget("a text or list can be multiplied by a whole number only")
        elif _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise _too_big_number()
    elif op == "**":
        if isinstance(right, int | float) and abs(right) > 64 and abs(left) > 1:
            raise _OverBudget("an exponent over 64 is not allowed")
        # bits(base ** exp) is at most bits(base) * exp: charged before it is computed.
        if isinstance(right, int) and right > 0 and _int_bits(left) * right > MAX_INT_BITS:
            raise _too_big_number()
    elif op == "%" and isinstance(left, str):
        raise _OverBudget("`%` formatting of text is not allowed; use `~` and filters")
    elif op == "+" and isinstance(left, str | list | tuple):
        if _weight(left) + _weight(right) > MAX_OUTPUT_CHARS:
            raise _OverBudget(f"it builds a value longer than {MAX_OUTPUT_CHARS} characters")
    elif op in ("+", "-") and max(_int_bits(left), _int_bits(right)) >= MAX_INT_BITS:
        raise _too_big_number()


def _compared(value: Any) -> Any:
    """Each operand of a comparison (`==`, `<`, `in`, `is eq`...): comparing walks the nested
    items, so their count is charged before the comparison runs."""
    if isinstance(value, str | list | tuple | dict):
        _spend(_weight(value))
    return value


# Filters that make text of their first argument (str() of a list prints every nested item).
_TEXT_FILTERS = frozenset(
    (
        "capitalize",
        "e",
        "escape",
        "float",
        "int",
        "lower",
        "replace",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "wordcount",
    )
)
# Filters that compare items with each other: about n log n comparisons of nested items.
_SORTING_FILTERS = frozenset(("sort", "unique", "max", "min"))


def _check_sum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`sum` adds numbers only: summing lists or texts copies the growing total at each step."""
    items = args[0] if args else ()
    if isinstance(items, dict):
        items = list(items)
    if not isinstance(items, list | tuple | str):
        raise _OverBudget("sum takes a list of numbers")
    attribute = kwargs.get("attribute", args[1] if len(args) > 1 else None)
    start = kwargs.get("start", args[2] if len(args) > 2 else 0)
    if attribute is not None:
        getter = make_attrgetter(_ENVS[False], attribute)
        items = [getter(i) for i in items]
    numbers = (int, float)
    if not isinstance(start, numbers) or any(
        not isinstance(i, numbers) or _int_bits(i) >= MAX_INT_BITS for i in items
    ):
        raise _OverBudget("sum adds numbers only")


def _check_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Charge a filter by the size of what it is given, before it runs, and bound the filters
    whose output can be much larger than their input."""
    args = tuple(a for a in args if not isinstance(a, EvalContext | Context | Environment))
    # Every argument is charged: text filters copy their arguments, `join` repeats its
    # separator, and any filter may compare or print what it is given.
    for a in (*args[1:], *kwargs.values()):
        if isinstance(a, str | list | tuple | dict):
            _spend(_weight(a))
    subject = args[0] if args else None
    if name in _TEXT_FILTERS and not isinstance(subject, _SCALARS):
        _charge(_printable_size(subject))
    elif isinstance(subject, str | list | tuple | dict):
        size = _weight(subject)
        if name in _SORTING_FILTERS:
            size *= max(1, len(subject)).bit_length()
        _spend(size)
    if name == "sum":
        _check_sum(args, kwargs)
    elif name == "replace" and len(args) >= 3:
        s, old, new = (markupsafe.soft_str(a) for a in args[:3])
        hits = s.count(old) if old else len(s) + 1
        if len(s) + hits * max(0, len(new) - len(old)) > MAX_OUTPUT_CHARS:
            raise _OverBudget(f"it builds a value longer than {MAX_OUTPUT_CHARS} characters")
    elif name == "join" and args and isinstance(args[0], list | tuple):
        items = list(args[0])
        sep = markupsafe.soft_str(kwargs.get("d", args[1] if len(args) > 1 else ""))
        attribute = kwargs.get("attribute", args[2] if len(args) > 2 else None)
        if attribute is not None:
            getter = make_attrgetter(_ENVS[False], attribute)
            items = [getter(i) for i in items]
        # An undefined item is let through: the join itself then names it (422).
        if any(not isinstance(i, (*_PRINTABLE, Undefined)) for i in items):
            raise _OverBudget("join takes a list of texts or numbers")
        _charge(sum(len(markupsafe.soft_str(i)) for i in items if isinstance(i, _PRINTABLE)))
        _charge(len(sep) * len(items))


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps Jinja2's pass_eval_context marker
    def run(*args: Any, **kwargs: Any) -> Any:
        _check_filter(name, args, kwargs)
        result = func(*args, **kwargs)
        if isinstance(result, Iterator):
            result = list(result)
        _charge(_size(result))
        return result

    return run


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox: no globals, no attributes, every operator intercepted and charged."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"-", "+"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Only `loop.index` and friends: a template reads its variables by key, nothing else.
        return isinstance(obj, LoopContext) and attr in _LOOP_ATTRS

    def is_safe_callable(self, obj: Any) -> bool:
        return False

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        _check_binop(op, left, right)
        result = super().call_binop(context, op, left, right)
        _charge(_size(result))
        return result

    def call_unop(self, context: Any, op: str, arg: Any) -> Any:
        _charge()
        return super().call_unop(context, op, arg)


def _environment(autoescape: bool) -> _Environment:
    env = _Environment(
        autoescape=autoescape,
        undefined=StrictUndefined,
        finalize=_finalize,
        auto_reload=False,
        cache_size=0,
        keep_trailing_newline=True,
    )
    env.globals.clear()
    env.filters = {n: _bounded_filter(n, FILTERS[n]) for n in _SAFE_FILTERS}
    env.filters["_literal"] = _literal
    env.filters["_iterate"] = _iterate
    env.filters["_concat"] = _concat
    env.filters["_compared"] = _compared
    env.tests = {n: TESTS[n] for n in _SAFE_TESTS}
    return env


_ENVS = {True: _environment(True), False: _environment(False)}


def _filter(node: nodes.Expr, name: str, *args: nodes.Expr) -> nodes.Filter:
    return nodes.Filter(node, name, list(args), [], None, None, lineno=node.lineno)


def _check_node(node: nodes.Node) -> None:
    for kind, what in _FORBIDDEN.items():
        if isinstance(node, kind):
            raise TemplateInvalid(f"Templates cannot use {what} (line {node.lineno}).")
    if isinstance(node, nodes.Name) and (node.name in _RESERVED_NAMES or node.name[:1] == "_"):
        raise TemplateInvalid(
            f"A template reads only its variables: {node.name!r} is not available "
            f"(line {node.lineno})."
        )
    if isinstance(node, nodes.Getattr) and node.attr[:1] == "_":
        raise TemplateInvalid(
            f"A template reads only its variables: attribute {node.attr!r} is not available "
            f"(line {node.lineno})."
        )
    key = (
        node.arg.value
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
        else None
    )
    if isinstance(key, str) and key[:1] == "_":
        raise TemplateInvalid(
            f"A template reads only its variables: {key!r} is not available (line {node.lineno})."
        )
    if isinstance(node, nodes.Filter) and (node.name[:1] == "_" or node.name not in _SAFE_FILTERS):
        raise TemplateInvalid(
            f"Unknown or unavailable filter {node.name!r} (line {node.lineno}); "
            f"available: {', '.join(_SAFE_FILTERS)}."
        )
    if isinstance(node, nodes.Test) and node.name not in _SAFE_TESTS:
        raise TemplateInvalid(
            f"Unknown or unavailable test {node.name!r} (line {node.lineno}); "
            f"available: {', '.join(_SAFE_TESTS)}."
        )


class _Bounder(NodeTransformer):
    """Route loops, `~` and literals through the charging filters (after _check_node, so a
    template itself cannot name them)."""

    def __init__(self, autoescape: bool) -> None:
        self.autoescape = autoescape

    def visit_For(self, node: nodes.For) -> nodes.Node:
        loop: Any = self.generic_visit(node)
        loop.iter = _filter(loop.iter, "_iterate")
        return loop  # type: ignore[no-any-return]

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        concat: Any = self.generic_visit(node)
        items = nodes.List(concat.nodes, lineno=node.lineno)
        return _filter(items, "_concat", nodes.Const(self.autoescape))

    def _literal(self, node: nodes.Expr) -> nodes.Node:
        literal: Any = self.generic_visit(node)
        return _filter(literal, "_literal")

    visit_List = visit_Dict = _literal

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        compare: Any = self.generic_visit(node)
        compare.expr = _filter(compare.expr, "_compared")
        for operand in compare.ops:
            operand.expr = _filter(operand.expr, "_compared")
        return compare  # type: ignore[no-any-return]

    def visit_Test(self, node: nodes.Test) -> nodes.Node:
        test: Any = self.generic_visit(node)
        test.node = _filter(test.node, "_compared")
        test.args = [_filter(a, "_compared") for a in test.args]
        return test  # type: ignore[no-any-return]

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        if node.ctx != "load":  # `{% for a, b in ... %}`: names, not a value
            return self.generic_visit(node)
        return self._literal(node)


def _syntax_error(part: str, exc: TemplateError) -> TemplateInvalid:
    lineno = getattr(exc, "lineno", None)
    line = f" (line {lineno})" if lineno else ""
    return TemplateInvalid(f"The {part} template has a syntax error{line}: {exc.message}")


def _parse(env: _Environment, source: str, part: str) -> nodes.Template:
    """The AST, refused before the costly steps: tokens are counted while lexing (parsing
    costs more), nodes before compiling (which costs most)."""
    try:
        for count, _token in enumerate(env.lex(source), 1):
            if count > MAX_TOKENS:
                raise TemplateInvalid(
                    f"The {part} template is too long: more than {MAX_TOKENS} tokens."
                )
        tree = env.parse(source)
    except TemplateError as exc:
        raise _syntax_error(part, exc) from None
    except RecursionError:
        raise TemplateInvalid(f"The {part} template nests too deeply.") from None
    found: list[nodes.Node] = [tree]
    for node in tree.find_all(nodes.Node):
        found.append(node)
        if len(found) > MAX_NODES:
            raise TemplateInvalid(
                f"The {part} template is too long: more than {MAX_NODES} expressions and tags."
            )
    for node in found:
        _check_node(node)
    return tree


_compiled: OrderedDict[tuple[bool, bytes], Any] = OrderedDict()


def _compile(source: str, autoescape: bool, part: str) -> Any:
    """The compiled template, from the cache when this source was compiled before (a send
    compiles its template once per process, not once per send)."""
    key = (autoescape, hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest())
    found = _compiled.get(key)
    if found is not None:
        _compiled.move_to_end(key)
        return found
    env = _ENVS[autoescape]
    tree = _Bounder(autoescape).visit(_parse(env, source, part))
    try:
        template = env.from_string(tree)
    except TemplateError as exc:
        raise TemplateInvalid(f"The {part} template cannot be compiled: {exc.message}") from None
    except RecursionError:
        raise TemplateInvalid(f"The {part} template nests too deeply.") from None
    _compiled[key] = template
    while len(_compiled) > COMPILED_CACHE_SIZE:
        _compiled.popitem(last=False)
    return template


@dataclass(frozen=True)
class Parts:
    subject: str
    text: str
    html: str | None


def check(parts: Parts) -> None:
    """Refuse a template that cannot be rendered (syntax, forbidden constructs, size) or that
    goes over a limit before it reads any variable (a trial render without variables): 422."""
    for source, autoescape, part in _sources(parts):
        _compile(source, autoescape, part)
    for source, autoescape, part in _sources(parts):
        _render_one(source, autoescape, part, {}, trial=True)


def _sources(parts: Parts) -> list[tuple[str, bool, str]]:
    found = [(parts.subject, False, "subject"), (parts.text, False, "text")]
    if parts.html is not None:
        found.append((parts.html, True, "html"))
    return found


def _render_one(
    source: str, autoescape: bool, part: str, variables: dict[str, Any], *, trial: bool = False
) -> str:
    """One part rendered. A `trial` render (no variables, at save) stops quietly where the
    template needs a variable; only a limit or a reach outside the sandbox refuses it."""
    template = _compile(source, autoescape, part)
    token = _budget.set(_Budget(time.monotonic() + MAX_RENDER_S))
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise _OverBudget(f"its {part} is longer than {MAX_OUTPUT_CHARS} characters")
            _charge()
            out.append(chunk)
    except UndefinedError as exc:
        if isinstance(exc, SecurityError):
            raise _refused(part, "it reads something other than its variables") from None
        if trial:
            return ""
        raise TemplateVariableMissing(
            f"The {part} template uses a variable the request does not give: {exc.message}."
        ) from None
    except SecurityError:
        raise _refused(part, "it reads something other than its variables") from None
    except _OverBudget as exc:
        raise _refused(part, str(exc)) from None
    except RecursionError:
        raise _refused(part, "it nests too deeply") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        if trial:
            return ""
        # The sentence is ours; Python's own message may quote the variables' values.
        raise _refused(part, f"it fails on these variables ({type(exc).__name__})") from None
    finally:
        _budget.reset(token)
    return "".join(out)


def _refused(part: str, why: str) -> TemplateInvalid:
    return TemplateInvalid(f"The {part} template cannot be rendered: {why}.")


def render(parts: Parts, variables: dict[str, Any]) -> Parts:
    """Render subject, text and html with the variables; 422 with a sentence otherwise."""
    subject = _render_one(parts.subject, False, "subject", variables)
    if "\r" in subject or "\n" in subject:
        raise TemplateInvalid("The rendered subject contains a line break.")
    if len(subject) > 998:
        raise TemplateInvalid("The rendered subject is longer than 998 characters.")
    text = _render_one(parts.text, False, "text", variables)
    html = None
    if parts.html is not None:
        html = _render_one(parts.html, True, "html", variables)
    return Parts(subject=subject, text=text, html=html)
