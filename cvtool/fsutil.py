"""Files are written whole or not at all: write to a temp file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from cvtool.errors import CvtoolError


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
        raise CvtoolError(f"cannot write {path}: {e.strerror or e}", exit_code=2) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a finished file gets the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


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
            _MADE[path] = made  # the parents this claim created: release_if_empty removes them too
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


_MADE: dict[Path, list[Path]] = {}


def release_if_empty(path: Path | None) -> None:
    """Remove a claimed run folder that a failed command left empty, and the empty parents its claim created
    (never a folder with anything in it, never one that was there before)."""
    if path is None:
        return
    for p in [path, *_MADE.pop(path, [])]:
        try:
            p.rmdir()
        except OSError:
            return
