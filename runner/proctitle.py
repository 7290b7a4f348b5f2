"""Process titles such as ``runner: slot 1 proj``, so ``ps`` shows who is who."""

try:
    from setproctitle import setproctitle
except ImportError:  # optional: without it, log lines still carry the slot number
    setproctitle = None


def set_title(title: str) -> None:
    if setproctitle is not None:
        setproctitle(title)
