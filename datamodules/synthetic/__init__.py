"""datamodules.synthetic."""
