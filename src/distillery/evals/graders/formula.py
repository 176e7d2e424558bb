"""The ``calculate_output`` formula of a ``multi`` grader, parsed and evaluated safely.

A formula combines the sub-graders' scores by name, as OpenAI's RFT guide writes them
(``"(name + email) / 2"``, ``"0.5 * compliant + 0.5 * min(format, 1)"``):

- numbers (``2``, ``0.5``, ``1e-3``) and the sub-graders' names;
- ``+ - * /``, power as ``^`` (OpenAI's spelling) or ``**``, unary ``-`` and ``+``, parentheses;
  ``^`` binds like ``**`` (tighter than ``*``, right-associative, ``-a^2`` is ``-(a^2)``);
- the functions ``min`` and ``max`` (one or more arguments), ``abs``, ``floor``, ``ceil``,
  ``exp``, ``sqrt`` (one argument) and ``log`` (natural; ``log(x, base)`` too).

The text is parsed with Python's ``ast`` module and every node is checked against that list;
nothing is ever passed to ``eval``. A name in call position is a function, anywhere else a
sub-grader, so a sub-grader may even be called ``max``. Numbers are floats, so ``9^9^9``
overflows (``OverflowError``) instead of computing a huge integer.

``compile_formula`` raises ``FormulaError`` (a ``ValueError``) for a formula that does not parse,
uses anything else, or names an unknown sub-grader; ``Formula.evaluate`` raises
``ArithmeticError`` or ``ValueError`` for a value it cannot compute (division by zero, ``sqrt`` of
a negative number, a result that is not a finite real number).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_FORMULA_CHARS = 2000
MAX_NODES = 1000  # ast nodes, operators and name contexts included

Values = Mapping[str, float]
Node = Callable[[Values], float]


class FormulaError(ValueError):
    """A formula that cannot be used: the message says why."""


def _min(*args: float) -> float:
    return min(args)


def _max(*args: float) -> float:
    return max(args)


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


# name: (implementation, fewest arguments, most arguments or None for any number)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    "min": (_min, 1, None),
    "max": (_max, 1, None),
    "abs": (abs, 1, 1),
    "floor": (lambda x: float(math.floor(x)), 1, 1),
    "ceil": (lambda x: float(math.ceil(x)), 1, 1),
    "exp": (math.exp, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (_log, 1, 2),
}

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: math.pow,  # real powers only: ValueError for (-8) ^ 0.5, OverflowError when huge
}


@dataclass(frozen=True)
class Formula:
    text: str
    variables: frozenset[str]  # the sub-grader names it uses
    _root: Node

    def evaluate(self, values: Values) -> float:
        """The formula's value for the sub-graders' scores ``values`` (every name it uses)."""
        try:
            result = self._root(values)
        except RecursionError:
            raise ValueError("the formula is nested too deeply") from None
        if isinstance(result, complex) or not math.isfinite(result):
            raise ValueError(f"the result {result} is not a finite real number")
        return float(result)


def compile_formula(text: str, known: set[str] | frozenset[str]) -> Formula:
    """Parse ``text`` into a ``Formula`` over the names ``known``; ``FormulaError`` if unusable."""
    if not text.strip():
        raise FormulaError("the formula is empty")
    if len(text) > MAX_FORMULA_CHARS:
        raise FormulaError(f"the formula is longer than {MAX_FORMULA_CHARS} characters")
    try:
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
        raise FormulaError(f"the formula does not parse: {detail}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise FormulaError(f"the formula has more than {MAX_NODES} parts")
    used: set[str] = set()
    try:
        root = _compile(tree.body, known, used)
    except RecursionError:
        raise FormulaError("the formula is nested too deeply") from None
    return Formula(text=text, variables=frozenset(used), _root=root)


def _compile(node: ast.expr, known: set[str] | frozenset[str], used: set[str]) -> Node:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FormulaError(f"{value!r} is not a number")
        number = float(value)
        return lambda _values: number
    if isinstance(node, ast.Name):
        name = node.id
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise FormulaError(f"unknown variable {name!r}; the graders are: {listed}")
        used.add(name)
        return lambda values: values[name]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _compile(node.operand, known, used)
        if isinstance(node.op, ast.USub):
            return lambda values: -operand(values)
        return operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op = _BINARY[type(node.op)]
        left = _compile(node.left, known, used)
        right = _compile(node.right, known, used)
        return lambda values: op(left(values), right(values))
    if isinstance(node, ast.Call):
        return _compile_call(node, known, used)
    raise FormulaError(
        f"{_describe(node)} is not allowed in a formula (use numbers, grader names, + - * / ^, "
        f"parentheses and {', '.join(FUNCTIONS)})"
    )


def _compile_call(node: ast.Call, known: set[str] | frozenset[str], used: set[str]) -> Node:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        listed = ", ".join(FUNCTIONS)
        raise FormulaError(f"{_describe(node.func)} is not a function; use one of {listed}")
    name = node.func.id
    function, fewest, most = FUNCTIONS[name]
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise FormulaError(f"{name}() takes plain arguments only")
    count = len(node.args)
    if count < fewest or (most is not None and count > most):
        wanted = (
            f"{fewest}" if fewest == most else f"{fewest} or more" if most is None else "1 or 2"
        )
        raise FormulaError(f"{name}() takes {wanted} argument(s), got {count}")
    args = [_compile(a, known, used) for a in node.args]
    return lambda values: float(function(*(a(values) for a in args)))


def _describe(node: ast.AST) -> str:
    try:
        return repr(ast.unparse(node))
    except Exception:  # pragma: no cover - unparse handles every expression node
        return type(node).__name__
