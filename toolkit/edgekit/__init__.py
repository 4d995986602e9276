"""edgekit: profile, optimise, benchmark, package and serve ML models on edge devices.

``import edgekit`` stays light (no torch): heavy libraries load only inside the functions that
need them.
"""

__version__ = "0.1.0"

from .devices import Profile, resolve as resolve_target  # noqa: E402
from .errors import EdgekitError  # noqa: E402
from .models import Model, load_model  # noqa: E402



def optimize(model=None, target="host", data=None, **options):
    """Optimise ``model`` for ``target``; see :func:`edgekit.optimizer.optimize`.

    >>> result = edgekit.optimize("edgekit:minilm", target="raspberrypi")
    >>> result.winner, result.best_path
    """
    from .optimizer import optimize as run

    return run(model, target=target, data=data, **options)


__all__ = ["EdgekitError", "Model", "Profile", "__version__", "load_model", "optimize", "resolve_target"]
