"""Optional dependencies, imported only by the feature that needs them.

``pip install erlmr`` brings torch, numpy, PyYAML and tqdm alone; the datasets, the report, TensorBoard
and the rest each come with a pip extra declared in pyproject.toml. A feature calls :func:`require`
where it needs its package, so that a missing one is reported as what to install, not as a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# Import names whose pip package is called something else.
PIP_NAMES = {"sklearn": "scikit-learn", "PIL": "pillow", "torch.utils.tensorboard": "tensorboard", "yaml": "PyYAML"}


def pip_name(module: str) -> str:
    return PIP_NAMES.get(module) or PIP_NAMES.get(module.split(".")[0]) or module.split(".")[0]


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingDependencyError` naming ``erlmr[extra]``.

    ``require("matplotlib.figure", "report", "the report")`` returns the module, or raises
    "the report needs matplotlib: pip install 'erlmr[report]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        # error.name is the module that was missing, which may be a dependency of `module` itself.
        missing = pip_name(error.name or module)
        raise MissingDependencyError(f"{feature} needs {missing}: pip install 'erlmr[{extra}]'") from None
