"""Tool subcommands of the sparsevision CLI: each module has main(argv) -> int."""
