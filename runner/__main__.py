"""``python -m runner``, ``python runner.py`` and the ``runner`` script.

The command line is imported here, inside the ``try``, so that Ctrl-C while Python
is still importing exits with 130 like Ctrl-C at any later moment, not with a
traceback.
"""

import sys

from .errors import EX_INTERRUPTED


def main() -> int:
    """Run the command line; returns the exit code."""
    try:
        from .cli import main as command_line
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    return command_line()


if __name__ == '__main__':
    sys.exit(main())
