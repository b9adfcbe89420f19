"""minigate: payments and third-party services for mini-program backends, with an offline sandbox."""

__version__ = "0.1.0"

__all__ = ["__version__"]
