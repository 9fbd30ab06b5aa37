"""The one exception type the CLI turns into a one-line message and exit code 2, and the
helper that quotes another exception inside such a message."""


class HbaError(Exception):
    """A problem the user can fix (bad input, missing data, impossible config).

    The message must fit on one line and name the problem; the CLI prints it as
    ``error: <message>`` and exits with code 2, without a traceback.
    """


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 160 characters, for an HbaError to quote
    (OS, archive and decoder messages can span lines or run long)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
