#!/usr/bin/env python
"""Thin wrapper: `python tools/sparsify.py ARGS` is `sparsevision sparsify ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["sparsify", *sys.argv[1:]]))
