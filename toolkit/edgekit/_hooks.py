"""User code named on the command line: ``package.module:function`` or ``path/to/file.py:function``
(factories, data factories, loss functions, expectation rules, training hooks), resolved one way."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .errors import ModelLoadError


def import_callable(ref: str, what: str = "factory"):
    """Resolve ``package.module:function`` or ``path/to/file.py:function``."""
    target, _, func_name = ref.rpartition(":")
    if not target or not func_name:
        raise ModelLoadError(f"bad {what} {ref!r}", "use package.module:function or path/file.py:function")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelLoadError(f"{what} file {path} does not exist", "check the path")
        name = f"_edgekit_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # on record like any import, so that inspect (the export cache's key), pickle and
        # dataclasses find the file's classes
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent.resolve()))  # let the file import its neighbours
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelLoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.remove(str(path.parent.resolve()))
    else:
        # the working directory is importable, as for `python -m` and uvicorn: a reader's
        # mypkg/ beside them is found by the console script too (appended: never shadows a package)
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.append(str(Path.cwd()))
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelLoadError(
                f"cannot import module {target!r} for {what} {ref!r}: {exc}",
                "check the module path, or give a file path like path/to/file.py:function",
            ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ModelLoadError(f"{target} has no callable {func_name!r}", f"define {func_name}() in it")
    return func
