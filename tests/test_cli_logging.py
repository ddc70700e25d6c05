"""The command-line tools show this package's INFO messages, once each."""

from transformers.utils import logging

from light_mobilebert.cli_logging import enable_info_logging


def test_info_messages_of_our_loggers_are_shown_once(capsys):
    logger = logging.get_logger("cli_logging_tests.child")
    logger.info("hidden")  # Python drops INFO messages of loggers outside transformers' root by default
    enable_info_logging("cli_logging_tests")
    enable_info_logging("cli_logging_tests")  # a second call adds no second handler
    logger.info("shown")
    logger.debug("debug stays hidden")
    assert capsys.readouterr().err == "[cli_logging_tests.child] shown\n"
