"""The formula layer: expression trees, the operations registry, the parser and the printer.

>>> from kernla.formula import parse
>>> str(parse("Exp(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"]))
'Exp((-SqDist(Var(0,3,0), Var(1,3,1))))'
"""

from .ops import OPS, OpSpec, get_op, operation_names
from .parser import parse, parse_aliases
from .printer import to_string
from .tree import CAT_I, CAT_J, CAT_PARAM, IntCst, Node, Pm, RealCst, Var, Vi, Vj, as_node, call, concat, swap_ij

__all__ = [
    "OPS",
    "OpSpec",
    "get_op",
    "operation_names",
    "parse",
    "parse_aliases",
    "to_string",
    "CAT_I",
    "CAT_J",
    "CAT_PARAM",
    "IntCst",
    "Node",
    "Pm",
    "RealCst",
    "Var",
    "Vi",
    "Vj",
    "as_node",
    "call",
    "concat",
    "swap_ij",
]
