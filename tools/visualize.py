#!/usr/bin/env python
"""Thin wrapper: `python tools/visualize.py ARGS` is `sparsevision visualize ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))
