"""Logging for the main process and the slots: one format, tagged with the process role."""

import faulthandler
import logging
import sys

FORMAT = '[%(asctime)s] [%(process)d] [%(role)s] %(levelname)s %(name)s: %(message)s'


class _RoleFilter(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        return True


def setup(level: str, logfile: str | None, role: str) -> None:
    """Send log lines to ``logfile`` (or stderr); ``role`` tags each line, e.g. ``slot 1``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler = (logging.FileHandler(logfile, encoding='utf-8') if logfile
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_RoleFilter(role))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger('kafka').setLevel('DEBUG' if level == 'debug' else 'WARNING')
    faulthandler.enable(file=handler.stream, all_threads=True)


def retag(role: str) -> None:
    """Change the role tag of every line logged from now on (after a fork)."""
    for handler in logging.getLogger().handlers:
        for log_filter in handler.filters:
            if isinstance(log_filter, _RoleFilter):
                log_filter.role = role
