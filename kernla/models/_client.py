"""``client=``: a Dask client as a scikit-learn parameter — stored as given, shared by clones, never pickled.

A ``distributed.Client`` cannot be copied or pickled (it holds a connection), while scikit-learn's
``clone`` deep-copies the parameters it does not know and ``pickle`` saves every attribute. With
:class:`ClientParameter` first among its bases, an estimator's clones share its client (as a
``Pipeline`` or ``GridSearchCV`` expects of a resource), and a pickled copy has ``client=None``:
it computes in the process that loads it.

>>> from kernla.models import GaussianProcessRegressor
>>> from sklearn.base import clone
>>> cluster = object()  # stands for a distributed.Client here
>>> clone(GaussianProcessRegressor(client=cluster)).client is cluster
True
"""

from __future__ import annotations

from typing import Any

from ..errors import InputValueError
from ._common import kind


class ClientParameter:
    """Mixin of the estimators with a ``client`` parameter (module docstring)."""

    client: Any

    def __sklearn_clone__(self) -> Any:
        client, self.client = self.client, None
        try:
            new = super().__sklearn_clone__()  # type: ignore[misc]
        finally:
            self.client = client
        new.client = client
        return new

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # type: ignore[misc]
        if state.get("client") is not None:
            state["client"] = None  # a connection: the unpickled copy computes in its own process
        return state


def check_host_data(x: Any) -> None:
    """InputValueError unless ``x`` is NumPy data: ``client=`` sends host arrays to the workers."""
    if kind(x).kind != "numpy":
        raise InputValueError(f"client= takes NumPy data (the workers receive host arrays), got {kind(x).kind} data")


__all__ = ["ClientParameter", "check_host_data"]
