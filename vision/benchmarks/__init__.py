"""Benchmark suites behind `sparsevision benchmark` (rows resume from their JSON files)."""
