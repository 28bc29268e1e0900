"""Errors a user can fix. The CLI prints them as one line (what, where, how to fix) and exits 2."""

import logging


class VaeopsError(Exception):
    """Base of every error whose message is written for the person running the command."""


class MissingFileError(VaeopsError, FileNotFoundError):
    """A file a step reads is not there; the message names the step that writes it."""


USER_ERRORS = (VaeopsError, FileNotFoundError)


def one_line(message: str) -> str:
    """A message as the single line the CLI prints: its non-blank lines joined by '; '."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines)


class WithoutUserErrorTracebacks(logging.Filter):
    """Log a user error's message but not its traceback: the entry point reports it as one line,
    and a traceback would read as a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], VaeopsError):
            record.exc_info, record.exc_text = None, None
        return True


def hide_user_error_tracebacks(*logger_names: str) -> None:
    """Loggers that log exceptions they pass on (an orchestrator's run loggers) keep logging a
    user error, without its traceback."""
    for name in logger_names:
        logging.getLogger(name).addFilter(WithoutUserErrorTracebacks())
