"""The error every connector raises for a delivery it cannot use."""


class SourceError(Exception):
    """A delivery cannot be used: the month is not built and the previous build stays in place."""

    def __init__(self, message: str, file: str | None = None):
        self.file = file
        super().__init__(message)
