#!/usr/bin/env python
"""Thin wrapper: `python tools/demo.py ARGS` is `sparsevision demo ARGS`."""

import sys

from vision.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
