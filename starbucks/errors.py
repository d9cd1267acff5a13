"""Errors a user can act on: each names the file (and line) at fault."""


class StarbucksError(Exception):
    """Base class for errors caused by user input rather than bugs."""


class InputError(StarbucksError, ValueError):
    """A malformed or missing input file, optionally with the offending line."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
