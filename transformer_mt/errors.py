"""The one exception type that carries a message meant for the user.

Everything a user can get wrong (a config key, a missing file, a corrupt
checkpoint) raises ``TransformerMTError`` with a message that names the file or
key and says how to fix it. The CLI prints that message and exits with status 2;
any other exception is a bug in transformer-mt and keeps its traceback.
"""


class TransformerMTError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class DocumentError(TransformerMTError):
    """A document that cannot be read: an unsupported type, bad encoding, a malformed file, or no text."""


class DocumentTooLarge(DocumentError):
    """A document with more text, XML or parts than the limit allows (the server answers 413)."""
