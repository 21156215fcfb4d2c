#!/usr/bin/env python
"""Thin wrapper: `python tools/convert.py ARGS` is `sparsevision convert ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
