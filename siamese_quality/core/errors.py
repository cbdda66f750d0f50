"""Errors that name the parameter at fault, so a form can show the message beside it."""

from __future__ import annotations


class InvalidOption(ValueError):
    """A ``ValueError`` about one parameter: ``option`` is its name (``"key"``,
    ``"max_seconds"``, ``"working_resolution"``, ...)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


__all__ = ["InvalidOption"]
