"""sparsevision.models."""
