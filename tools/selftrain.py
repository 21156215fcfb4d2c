#!/usr/bin/env python
"""Thin wrapper: `python tools/selftrain.py ARGS` is `sparsevision selftrain ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["selftrain", *sys.argv[1:]]))
