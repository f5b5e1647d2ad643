"""User-facing errors.

Anything a user can fix (a bad config value, a missing image, a malformed CSV row, a full disk) raises
`PsdistillError` with a message that names the file, row or field. The CLI prints the message
and exits with status 2 instead of a traceback; everything else is a bug and keeps its traceback.
"""


class PsdistillError(Exception):
    """An error caused by user input; the message says what and where."""


class ConfigError(PsdistillError, ValueError):
    """A config key is unknown, missing or of the wrong type or value."""


class DataError(PsdistillError, ValueError):
    """A data file, row or image cannot be used."""


class StorageError(PsdistillError):
    """A file cannot be written: no space left, a read-only file system, no permission (psdistill.core.storage)."""
