#!/usr/bin/env python
"""Thin wrapper: `python tools/benchmark.py ARGS` is `sparsevision benchmark ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
