"""Converters from PyTorch sources to deployable formats, one backend per module."""
