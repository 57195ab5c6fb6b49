"""edgetl's version, in one place (the package, manifests and bundles read it; pyproject.toml repeats it)."""

__version__ = "0.1.0"
