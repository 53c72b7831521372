"""The derive expression language of table questions: derived columns as column arithmetic and a few ``.dt``
accessors, checked and costed before any work, never Python.

An expression is parsed with :mod:`ast` and refused (a :class:`~proximate.errors.TableInputError` naming the
column, the expression and the limit) when it is too long, too big, too deep, or holds anything but the allowed
forms. Constant subexpressions are folded here, under :data:`MAX_CONSTANT` and :data:`MAX_EXPONENT`, so an
expression such as ``10**10**10`` is refused on the client and never reaches a worker. :mod:`proximate.tables`
re-exports every public name.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from proximate.errors import TableInputError

#: ``.dt`` properties a derived column may read.
DT_PROPERTIES = frozenset({"year", "month", "day", "hour", "minute", "second", "dayofweek", "dayofyear", "date"})
#: ``.dt`` methods a derived column may call, without arguments.
DT_METHODS = frozenset({"total_seconds"})
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a**b,
}
_UNARY = {ast.USub: lambda a: -a, ast.UAdd: lambda a: a}


#: What an expression may cost, checked before any work: its length in characters, its syntax-tree nodes, the
#: nesting depth of that tree, the magnitude of any integer constant (literal or folded), and the magnitude of a
#: constant exponent. Python integers grow without bound (``10**10**10`` holds the GIL for hours), so constant
#: subexpressions are folded here under these limits and never reach a worker.
MAX_EXPRESSION_CHARS = 1_000
MAX_EXPRESSION_NODES = 200
MAX_EXPRESSION_DEPTH = 32
MAX_CONSTANT = 2**63
MAX_EXPONENT = 100
#: Derived columns one question may add.
MAX_DERIVED_COLUMNS = 64


def _refuse(name: str, text: str, why: str) -> TableInputError:
    shown = text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"
    return TableInputError(f"derived column {name!r}: {shown!r} {why}")


def _check_cost(name: str, text: Any) -> ast.Expression:
    """Parse an expression, refusing it (naming it and the limit) if it is too long, too big or too deep."""
    if not isinstance(text, str):
        raise TableInputError(f"derived column {name!r}: {text!r} is not an expression (give it as text)")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise _refuse(name, text, f"is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise _refuse(name, text, f"is not an expression ({exc.msg})") from None
    except (RecursionError, MemoryError):
        raise _refuse(name, text, f"is nested deeper than {MAX_EXPRESSION_DEPTH} levels") from None
    nodes = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:  # iterative: a recursive walk would itself overflow on the trees this refuses
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_EXPRESSION_NODES:
            raise _refuse(name, text, f"has more than {MAX_EXPRESSION_NODES} parts")
        if depth > MAX_EXPRESSION_DEPTH:
            raise _refuse(name, text, f"is nested deeper than {MAX_EXPRESSION_DEPTH} levels")
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and abs(node.value) > MAX_CONSTANT:
            raise _refuse(name, text, f"holds a number larger than 2**63 ({MAX_CONSTANT})")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _fold(name: str, text: str, node: ast.AST) -> int | float | None:
    """The value of a constant subexpression (``None`` if it reads a column), computed only when its cost is
    bounded: a constant exponent at most :data:`MAX_EXPONENT`, every integer at most :data:`MAX_CONSTANT`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        value = _fold(name, text, node.operand)
        return None if value is None else _UNARY[type(node.op)](value)
    if not (isinstance(node, ast.BinOp) and type(node.op) in _BINARY):
        return None
    left, right = _fold(name, text, node.left), _fold(name, text, node.right)
    if isinstance(node.op, ast.Pow) and right is not None and abs(right) > MAX_EXPONENT:
        raise _refuse(name, text, f"raises to the power {_short(right)}, beyond the limit of {MAX_EXPONENT}")
    if left is None or right is None:
        return None
    if isinstance(left, int) and isinstance(right, int):
        # Refuse before computing: a power has about right * log2|left| bits, a product the sum of both sizes.
        bits = 0
        if isinstance(node.op, ast.Pow) and right > 0 and left:
            bits = (abs(left).bit_length() - 1) * right
        elif isinstance(node.op, ast.Mult):
            bits = abs(left).bit_length() + abs(right).bit_length() - 1
        if bits > MAX_CONSTANT.bit_length():
            raise _refuse(name, text, f"computes {ast.unparse(node)!r}, larger than 2**63 ({MAX_CONSTANT})")
    try:
        value = _BINARY[type(node.op)](left, right)
    except ZeroDivisionError:
        raise _refuse(name, text, f"divides by zero in {ast.unparse(node)!r}") from None
    except OverflowError:
        raise _refuse(name, text, f"computes a number too large for a float in {ast.unparse(node)!r}") from None
    if isinstance(value, complex):
        raise _refuse(name, text, f"computes a complex number in {ast.unparse(node)!r}")
    if isinstance(value, int) and abs(value) > MAX_CONSTANT:
        raise _refuse(name, text, f"computes a number larger than 2**63 ({MAX_CONSTANT})")
    return value


