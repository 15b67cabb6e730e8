"""Anti-extraction API gateway."""

__version__ = "0.1.0"
