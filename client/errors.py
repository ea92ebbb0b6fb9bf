"""Errors a site operator can act on: each names the file, column or site at fault."""

from shared_model.errors import MoeHealthInputError, closest_key_hint

__all__ = ["MimicFileError", "MoeHealthInputError", "SiteDataError", "closest_key_hint"]


class MimicFileError(MoeHealthInputError):
    """A MIMIC table is missing, truncated, empty or lacks a required column."""


class SiteDataError(MoeHealthInputError):
    """A site has no usable samples or an inconsistent feature cache."""
