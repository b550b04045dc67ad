"""``pykeops.torch.operations``: the kernel linear solver.

>>> from kernla.torch.operations import KernelSolve
>>> KernelSolve("Exp(-SqDist(X, Y)) * B", ["X = Vi(1)", "Y = Vj(1)", "B = Vj(1)"], "B").axis
1
"""

from ..linalg import KernelSolve

__all__ = ["KernelSolve"]
