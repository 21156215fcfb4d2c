"""sparsevision.metrics."""
