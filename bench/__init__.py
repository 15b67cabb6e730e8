"""Benchmarks, grouped by feature; run each from the repository root as
``python -m bench.<feature>.<name>`` (see bench/README.md)."""
