"""trx: an experiment runner for trust-region optimizers (filter × normalizer × schedule)."""

__version__ = "0.1.0"
