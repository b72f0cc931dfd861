"""Files are written whole or not at all: write to a temp file beside the target, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from cvtool.errors import CvtoolError, UsageError, WriteError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it over `path`, else delete it.

    with atomic_path("out.png") as tmp:
        image.save(tmp, format="PNG")
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes it owner-only; a finished file gets the usual mode. After the writer, not before: some
        # (safetensors) replace the file they are given by a new one of their own mode.
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError):  # a full disk, a quota, a vanished folder: one line naming the target
            raise write_error(path, e) from None
        raise


def write_error(path: Path, e: OSError | Exception) -> WriteError:
    """`cannot write PATH: reason` (exit 2); the hint says that an earlier file of that name is kept."""
    why = getattr(e, "strerror", None) or str(e) or type(e).__name__
    full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in why
    hint = "free space on that disk or write elsewhere" if full else None
    if path.exists():
        hint = (hint + "; " if hint else "") + f"the earlier {path.name} is kept"
    return WriteError(f"cannot write {path}: {why}", hint=hint)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A whole folder, written or not at all: yield a temp folder beside `path`; on success rename it to `path`
    (which must be absent or empty), else delete it with everything written into it."""
    import shutil

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it owner-only; the finished folder gets the usual mode
    except OSError as e:
        raise CvtoolError(f"cannot write {path}: {e.strerror or e}", exit_code=2) from None
    try:
        yield tmp
        try:
            if path.is_dir():
                path.rmdir()  # empty (the caller checked); rmdir refuses one that something was put into meanwhile
            os.replace(tmp, path)
        except OSError as e:
            raise CvtoolError(f"cannot write {path}: {e.strerror or e}", exit_code=2) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_csv(path: str | os.PathLike, header: list[str], rows) -> Path:
    """A CSV file with a header row, written atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
    return Path(path)


def next_run_dir(root: str | os.PathLike, prefix: str = "exp") -> Path:
    """runs/train -> runs/train/exp1, exp2, ...: the first unused name, CLAIMED by creating it (mkdir fails when
    the folder exists, so two processes started together never get the same one; each takes the next number)."""
    root = Path(root)
    made = [p for p in (root, *root.parents) if str(p) not in ("", ".") and not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CvtoolError(f"cannot create {root}: {e.strerror or e}", exit_code=2) from None
    n = 1
    while True:
        path = root / f"{prefix}{n}"
        try:
            path.mkdir()
            _MADE[path] = [path, *made]  # what this claim created: release_if_empty removes it again
            return path
        except FileExistsError:
            n += 1
        except OSError as e:
            raise CvtoolError(f"cannot create {path}: {e.strerror or e}", exit_code=2) from None


def make_dir(path: Path) -> Path:
    """mkdir -p, or one clear error (exit 2) when the folder cannot be made or written into."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".cvtool-probe-", delete=True)
        probe.close()
    except OSError as e:
        raise CvtoolError(f"cannot write into {path}: {e.strerror or e}", hint="choose another --out", exit_code=2) from None
    return path


CLAIM = ".cvtool-run"  # in an --out folder while a command writes there: JSON {command, pid, host, started}


def claim_dir(path: str | os.PathLike, command: str, force: bool = False, keep: bool = False,
              hint: str = "choose another --out, or --force") -> Path:
    """A folder the user named for a new run, claimed atomically: the claim is putting CLAIM in place whole
    (_create_claim), which only one of two processes given one folder at once can do; end_claim removes it when the
    command is done.
    Refused (UsageError, exit 2) while the process that claimed it is alive (even with `force`: its files would
    mix with ours), and when the folder holds any other file, unless `force`, or `keep` (a run resumed in its
    own folder). A claim whose process is gone (killed) does not count; it is taken over by a plain write, so two
    processes started together on a folder with a dead claim are not told apart (the one gap)."""
    import json
    import socket
    import time

    path = Path(path)
    made = [p for p in (path, *path.parents) if str(p) not in ("", ".") and not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CvtoolError(f"cannot create {path}: {e.strerror or e}", hint="choose another --out", exit_code=2) from None
    marker = path / CLAIM
    doc = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    try:
        if not _create_claim(marker, doc):
            owner = _live_owner(marker)
            if owner is not None:
                where = "" if owner.get("host") == socket.gethostname() else f" on {owner.get('host')}"
                raise UsageError(f"{path} is being written by a running `cvtool {owner.get('command')}` "
                                 f"(pid {owner['pid']}{where})",
                                 hint=f"wait for it, or choose another --out (no such run: remove {marker})")
            marker.write_text(json.dumps(doc) + "\n")  # left by a process that was killed: ours now
    except OSError as e:
        raise CvtoolError(f"cannot write into {path}: {e.strerror or e}", hint="choose another --out", exit_code=2) from None
    others = sorted(p.name for p in path.iterdir() if not p.name.startswith(CLAIM))  # racing claims' temp files too
    if others and not (force or keep):
        marker.unlink()
        shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
        raise UsageError(f"{path} is not empty ({shown})", hint=hint)
    _MADE[path] = made  # innermost first: release_if_empty removes what this claim made
    return path


def _create_claim(marker: Path, doc: dict) -> bool:
    """Put the claim in place whole, or find one there (False): written to a temp file, then hard-linked to its
    name, which fails when the name exists (O_EXCL where the file system has no hard links)."""
    import json

    text = json.dumps(doc) + "\n"
    tmp = marker.with_name(f"{CLAIM}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.link(tmp, marker)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    finally:
        tmp.unlink(missing_ok=True)
    try:  # no hard links here: the name is taken atomically, its content follows
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def end_claim(path: Path | None) -> None:
    """The command that claimed `path` is done (finished, failed or interrupted): the folder is free again."""
    if path is not None:
        with contextlib.suppress(OSError):
            (path / CLAIM).unlink()


def _live_owner(marker: Path) -> dict | None:
    """The claim in `marker` while the process that made it may still run (not us), else None."""
    import json
    import socket

    try:
        doc = json.loads(marker.read_text())
        pid = int(doc["pid"])
        if doc.get("host") != socket.gethostname():
            return doc  # another machine's (a shared disk): cannot be checked from here, so it counts
        if pid == os.getpid():
            return None
        os.kill(pid, 0)  # no signal sent: only whether it exists
    except PermissionError:  # it exists, another user's
        return doc
    except (OSError, ValueError, KeyError, TypeError):  # gone (ProcessLookupError), unreadable
        return None
    return doc


_MADE: dict[Path, list[Path]] = {}


def release_if_empty(path: Path | None) -> None:
    """Undo the claim of a run folder that a failed command left empty: its CLAIM file, the folder and the empty
    parents the claim created (never a folder with anything else in it, never one that was there before)."""
    if path is None:
        return
    marker = path / CLAIM
    if marker.is_file() and [p.name for p in path.iterdir()] == [CLAIM]:
        marker.unlink()
    for p in _MADE.pop(path, []):
        try:
            p.rmdir()
        except OSError:
            return
