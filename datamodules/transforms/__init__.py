"""datamodules.transforms."""
