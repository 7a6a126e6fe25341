"""c3: shared library (errors, config, manifests, transfer) and generated stubs (c3.v1)."""

__version__ = "0.1.0"
