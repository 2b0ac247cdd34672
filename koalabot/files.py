"""Files the bot creates hold what people said: they are private to the account running it.

`private_file` creates a file with mode 0600 before SQLite opens it, whatever the umask: SQLite
gives the ``-wal``, ``-shm`` and ``-journal`` files it creates later the mode of the database
file, so one call covers them. A file that exists already keeps its mode (the operator chose
it). Exports are written through ``tempfile.mkstemp`` (0600) and a parallel export's
scratch files inside ``tempfile.mkdtemp`` (0700); the bot creates no other folder.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600


def private_file(path: Path) -> None:
    """Create ``path`` empty, mode 0600, unless it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away: exactly 0600
    finally:
        os.close(fd)


__all__ = ["FILE_MODE", "private_file"]
