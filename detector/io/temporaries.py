"""Temporary files and directories beside a target (a partial output, a bundle being staged),
named after the process that owns them, and the removal of ones left behind by a run that
was killed (``remove_stale_temporaries``)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from detector.errors import ConfigError

logger = logging.getLogger(__name__)


def partial_path(path: str | os.PathLike[str]) -> Path:
    """A unique temporary name beside ``path``, for writing before an atomic rename:
    ``.NAME.HOST-PID-RANDOM.partial``, naming the process that writes it, so that a later
    writer of the same target can tell one whose writer is gone (``remove_stale_temporaries``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.{_owner()}.partial")


#: A write refused for want of room: the system's error names no file, only the device.
_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def told_as(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within it, a write refused for want of room (a full disk, a quota, ``ulimit -f``) is
    raised as an ``OSError`` naming ``path``, what the user gave: the system's error named
    no file ("No space left on device", and pyarrow's "Error writing bytes to file. Detail:
    [errno 28] ..."), so the command line's message could not say which disk to free."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno not in _ROOM:
            raise
        raise OSError(exc.errno, os.strerror(exc.errno), os.fspath(path)) from exc


def check_writable(path: str | os.PathLike[str], *, folder: bool = False) -> None:
    """Before any work is done: make the folder that will hold ``path`` and create (then
    remove) a file in it, so that a path that cannot be written fails at once with its reason,
    not as an internal error once the scoring or training it waited for is done. ``folder``:
    the target is a directory (a bundle, replaced whole) rather than a file."""
    if str(path) == "-":  # a file named '-' is never what was meant
        raise ConfigError(
            "'-' (standard output) is not taken here: this writes a file; name one, e.g. "
            "report.html"
        )
    target = Path(path)
    if not folder and not target.name:  # '.', '..', '/': a folder, and no name to write
        raise ConfigError(f"cannot write {path}: it is a directory; name a file in it")
    probe = target.with_name(f".{target.name}.{_owner()}.partial")
    if not folder:
        check_regular(path)
    try:
        if not folder and target.is_dir():
            raise ConfigError(f"cannot write {path}: it is a directory; name a file in it")
        if folder and target.exists() and not target.is_dir():
            raise ConfigError(f"cannot write {path}: it is a file, and this is written as a folder")
        blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(
                f"cannot write {path}: {blocking} is a file, not a folder; choose another path"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        probe.touch(exist_ok=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: creating a file in {target.parent} failed "
            f"({exc.strerror or exc}); choose a path in a folder you can write to"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def check_regular(path: str | os.PathLike[str]) -> None:
    """A file written by renaming a finished temporary over it must be a regular file, or none
    yet: renamed over a device (``/dev/null``, ``/dev/full``), a pipe or a socket, it would
    replace that for the whole machine (a run as root replaced ``/dev/full`` with a report)."""
    try:
        mode = os.stat(path).st_mode  # through links: what a write would reach
    except OSError:
        return  # none yet (or unreadable: the probe file says why)
    kinds = {
        stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket",
    }  # fmt: skip
    kind = next((name for test, name in kinds.items() if test(mode)), None)
    if kind is not None:
        raise ConfigError(
            f"cannot write {path}: it is {kind}, not a file, and would be replaced; name a "
            "file (for output on standard output, give '-' where the option takes it)"
        )


def written_path(path: str | os.PathLike[str]) -> Path:
    """Where a write to ``path`` goes: through a symbolic link to its target (renaming over
    the link replaced the link and left its target as it was), else ``path``."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)


def staging_path(path: str | os.PathLike[str], kind: str) -> Path:
    """A unique temporary name beside ``path`` for a folder written or retired before an
    atomic rename (a model bundle): ``.NAME.KIND-HOST-PID-RANDOM``, ``kind`` ``tmp`` or ``old``."""
    target = Path(path)
    return target.with_name(f".{target.name}.{kind}-{_owner()}")


#: A temporary whose name does not say which process writes it (one written before names did,
#: or on another host) is taken for stale once untouched this long; writers touch theirs at
#: every chunk.
UNOWNED_STALE_S = 3600.0
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_OWNED = re.compile(r"(?P<host>[A-Za-z0-9-]+)-(?P<pid>[0-9]+)-[0-9a-f]{8}")
_UNOWNED = re.compile(r"[0-9a-f]{8}")


def _owner() -> str:
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers of ``path`` left beside it: partial files and bundle
    staging folders (``partial_path``, ``staging_path``) whose writing process no longer runs
    on this host, or, where the name cannot say (written before names held the process, or
    on another host), that have not been touched for ``UNOWNED_STALE_S``. Temporaries of other
    targets, of live processes, and anything not named as ours are left alone. Returns the
    paths removed."""
    target = Path(path)
    prefix = f".{target.name}."
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for candidate in candidates:
        rest = candidate.name[len(prefix) :]
        if rest.endswith(".partial"):
            tag = rest[: -len(".partial")]
        elif rest.startswith(("tmp-", "old-")):
            tag = rest[len("tmp-") :]
        else:
            continue
        if not _is_stale(candidate, tag):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        if not candidate.exists():
            logger.info("removed %s, left by a writer that was stopped", candidate)
            removed.append(candidate)
    return removed


def _is_stale(candidate: Path, tag: str) -> bool:
    owned = _OWNED.fullmatch(tag)
    if owned is not None and owned["host"] == _HOST:
        return not _running(int(owned["pid"]))
    if owned is None and _UNOWNED.fullmatch(tag) is None:
        return False  # not a name of ours
    try:
        return time.time() - candidate.lstat().st_mtime > UNOWNED_STALE_S
    except OSError:
        return False


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def check_rejects_target(
    rejects: str | os.PathLike[str], output: str | os.PathLike[str], inputs: Sequence[str]
) -> None:
    """Before any work: the rejects file must be neither the output (it would replace the
    scores) nor one of the ``inputs`` (it would replace the data, which is then lost)."""
    if str(rejects) == str(output) == "-":
        raise ConfigError(
            "--output - and --rejects - would both write to standard output; name a file for "
            "--rejects (with --output -, the rejects go to standard error by default)"
        )
    if _same_file(rejects, output):
        raise ConfigError(
            f"the rejects file {rejects} is the output file: the rejected rows would replace "
            "the scores; name another file for --rejects"
        )
    check_not_an_input(rejects, inputs, "--rejects")


def check_not_an_input(
    target: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]], flag: str
) -> None:
    """Before any work: a file to write (the output, a report, the rejects) must not be one of
    the ``inputs``: writing it would replace the user's data, which is then lost (the output
    holds the scored rows only, and the scores)."""
    named = next((i for i in inputs if _same_file(target, i)), None)
    if named is not None:
        raise ConfigError(
            f"{flag} {target} is the input {named}: writing it would replace the data; name "
            f"another file for {flag}"
        )


def check_outside_bundle(
    target: str | os.PathLike[str] | None, bundle: str | os.PathLike[str], flag: str
) -> None:
    """Before any work: a file to write (a report, the output, the rejects) must not be in the
    model bundle's folder, nor be it: loading reads the folder as a whole, so a report named
    ``manifest.json`` there left the bundle unreadable, and saving a bundle replaces the folder
    with whatever else is in it."""
    if target is None or str(target) == "-":
        return
    place, folder = Path(target).resolve(), Path(bundle).resolve()
    if place == folder or folder in place.parents:
        raise ConfigError(
            f"{flag} {target} is inside the model bundle {bundle}: writing it would replace or "
            f"sit among the bundle's files; write it outside {bundle}"
        )


def check_not_read_back(
    targets: Sequence[str | os.PathLike[str]], named: Sequence[str | os.PathLike[str]]
) -> None:
    """Before any work: a file this run writes (the output, the rejects) must not be one that
    a folder or glob among the inputs ``named`` takes in: it would be read as data by this run
    where it exists, and by the next run over the same inputs where it does not yet. (An
    input named itself is ``check_not_an_input``'s.)"""
    from detector.io.tables import picked_up_by

    for target in targets:
        item = next((n for n in named if n != "-" and picked_up_by(target, n)), None)
        if item is not None:
            raise ConfigError(
                f"{target} would be among the inputs ({item} takes it in), and read as data "
                "by this run or the next; write it outside the input folder, or give it a "
                "name the inputs leave out"
            )


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same inode where both exist (a link, a relative
    spelling), else the same resolved path."""
    first, second = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if first.exists() and second.exists():
            return os.path.samefile(first, second)
    return first.resolve() == second.resolve()
