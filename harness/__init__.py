"""zigma-harness: run studies over the plugins, track them in MLflow, publish reports."""

__all__ = ["__version__"]
__version__ = "0.1.0"
