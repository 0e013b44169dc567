"""The one exception type for mistakes a user can fix (bad input, bad config).

The CLI catches it once and prints its message; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class TraitmapError(Exception):
    """A user-facing error: the message names the file, line and field when known."""

    def __init__(self, message: str, *, file: object = None, line: int | None = None, field: str | None = None):
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        self.file, self.line, self.field = file, line, field
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
