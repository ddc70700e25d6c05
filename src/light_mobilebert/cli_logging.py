"""Logging for the command-line tools: INFO messages of transformers and of this package's own loggers."""

import logging as std_logging
import sys

from transformers.utils import logging


__all__ = ["enable_info_logging"]


class _StderrHandler(std_logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a message is emitted (pytest and notebooks replace it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(std_logging.Formatter("[%(name)s] %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        # `StreamHandler.__init__` assigns the stream; it is looked up at each message instead.
        pass


def enable_info_logging(*names: str) -> None:
    """
    Shows on stderr the INFO messages of transformers and of the loggers `names` (and of their children).

    `transformers.utils.logging.set_verbosity_info` configures transformers' own root logger only. This package's
    loggers are named after its modules (`light_mobilebert.export`, `conversion.compress`, ...), outside that root,
    so without a handler of their own their INFO messages were dropped by Python's default of WARNING and above.

    Args:
        names (`str`): Logger names, for example `"light_mobilebert"`.
    """
    logging.set_verbosity_info()
    for name in names:
        logger = std_logging.getLogger(name)
        logger.setLevel(std_logging.INFO)
        if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
            logger.addHandler(_StderrHandler())
        # Shown once, by this handler, whatever the application configured on the root logger.
        logger.propagate = False
