"""datamodules.formats."""
