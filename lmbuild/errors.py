"""The one exception type that means "the user's input or config is wrong"."""


class UserError(Exception):
    """Bad input or config. The message is one line that names the file, line or config key.

    Stages raise it; the stage runner prints ``error: <message>`` on one line, exits
    non-zero and leaves no artifact behind. Anything else is a bug and keeps its traceback
    (in the job's log).
    """
