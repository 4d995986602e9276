"""Loading models of every supported format into one :class:`Model` record."""

from .loader import DEFAULT_MODEL, describe, load_model
from .spec import Model, TensorSpec, parse_input_spec

__all__ = ["DEFAULT_MODEL", "Model", "TensorSpec", "describe", "load_model", "parse_input_spec"]
