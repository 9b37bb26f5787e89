"""Training methods, one file each, registered in :data:`METHODS`. Every module here is imported."""

from ..plugins import import_submodules
from .base import METHODS, Method, MethodContext, StepResult
from .compose import build_method, method_class

import_submodules(__name__, __path__)

__all__ = ["METHODS", "Method", "MethodContext", "StepResult", "build_method", "method_class"]
