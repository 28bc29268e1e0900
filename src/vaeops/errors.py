"""Errors a user can fix. The CLI prints them as one line (what, where, how to fix) and exits 2."""


class VaeopsError(Exception):
    """Base of every error whose message is written for the person running the command."""


USER_ERRORS = (VaeopsError, FileNotFoundError)
