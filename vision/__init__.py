"""sparsevision: train vision models from sparse labels.

Import package ``vision`` holds the sparse-label engine (``labels``, ``losses``, ``engine``), the
models, the Lightning task modules, metrics and pictures; ``datamodules`` holds readers and data.
"""

__version__ = "0.1.0"
