"""sparsevision.tasks."""
