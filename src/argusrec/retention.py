"""Retention: which snapshots in a snapshots directory stay, and how one is deleted for good.

DESIGN.md, "Deployment": a daily export adds a snapshot (argusrec.snapshot); without pruning the
directory, and the Redis server of a Redis-backed store, grow by one snapshot a day.
:func:`prune_snapshots` keeps the newest few and the one ``latest`` names, and sweeps the
temporary directories of exports that crashed. Removing a snapshot deletes its Redis keys first,
so a directory is the record of keys still to delete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from argusrec.atomic import process_alive
from argusrec.errors import DataError

log = logging.getLogger(__name__)

# an export's working directories (argusrec.snapshot): ".<label>.tmp-<pid>", ".<label>.old-<pid>"
_TEMP = re.compile(r"^\.(?P<label>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


def check_keep(keep: int | None) -> None:
    """Reject a ``keep`` below 1 (None, keep everything, is fine)."""
    if keep is not None and keep < 1:
        raise DataError(f"keep must be at least 1 (None keeps every snapshot), got {keep}",
                        fix="pass --keep 1 or more, or --keep 0 to keep all")


def prune_snapshots(out_root: str | Path, keep: int | None, *,
                    redis_url: str | None = None) -> list[str]:
    """Delete all but the newest ``keep`` snapshots in ``out_root``; returns the labels removed,
    oldest first. ``keep`` None removes no snapshot.

    Newest means exported last: by the manifest's ``created`` (microseconds; older exports wrote
    whole seconds), ties broken by manifest.json's mtime (written last, and kept by a rename). A
    label's order means nothing (``good`` < ``better``), and a directory's own mtime changes
    whenever an entry in it does.
    The snapshot ``latest`` names is never removed, even when older (it stays besides the newest
    ``keep``); nor is anything that is not a snapshot (no manifest.json, a link, a file).

    A Redis-backed snapshot's keys (``prefix`` on the manifest's ``users.url``, or on
    ``redis_url``) are deleted first; when that fails (server down) a warning is logged and the
    directory stays, so that a later prune tries again. Temporary directories
    ``.<label>.tmp-<pid>`` / ``.<label>.old-<pid>`` of processes no longer running (an export
    that crashed) are removed whatever ``keep`` is. A pid means something on this host only:
    this assumes every export into ``out_root`` runs here.
    """
    check_keep(keep)
    out_root = Path(out_root)
    if not out_root.is_dir():
        return []
    snapshots, temps = [], []
    for path in out_root.iterdir():
        if path.is_symlink():
            continue
        if (match := _TEMP.match(path.name)) and not process_alive(int(match["pid"])):
            temps.append(path)
        elif path.is_dir() and not path.name.startswith(".") and \
                (manifest := _manifest_of(path)) is not None:
            snapshots.append((_exported_at(path, manifest), path, manifest))
    snapshots.sort(key=lambda s: s[0], reverse=True)  # newest first
    pointer = out_root / "latest"
    named = pointer.read_text().strip() if pointer.is_file() else None
    doomed = [] if keep is None else [p for _, p, _ in snapshots[keep:] if p.name != named]
    # a prefix that a staying snapshot also uses (a copied directory) keeps its keys
    in_use = {r[1] for _, p, m in snapshots if (r := _redis_of(m)) and p not in doomed}
    for path in temps:
        if path.is_dir():
            _try_remove(path, redis_url, in_use)
        elif _TEMP.match(path.name)["label"] == "latest":  # switch_latest's temporary file
            path.unlink(missing_ok=True)
    removed = [p.name for p in reversed(doomed) if _try_remove(p, redis_url, in_use)]
    if removed:
        log.info("pruned %d old snapshot(s) from %s: %s", len(removed), out_root,
                 ", ".join(removed))
    return removed


def _try_remove(path: Path, redis_url: str | None, in_use: set[str]) -> bool:
    # one directory that cannot be removed (permissions) must not stop the others
    try:
        return remove_snapshot(path, redis_url=redis_url, in_use=in_use)
    except OSError as e:
        log.warning("could not remove %s: %s", path, e)
        return False


def remove_snapshot(path: Path, *, redis_url: str | None = None,
                    in_use: set[str] = frozenset()) -> bool:
    """Delete a snapshot (or temporary) directory, and first its Redis keys unless their prefix
    is ``in_use``. False, with a warning, when the keys could not be deleted: the directory
    stays as their record."""
    redis_of = _redis_of(_manifest_of(path))
    if redis_of and redis_of[1] not in in_use:
        if not delete_redis_keys(redis_url or redis_of[0], redis_of[1]):
            log.warning("kept %s: its Redis keys %s* are still to delete (remove the directory "
                        "by hand once they are)", path, redis_of[1])
            return False
    if not path.name.startswith("."):
        # out of sight in one step; a crash inside rmtree leaves a temporary a later prune
        # sweeps, never a half-deleted snapshot
        aside = path.with_name(f".{path.name}.old-{os.getpid()}")
        if not aside.exists():
            path.rename(aside)
            path = aside
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("could not remove all of %s", path)
    return True


def delete_redis_keys(url: str, prefix: str, *, batch: int = 1000) -> bool:
    """Delete every key starting with ``prefix`` on the Redis server at ``url`` (SCAN MATCH,
    UNLINK in batches). False, with a warning, when the server cannot be reached."""
    try:
        import redis  # the optional redis extra
    except ImportError:  # pragma: no cover - the redis extra is not installed
        log.warning("cannot delete the Redis keys %s*: the redis client is not installed "
                    "(pip install 'argusrec[redis]')", prefix)
        return False
    shown = re.sub(r"//[^@/]*@", "//", url)  # no password in a log line
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60)
    except ValueError as e:  # no or a malformed URL in the manifest
        log.warning("could not delete the Redis keys %s* at %r: %s", prefix, shown, e)
        return False
    try:
        # the count key marks a complete export: without it a reader refuses the prefix at once
        client.delete(f"{prefix}count")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # a label may hold * or [
        keys = []
        for key in client.scan_iter(match=pattern, count=batch):
            keys.append(key)
            if len(keys) >= batch:
                client.unlink(*keys)
                keys = []
        if keys:
            client.unlink(*keys)
    except redis.RedisError as e:
        log.warning("could not delete the Redis keys %s* at %s: %s", prefix, shown, e)
        return False
    finally:
        client.close()
    return True


def _manifest_of(path: Path) -> dict | None:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:
        log.warning("leaving %s alone: its manifest.json cannot be read (%s)", path, e)
        return None
    return manifest if isinstance(manifest, dict) else None


def _exported_at(path: Path, manifest: dict) -> tuple[float, int]:
    mtime = (path / "manifest.json").stat().st_mtime_ns
    try:
        created = datetime.fromisoformat(manifest["created"]).timestamp()
    except (KeyError, TypeError, ValueError):
        created = mtime / 1e9
    return created, mtime


def _redis_of(manifest: dict | None) -> tuple[str, str] | None:
    """(url, key prefix) of a Redis-backed snapshot's manifest; None for LMDB."""
    users = (manifest or {}).get("users") or {}
    if users.get("backend") == "redis" and users.get("prefix"):
        return users.get("url") or "", users["prefix"]
    return None
