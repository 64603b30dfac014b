"""The library's version (here, in the lowest layer, so that every layer may record it in its outputs)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
