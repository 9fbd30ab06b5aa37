"""The one exception type the CLI turns into a one-line message and exit code 2."""


class HbaError(Exception):
    """A problem the user can fix (bad input, missing data, impossible config).

    The message must fit on one line and name the problem; the CLI prints it as
    ``error: <message>`` and exits with code 2, without a traceback.
    """
