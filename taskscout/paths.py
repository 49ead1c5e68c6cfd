"""What is wrong with a path the user gave, said in one line (before anything opens it).

`Path.exists()` answers False for a symbolic link that loops and raises PermissionError inside a
folder the user may not enter; both need their own message, not "does not exist" or a traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_stat = os.stat  # a name of this module's own, so a test can make a folder unenterable even as root


def path_problem(path: Path) -> str | None:
    """Why `path` cannot be opened as an existing file or folder ("does not exist", "is a symbolic
    link that loops", "lies in a folder you may not enter: 'x'"); None when it can be looked at."""
    try:
        _stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a symbolic link to '{os.readlink(path)}', which does not exist"
        return "does not exist"
    except PermissionError:
        return f"lies in a folder you may not enter: '{_closed_parent(path)}'"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link that loops (it leads back to itself)"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a part of the path before it is a file, not a folder)"
        return f"cannot be looked at: {e.strerror or e}"
    return None


def _closed_parent(path: Path) -> Path:
    """The folder on the way to `path` that refuses entry: the parent of the first part that
    cannot be looked at."""
    full = path.absolute()
    for part in (*reversed(full.parents), full):
        try:
            _stat(part)
        except PermissionError:
            return part.parent
        except OSError:
            break
    return path.parent
