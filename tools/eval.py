#!/usr/bin/env python
"""Thin wrapper: `python tools/eval.py ARGS` is `sparsevision test ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["test", *sys.argv[1:]]))
