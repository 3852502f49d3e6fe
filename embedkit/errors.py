"""Exceptions with messages a user can act on: each names the offending value and what is allowed."""


class EmbedkitError(Exception):
    """Base class for every error embedkit raises on purpose (the CLI prints these without a traceback)."""


class InputError(EmbedkitError, ValueError):
    """Bad user input: empty corpus, non-UTF-8 bytes, duplicate ids, k <= 0, wrong dimension..."""


class NotFittedError(EmbedkitError, ValueError):
    """A reducer was used before ``fit``."""


class IndexFormatError(EmbedkitError):
    """An index directory that is missing, incomplete, corrupt or from an incompatible version."""


class ModelNotFoundError(EmbedkitError):
    """No encoder could be found at the given path / id, or no default is installed."""


class IndexRebuiltError(InputError):
    """A write was prepared against an index that another writer rebuilt (``--overwrite``) or re-embedded
    before it could commit: nothing was written; load the index again (or refresh) and retry."""
