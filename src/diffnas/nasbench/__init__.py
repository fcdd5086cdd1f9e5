"""Tabular benchmarks that score a searched cell without training it (NAS-Bench-201)."""
