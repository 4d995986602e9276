"""edgekit: profile, optimise, benchmark, package and serve ML models on edge devices.

``import edgekit`` stays light (no torch): heavy libraries load only inside the functions that
need them.
"""

__version__ = "0.1.0"

from .errors import EdgekitError  # noqa: E402

# Resolved on first use: ``import edgekit.runtime`` on a device must not load the model loader or
# the device registry.
_LAZY = {"Profile": ("devices", "Profile"), "resolve_target": ("devices", "resolve"),
         "Model": ("models", "Model"), "load_model": ("models", "load_model")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def optimize(model=None, target="host", data=None, **options):
    """Optimise ``model`` for ``target``; see :func:`edgekit.optimizer.optimize`.

    >>> result = edgekit.optimize("edgekit:minilm", target="raspberrypi")
    >>> result.winner, result.best_path
    """
    from .optimizer import optimize as run

    return run(model, target=target, data=data, **options)


__all__ = ["EdgekitError", "Model", "Profile", "__version__", "load_model", "optimize", "resolve_target"]
