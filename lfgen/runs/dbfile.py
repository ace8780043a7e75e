"""The SQLite files lfgen keeps its state in (``state.sqlite``, ``study.db``), looked at before SQLite opens them.

SQLite opens whatever the path names: a FIFO blocks the open for ever (SQLite retries it through every signal, so
not even SIGTERM ends the wait), a device such as ``/dev/zero`` reads as a damaged file, a folder as an I/O error.
Each is one clear problem instead, as every other file a user can put in lfgen's way (lfgen.yamlio.open_regular).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# SQLite's own files beside a database: its write-ahead log and shared memory (WAL mode), its rollback journal
SIDE_FILES = ("-wal", "-shm", "-journal")


def problem(path: Path) -> tuple[Path, str] | None:
    """(the file, why) when SQLite must not open *path*: it, or one of its side files, is a folder, a FIFO, a socket,
    a device or a link to nothing; None when each is a regular file, a link to one, or absent."""
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)):
        if not os.path.lexists(candidate):
            continue
        try:
            mode = os.stat(candidate).st_mode  # through a link: what SQLite would open
        except FileNotFoundError:
            return candidate, "a symbolic link to nothing"
        except OSError as exc:
            return candidate, f"cannot be looked at ({exc.strerror})"
        if stat.S_ISDIR(mode):
            return candidate, "a folder, not an SQLite file"
        if not stat.S_ISREG(mode):
            return candidate, "not a regular file (a FIFO, socket or device), not an SQLite file"
    return None
