"""The project's exceptions: each says what went wrong and, where there is one, the command that fixes it."""

from __future__ import annotations


class ModelFileError(RuntimeError):
    """A weight or config file is missing, truncated or does not match the architecture."""


class DataUnavailableError(RuntimeError):
    """No data source works; the message says how to provide one."""


class BadInputError(ValueError):
    """Input from a person (UI, API, command line) that cannot be used; the message says why."""


class UnknownTissueError(KeyError, ValueError):
    """Not a tissue of the catalogue; the message names the accepted ones.

    A ``KeyError`` for catalogue lookups and a ``ValueError`` for pipelines (diffusers' ``get_label_ids``
    convention), so callers may catch either.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotFoundError(LookupError):
    """A stored thing (gallery, item) that does not exist."""
