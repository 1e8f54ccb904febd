"""Benchmarks: each measures the pipeline and a baseline in the same run and prints their ratio."""
