"""``edgekit serve``: bundles as a network service (Open Inference Protocol), with dynamic
batching, a response cache, Prometheus metrics, an optional browser UI, and batch prediction
into a database. Needs the ``serve`` extra (Starlette, uvicorn, prometheus-client, Pillow)."""

from .plane import Repository, ServedModel, ServeOptions

__all__ = ["Repository", "ServeOptions", "ServedModel"]
