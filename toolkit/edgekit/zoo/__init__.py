"""Built-in models, named ``edgekit:NAME``: the demo default and the shared workloads."""

from __future__ import annotations

import importlib

from ..errors import ModelLoadError

# name -> (module, one-line description). Modules are imported only when their model is asked for.
BUILTINS = {
    "digits-cnn": ("edgekit.zoo.digits", "small CNN trained on scikit-learn's digits (8x8), 10 classes"),
    "minilm": ("edgekit.zoo.minilm", "all-MiniLM-L6-v2 sentence encoder, sequence 128, 384-d embedding"),
}


def load_builtin(name: str):
    if name not in BUILTINS:
        import difflib

        close = difflib.get_close_matches(name, BUILTINS, n=2)
        hint = f"did you mean edgekit:{close[0]}?" if close else ""
        raise ModelLoadError(
            f"unknown built-in model 'edgekit:{name}'",
            f"{hint} Built-ins: {', '.join('edgekit:' + n for n in BUILTINS)}".strip(),
        )
    return importlib.import_module(BUILTINS[name][0]).load()
