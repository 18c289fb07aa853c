"""Files in an output folder, written and read without going through links planted in it.

An output folder (``xai-torch explain --out``, a dataset run's folder) may already hold
entries someone else put there; a symbolic link named like one of our files (``chelsea.png``
-> ``~/.bashrc``) must not make us overwrite or read the file it points to. The rules, shared
by :mod:`xai_torch.cli`, :mod:`xai_torch.report` and :mod:`xai_torch.dataset`:

* **Writes replace, never follow.** :func:`atomic_write` writes a new temporary file beside
  the destination (``O_CREAT | O_EXCL | O_NOFOLLOW``: a fresh name, never an existing entry)
  and renames it onto the destination. A rename replaces a link at the destination *itself*;
  the file it pointed to is untouched. A reader sees the old file or the whole new one.
* **A command's outputs appear together or not at all.** :func:`staged` gives a fresh private
  folder inside the output folder; when the work succeeds its files are renamed into the
  output folder (the same rule: links there are replaced), when it fails the folder is
  removed and the output folder is as it was.
* **Reads stay inside.** :func:`inside` resolves a name read from a file (a manifest's shard
  paths) and refuses one that leaves the folder (``../x``, an absolute path, a link out).

The output folder itself may be a link (``--out`` naming a link to a scratch disk): that is
the user's own choice, and it is followed.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

from .errors import XaiError

__all__ = ["atomic_write", "check_folder", "inside", "staged"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_STAGE_PREFIX = ".xai-torch-staging-"


def check_folder(path: Union[str, os.PathLike[str]], what: str = "--out") -> Path:
    """``path`` as a Path, refused when it names something other than a folder.

    Args:
        path: an output folder (it need not exist yet).
        what: how the message names it.

    Returns:
        ``Path(path)`` (nothing is created).

    Raises:
        XaiError: ``path`` is an existing file (or a link to one).

    Example:
        >>> check_folder("out/explain")
        PosixPath('out/explain')
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise XaiError(f"{what} {str(p)!r} is an existing file, not a folder; name a folder (it is created "
                       "when missing).")
    return p


def atomic_write(path: Union[str, os.PathLike[str]], data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all, replacing (never following) a link there.

    Args:
        path: the destination; its folder must exist.
        data: the bytes.

    Returns:
        ``Path(path)``.

    Raises:
        XaiError: ``path`` is a folder, or the folder cannot be written.

    Example:
        >>> atomic_write(Path("runs/ig/manifest.json"), b"{}")
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise XaiError(f"cannot write {str(path)!r}: a folder of that name is in the way; move it.")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, flags, 0o666)  # a fresh name: an entry planted there makes this fail
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # rename: a link at ``path`` is replaced, its target untouched
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise XaiError(f"cannot write {str(path)!r}: {err.strerror or err}.") from None
    return path


def inside(root: Union[str, os.PathLike[str]], name: object, what: str = "file") -> Path:
    """``root / name`` with links resolved, refused unless it stays inside ``root``.

    Args:
        root: the folder (itself resolved: a link as the folder is fine).
        name: a relative path read from a file (a manifest's shard file name).
        what: how the message names it.

    Returns:
        The resolved path, inside the resolved ``root``.

    Raises:
        XaiError: ``name`` is not a non-empty string, is absolute, or resolves outside ``root``
        (``..``, or a link that points out).

    Example:
        >>> inside("runs/ig", "shard-00000.npz", "shard")   # .../runs/ig/shard-00000.npz
        >>> inside("runs/ig", "../secret.npz", "shard")     # XaiError
    """
    base = Path(root).resolve()
    if not isinstance(name, str) or not name or "\x00" in name:
        raise XaiError(f"{what} name {name!r} in {str(root)!r} is not a file name.")
    target = (base / name).resolve()
    if Path(name).is_absolute() or target == base or not target.is_relative_to(base):
        raise XaiError(f"{what} {name!r} points outside its folder {str(root)!r} (to {str(target)!r}); "
                       "only files inside the folder are read.")
    return target


@contextmanager
def staged(out: Union[str, os.PathLike[str]], what: str = "--out") -> Iterator[Path]:
    """A fresh private folder to write a command's files into; they move into ``out`` only if
    the block succeeds.

    The staging folder is made inside ``out`` (so the final renames never cross file systems)
    with a random name and mode 0700. On success every file in it is renamed into ``out``:
    an entry of the same name there is replaced (a link itself, never its target; a folder in
    the way is refused before anything moves). On any exception the staging folder is deleted,
    and ``out`` too when this call created it: ``out`` is left as it was.
    A process killed outright (SIGKILL) cannot clean up: its ``.xai-torch-staging-*`` folder
    stays in ``out`` and may be deleted.

    Args:
        out: the output folder (created when missing, parents too).
        what: how messages name it.

    Yields:
        The staging folder: write flat files there (sub-folders are not moved).

    Raises:
        XaiError: ``out`` is a file or cannot be created, or a folder in it is in the way of a file.

    Example:
        >>> with staged("out/explain") as tmp:
        ...     (tmp / "summary.json").write_text("{}")
        >>> Path("out/explain/summary.json").is_file()
        True
    """
    out = check_folder(out, what)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=_STAGE_PREFIX, dir=out))
    except OSError as err:
        raise XaiError(f"cannot create {what} {str(out)!r}: {err.strerror or err}.") from None
    try:
        yield stage
        files = sorted(p for p in stage.iterdir() if p.is_file() and not p.is_symlink())
        blocked = [p.name for p in files if (out / p.name).is_dir() and not (out / p.name).is_symlink()]
        if blocked:
            raise XaiError(f"{what} {str(out)!r} holds folder(s) named like output files: {blocked}; move them.")
        for p in files:
            try:
                os.replace(p, out / p.name)  # replaces a link at the destination, never writes through it
            except OSError as err:
                raise XaiError(f"cannot move {p.name!r} into {what} {str(out)!r}: {err.strerror or err}.") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            try:
                out.rmdir()  # only when empty
            except OSError:
                pass
        raise
    shutil.rmtree(stage, ignore_errors=True)
