"""Plots for reports: matplotlib on its file backend (no display), optional like the plots.

``pyplot()`` is None when matplotlib is not installed (reports then go without pictures);
``save`` lays a figure out, writes it and frees it (figures left open pile up in long runs).
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(fig, path: str | Path, dpi: int = 110, measure=None) -> str:
    """Write ``fig`` to ``path`` (PNG) and close it; returns the file's name. ``measure()`` runs on
    the final layout, just before the file is written: what it measures is what is saved."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if measure is not None:
        fig.canvas.draw()
        measure()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path).name
