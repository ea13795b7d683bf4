"""The one exception type that carries a message meant for the user.

Everything a user can get wrong (a config key, a missing file, a corrupt
checkpoint) raises ``TransformerMTError`` with a message that names the file or
key and says how to fix it. The CLI prints that message and exits with status 2;
any other exception is a bug in transformer-mt and keeps its traceback.
"""


class TransformerMTError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""
