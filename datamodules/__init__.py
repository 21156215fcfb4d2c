"""LightningDataModules for sparsevision, and the readers and synthetic generators behind them."""
