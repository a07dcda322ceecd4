"""The built-in tools: `final_answer` (ends the episode) and `calculator` (safe arithmetic).

The calculator walks the expression's syntax tree and evaluates only a whitelist of nodes, so no
name lookup, attribute access, call of an arbitrary function or import can ever run; integer powers
and products are sized before they are computed, so `9**9**9` is refused instead of hanging the loop.
"""
from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from bon.tools.base import Tool, ToolContext, ToolResult

MAX_EXPRESSION_CHARS = 1000
MAX_EXPONENT = 1000  # |exponent| of any power
MAX_INT_BITS = 4000  # about 1,200 decimal digits: far past any real answer, far below a slow one

BAD_EXPRESSION = "bad_expression"  # not arithmetic, or a construct we do not evaluate
TOO_LARGE = "too_large"
MATH_ERROR = "math_error"  # division by zero, domain errors, float overflow

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "abs": abs, "round": round,
    "floor": math.floor, "ceil": math.ceil,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


class Refused(Exception):
    """The expression cannot be evaluated safely; `kind` is the tool result's error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _bits(x: int | float) -> int:
    return x.bit_length() if isinstance(x, int) else 0


def _check_size(op: type, left: int | float, right: int | float) -> None:
    """Refuse an operation whose integer result would be too large, before computing it."""
    if op is ast.Pow:
        if abs(right) > MAX_EXPONENT:
            raise Refused(TOO_LARGE, f"exponent {right} exceeds the limit of {MAX_EXPONENT}")
        if isinstance(left, int) and isinstance(right, int) and right > 0 and _bits(left) * right > MAX_INT_BITS:
            raise Refused(TOO_LARGE, f"the result would have more than {MAX_INT_BITS} bits")
    elif op is ast.Mult and _bits(left) + _bits(right) > MAX_INT_BITS:
        raise Refused(TOO_LARGE, f"the result would have more than {MAX_INT_BITS} bits")


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        raise Refused(BAD_EXPRESSION, f"only numbers are allowed, not {node.value!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        _check_size(type(node.op), left, right)
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex):  # e.g. (-8) ** (1/3)
            raise Refused(MATH_ERROR, "the result is not a real number")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
            and not node.keywords):
        return FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in FUNCTIONS:
        raise Refused(BAD_EXPRESSION, f"unknown function {node.func.id!r}; allowed: {', '.join(FUNCTIONS)}")
    if isinstance(node, ast.Name):
        raise Refused(BAD_EXPRESSION, f"unknown name {node.id!r}; allowed functions: "
                      f"{', '.join(FUNCTIONS)}; constants: {', '.join(CONSTANTS)}")
    raise Refused(BAD_EXPRESSION, f"{type(node).__name__} is not allowed; use numbers, + - * / // % **, "
                  f"parentheses and {', '.join(FUNCTIONS)}")


def evaluate(expression: str) -> int | float:
    """Evaluate arithmetic; raise `Refused` for anything else or anything too large."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise Refused(TOO_LARGE, f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        value = _eval(tree)
    except SyntaxError as exc:
        raise Refused(BAD_EXPRESSION, f"not a valid expression ({exc.msg})") from None
    except (RecursionError, MemoryError):
        raise Refused(TOO_LARGE, "expression nested too deeply") from None
    except (ZeroDivisionError, OverflowError, ValueError) as exc:
        raise Refused(MATH_ERROR, str(exc) or type(exc).__name__) from None
    except TypeError as exc:  # e.g. sqrt() with two arguments
        raise Refused(BAD_EXPRESSION, str(exc)) from None
    if isinstance(value, int) and _bits(value) > MAX_INT_BITS:
        raise Refused(TOO_LARGE, f"the result has more than {MAX_INT_BITS} bits")
    return value


def format_number(value: int | float) -> str:
    """Integers exactly; floats to 15 significant digits (so 0.1 + 0.2 reads 0.3)."""
    return str(value) if isinstance(value, int) else format(value, ".15g")


class Calculator(Tool):
    name = "calculator"
    description = ("Evaluate an arithmetic expression exactly: numbers, + - * / // % **, parentheses, "
                   "and the functions sqrt, exp, log, log10, log2, sin, cos, tan, abs, round, floor, ceil "
                   "with the constants pi and e.")
    parameters = {"type": "object", "additionalProperties": False, "required": ["expression"],
                  "properties": {"expression": {"type": "string", "description": "e.g. (17 + 3) * 2 ** 5"}}}

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        try:
            return ToolResult(format_number(evaluate(arguments["expression"])))
        except Refused as exc:
            return ToolResult.error(exc.kind, str(exc))


class FinalAnswer(Tool):
    name = "final_answer"
    description = "Give your final answer to the task. Call this once, when you are done; it ends the episode."
    parameters = {"type": "object", "additionalProperties": False, "required": ["answer"],
                  "properties": {"answer": {"type": "string", "description": "the final answer, as short as possible"}}}

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        answer = arguments["answer"]
        return ToolResult(f"Final answer recorded: {answer}", answer=answer)
