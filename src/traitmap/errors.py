"""The one exception type for mistakes a user can fix (bad input, bad config).

The CLI catches it once and prints its message; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno


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
        self.message, self.file, self.line, self.field = message, file, line, field
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def at(self, *, file: object = None, line: int | None = None, field: str | None = None) -> "TraitmapError":
        """The same message placed elsewhere: e.g. a task's error named at the study line that uses the task."""
        return TraitmapError(self.message, file=file, line=line, field=field)


def is_disk_full(error: BaseException) -> bool:
    """Whether an error means the disk is full: OSError ENOSPC (or a quota), or SQLite's
    and safetensors' wording of it. The writers turn it into a TraitmapError naming the file."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    return any(words in text for words in ("no space left", "disk is full", "storagefull", "quota exceeded"))
