#!/usr/bin/env python
"""Thin wrapper: `python tools/train.py ARGS` is `sparsevision fit ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit", *sys.argv[1:]]))
