"""Benchmarks, the soak and their shared helpers (`make bench`, `make soak`)."""
