"""Directories written atomically: a temporary sibling, renamed into place when complete.

Every stage that writes a directory (prepare's dataset, export's snapshot, a checkpoint) writes
it as ``.NAME.tmp-PID`` beside its final path and renames it at the end, so a failure never
leaves a half-written one. What a killed process leaves behind (SIGKILL gives no chance to
clean up) is swept by the next run: temporaries whose process no longer runs on this host.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (signal 0 checks without sending anything)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) sends CTRL_C_EVENT on Windows: never guess there
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (OSError, OverflowError):  # ProcessLookupError: no such process
        return False
    return True


def temp_sibling(path: Path, kind: str = "tmp") -> Path:
    """``.NAME.tmp-PID`` beside ``path`` (``kind`` "old" for one being replaced)."""
    return path.parent / f".{path.name}.{kind}-{os.getpid()}"


def sweep_stale(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` (``.NAME.tmp-PID``, ``.NAME.old-PID``) that processes
    no longer running left behind; never one of a live process. Returns those removed."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.iterdir():
        match = _TEMP.match(candidate.name)
        if match and match["name"] == path.name and not candidate.is_symlink() and \
                not process_alive(int(match["pid"])):
            if candidate.is_dir():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the complete directory ``tmp`` to ``final``. An existing ``final`` is renamed
    aside first and removed only after the new one is in place, so a crash leaves one of them
    complete under its own name (the aside one is swept by the next run)."""
    if not final.exists():
        tmp.rename(final)
        return
    old = temp_sibling(final, "old")
    shutil.rmtree(old, ignore_errors=True)
    final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
