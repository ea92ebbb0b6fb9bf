"""The one exception family for input a user can fix; the CLI and both apps show it as one line."""


class MoeHealthInputError(Exception):
    """Bad input data or configuration; the message names the file, key, site or round at fault."""


class ProtocolError(MoeHealthInputError):
    """A message between server and site does not follow the declared protocol."""
