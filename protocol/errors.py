"""The one error type protocol/ raises for bad input."""


class ProtocolError(ValueError):
    """Bytes or data that do not follow the Custody evidence format.

    Every parser in protocol/ raises this (and only this) for malformed input,
    whatever the bytes: a caller can report it with the path it came from.
    """


class DuplicateKeyError(ProtocolError):
    """A JSON object with the same key twice: two parsers would read two values."""
