"""Benchmarks: they print their figures and are never part of `make test`."""
