#!/usr/bin/env python3
"""Run Kafka stream-processing workers: ``python runner.py -A proj worker``."""

import sys

from runner.__main__ import main

if __name__ == '__main__':
    sys.exit(main())
