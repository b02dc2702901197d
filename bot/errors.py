"""The one error type users see: a single line that says what is wrong and what to do."""


class VoicebotError(Exception):
    """An error with a one-line, user-facing message. The CLI prints it without a traceback."""
