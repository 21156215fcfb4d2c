"""The demo behind `sparsevision demo`: sparse vs full labels on all three sensors."""
