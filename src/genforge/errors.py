"""Errors a user can cause and fix: the CLI prints them as one line, without a traceback."""


class GenforgeError(Exception):
    """A problem with the user's input (a path, a file, a parameter): the message says what and what is expected."""


class DataError(GenforgeError):
    """A data source is missing, empty, corrupt or of the wrong kind."""


class RunError(GenforgeError):
    """A run directory is missing, incomplete or corrupt."""


class ConfigError(GenforgeError):
    """A configuration key or value is unknown or invalid."""


class TrainingDiverged(GenforgeError):
    """The loss stayed non-finite for too many consecutive steps."""


class StorageError(GenforgeError):
    """A file or folder cannot be written: a full disk, a read-only mount, no permission, a file in the way."""


class ExportError(GenforgeError):
    """A run cannot be exported to (or a folder imported from) another tool's format, or that tool is missing."""
