"""scikit-learn's estimator base classes, or stand-ins that say how to install it.

Every model is a scikit-learn estimator (``BaseEstimator`` and the right mixin). scikit-learn
stays optional for ``import kernla``: without it the names below are stand-ins, and
constructing a model raises an ImportError that says ``pip install scikit-learn``.

>>> issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
True
"""

from __future__ import annotations

from typing import Any

from ..errors import KernlaError

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

    HAVE_SKLEARN = True
except ImportError:  # scikit-learn is optional until a model is constructed
    HAVE_SKLEARN = False

    class _SklearnNotFittedError(ValueError, AttributeError):  # type: ignore[no-redef]
        """Stand-in for ``sklearn.exceptions.NotFittedError``."""

    class BaseEstimator:  # type: ignore[no-redef]
        """Stand-in for ``sklearn.base.BaseEstimator``: constructing a model says what to install."""

        def __new__(cls, *args: Any, **kwargs: Any):
            raise ImportError(
                f"kernla.models.{cls.__name__} is a scikit-learn estimator and needs scikit-learn: "
                "pip install scikit-learn (or kernla[models])"
            )

    class ClassifierMixin:  # type: ignore[no-redef]
        """Stand-in for ``sklearn.base.ClassifierMixin``."""

    class RegressorMixin:  # type: ignore[no-redef]
        """Stand-in for ``sklearn.base.RegressorMixin``."""


class NotFittedError(KernlaError, _SklearnNotFittedError):
    """A model method that needs ``fit`` was called before ``fit`` (a scikit-learn ``NotFittedError``)."""


def check_fitted(model: Any, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``model`` has ``attribute`` (set by ``fit``)."""
    if not hasattr(model, attribute):
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' with appropriate "
            "arguments before using this estimator."
        )


__all__ = ["BaseEstimator", "ClassifierMixin", "RegressorMixin", "NotFittedError", "check_fitted", "HAVE_SKLEARN"]
