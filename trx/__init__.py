"""trx: an experiment runner for trust-region optimizers (filter × normalizer × schedule).

The Python API (`trx.run`, `trx.sweep`, `trx.load`) is what the `trx` command itself calls; it is
imported on first use, so `import trx` stays light."""

__version__ = "0.1.0"
__all__ = ["load", "run", "sweep"]


def __getattr__(name: str):
    if name in __all__:
        from trx import api

        return getattr(api, name)
    raise AttributeError(f"module 'trx' has no attribute {name!r}")