def _short(value: int | float) -> str:
    shown = repr(value)
    return shown if len(shown) <= 30 else f"{shown[:20]}...({len(shown)} digits)"


def _compile(name: str, text: str) -> Callable[[pd.DataFrame], Any]:
    """Check an expression and turn it into a function of a frame; refuse anything but the allowed forms, and any
    expression whose cost is not bounded (see :data:`MAX_EXPRESSION_CHARS` and the limits beside it)."""
    tree = _check_cost(name, text)

    def build(node: ast.AST) -> Callable[[pd.DataFrame], Any]:
        constant = _fold(name, text, node)
        if constant is not None:
            return lambda df: constant
        if isinstance(node, ast.Name):
            column = node.id
            return lambda df: df[column]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op, left, right = _BINARY[type(node.op)], build(node.left), build(node.right)
            return lambda df: op(left(df), right(df))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            op, operand = _UNARY[type(node.op)], build(node.operand)
            return lambda df: op(operand(df))
        if isinstance(node, ast.Attribute) and _is_dt(node.value) and node.attr in DT_PROPERTIES:
            inner, attr = build(node.value.value), node.attr
            return lambda df: getattr(inner(df).dt, attr)
        if (
            isinstance(node, ast.Call)
            and not node.args
            and not node.keywords
            and isinstance(node.func, ast.Attribute)
            and _is_dt(node.func.value)
            and node.func.attr in DT_METHODS
        ):
            inner, method = build(node.func.value.value), node.func.attr
            return lambda df: getattr(inner(df).dt, method)()
        allowed = "column names, numbers, + - * / // % **, .dt." + ", .dt.".join(sorted(DT_PROPERTIES))
        raise TableInputError(
            f"derived column {name!r}: {ast.unparse(node)!r} is not allowed in {text!r}; use {allowed}, "
            f"or .dt.total_seconds()"
        )

    return build(tree.body)


def _is_dt(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "dt"


def _names(text: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}


@dataclass(frozen=True)
class Derivations:
    """Checked derived columns, in order (a later one may use an earlier one)."""

    expressions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.expressions) > MAX_DERIVED_COLUMNS:
            raise TableInputError(
                f"{len(self.expressions)} derived columns: at most {MAX_DERIVED_COLUMNS} are allowed in one question"
            )
        for name, text in self.expressions.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise TableInputError(f"derived column name {name!r} is not an identifier")
            _compile(name, text)

    def inputs(self) -> set[str]:
        """The table columns the expressions read (derived names excluded)."""
        needed: set[str] = set()
        for name, text in self.expressions.items():
            needed |= _names(text) - set(self.expressions) - {name}
        return needed

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        if not self.expressions:
            return df
        df = df.copy()
        for name, text in self.expressions.items():
            df[name] = _compile(name, text)(df)
        return df


def derive_columns(df: pd.DataFrame, expressions: Mapping[str, str]) -> pd.DataFrame:
    """``df`` with the derived columns added (each expression checked first).

    Args:
        df: The frame (a partition of a table) to add columns to; it is not changed.
        expressions: Column name to expression, in order (a later one may use an earlier one).

    Returns:
        A copy of ``df`` with one more column per expression.

    Raises:
        TableInputError: An expression that is not allowed or costs too much, naming it and the limit.

    Examples:
        >>> derive_columns(pd.DataFrame({"a": [1, 2]}), {"b": "a * 10", "c": "b + 1"})["c"].tolist()
        [11, 21]
    """
    return Derivations(dict(expressions)).apply(df)
