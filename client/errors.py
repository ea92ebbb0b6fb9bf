"""Errors a site operator can act on: each names the file, column or site at fault."""


class MoeHealthInputError(Exception):
    """Bad input data or configuration; the message is meant to be shown to the user as one line."""


class MimicFileError(MoeHealthInputError):
    """A MIMIC table is missing, truncated, empty or lacks a required column."""


class SiteDataError(MoeHealthInputError):
    """A site has no usable samples or an inconsistent feature cache."""
