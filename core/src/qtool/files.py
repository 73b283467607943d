"""Output files: checked before any work, written atomically with the user's normal file mode."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .errors import QtoolError


class OutputPathError(QtoolError):
    """An output path that cannot be written, or would overwrite an input."""


def user_path(value):
    """``value`` with a leading ``~`` expanded where it is a path (a str or PathLike; anything else as it is): a
    shell expands it on a command line, Python does not, and ``output="~/out/m.onnx"`` made a folder named ``~``."""
    return os.path.expanduser(value) if isinstance(value, str | os.PathLike) else value


def file_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask (0644 under 0022)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def make_readable(path: str | os.PathLike) -> Path:
    """Give ``path`` the normal mode for the umask; for a plugin's files written through a temporary file."""
    path = Path(path)
    os.chmod(path, file_mode())
    return path


TEMPORARY_AFFIXES = len("..12345678.tmp")  # what temporary_beside adds to a name (mkstemp's 8 random characters)


def temporary_beside(path: Path) -> Path:
    """A new empty temporary file in ``path``'s folder (made if needed), to rename over ``path`` when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (flock, where the system has it) while a model and its data replace the old
    pair: runs writing one output replace it one at a time, so the pair always comes from one run (two at once
    left one run's model beside the other's data)."""
    try:
        import fcntl
    except ImportError:  # no flock here: the renames stay atomic one by one
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): the renames stay atomic one by one
            pass
        yield
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and a rename; return the path.

    The file gets the normal mode for the umask (mkstemp's 0600 would hide it from other users).
    """
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def restored_on_failure(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Where the block fails, the files at ``paths`` are put back as they were before it (one that was not there is
    removed): each old file is kept under a temporary name beside it (a hard link, a copy where there is none)."""
    kept: dict[Path, Path | None] = {}
    try:
        for path in dict.fromkeys(Path(p) for p in paths):
            kept[path] = _kept_copy(path) if path.is_file() else None
        yield
    except BaseException:
        for path, old in kept.items():
            if old is not None:
                os.replace(old, path)
            else:
                path.unlink(missing_ok=True)
        raise
    finally:
        for old in kept.values():
            if old is not None:
                old.unlink(missing_ok=True)


def _kept_copy(path: Path) -> Path:
    copy = temporary_beside(path)
    copy.unlink()
    try:
        os.link(path, copy)
    except OSError:
        shutil.copy2(path, copy)
    return copy


def check_output_given(path: str | os.PathLike, what: str = "output") -> None:
    """Fail on an output path as given that names no file: empty (it reads as the current folder) or ending in a
    slash (a folder's name; the platform would derive ``out/trail.onnx`` from ``out/trail/``)."""
    text = os.fspath(path)
    named = f"{what} {text!r}" + (" (-o)" if what == "output" else "")
    if not text:
        raise OutputPathError(f"{named}: an empty path; name the file to write")
    if text.endswith(("/", os.sep)):
        raise OutputPathError(f"{named}: ends with {text[-1]!r}, a folder's name; name a file "
                              f"(e.g. {text}model.onnx)")


def file_kind(path: Path) -> str | None:
    """What ``path`` is where it exists and is no regular file ("a folder", "a FIFO", "a character device"...);
    None for a regular file or nothing there. Symbolic links are followed."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def check_output_path(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                      what: str = "output") -> Path:
    """Fail now, before any work, when ``path`` cannot be written or names one of ``inputs``.

    Checks that ``path`` is not a folder, that its nearest existing folder is a folder
    (not a file) in which a file can be created (tried with a temporary file, removed
    at once), and that neither ``path`` nor ``path`` + ``.onnx`` is one of the inputs.
    """
    check_output_given(path, what)
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    _check_name_length(path, folder, what)
    if path.is_dir():
        raise OutputPathError(f"{what} {path}: is a folder; name a file in it")
    kind = file_kind(path)
    if kind is not None:
        raise OutputPathError(f"{what} {path}: is {kind}, not a regular file; name a file to write")
    _check_not_input(path, inputs, what)
    if not folder.is_dir():
        raise OutputPathError(f"{what} {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputPathError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return path


def _check_not_input(path: Path, inputs: Iterable[str | os.PathLike | None], what: str) -> None:
    for candidate in (path, path.with_name(path.name + ".onnx")) if not path.suffix else (path,):
        for given in inputs:
            if given is not None and _same_file(candidate, Path(given)):
                raise OutputPathError(f"{what} {path}: would overwrite the input {given}; choose another name")


def check_not_inputs(written: Mapping[str, Iterable[str | os.PathLike | None]], inputs: Iterable[Path]) -> None:
    """No file of ``written`` (as :func:`check_outputs` takes it) is one of ``inputs``: the files a model was read
    from, known once it is read (its external data)."""
    inputs = list(inputs)
    for what, files in written.items():
        for path in (Path(p) for p in files if p is not None):
            _check_not_input(path, inputs, what)


def _check_name_length(path: Path, folder: Path, what: str) -> None:
    """The name, and the temporary file's name written first, within what the file system allows."""
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX") if folder.is_dir() else 255
    except (OSError, ValueError):
        longest = 255
    needed = len(os.fsencode(path.name)) + TEMPORARY_AFFIXES
    if needed > longest:
        raise OutputPathError(f"{what} {path}: name too long: the temporary file written first needs {needed} bytes "
                              f"of name, and {folder} allows {longest}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(written: Mapping[str, Iterable[str | os.PathLike | None]], *, inputs: Iterable = ()) -> None:
    """check_output_path for every file a run writes, by what each is ("output": every file the platform writes,
    "state file", "report"; None skipped), and no two of them one file (the later would replace the earlier).

    ``inputs`` may hold objects that are not paths (a Graph, a config dict); they are skipped.
    """
    paths = [p for p in inputs if isinstance(p, str | os.PathLike)]
    claimed: dict[Path, tuple[str, Path]] = {}
    for what, files in written.items():
        for given in (p for p in files if p is not None):
            path = Path(given)
            check_output_path(given, inputs=paths, what=what)
            for candidate in _written_as(path):
                owner, other = claimed.get(candidate, (what, path))
                if owner == what:
                    continue
                if owner == "output" and candidate not in _written_as(next(iter(written["output"]))):  # beside it
                    raise OutputPathError(f"{what} {path}: the output writes this file beside the model (its data, "
                                          "a table); choose another name")
                owner = "output model" if owner == "output" else owner
                raise OutputPathError(f"{what} {path}: is the {owner}'s path ({other}); choose another name")
            claimed.update(dict.fromkeys(_written_as(path), (what, path)))


def _written_as(path: str | os.PathLike) -> set[Path]:
    """The absolute paths a file given as ``path`` may be written at (a name without a suffix may get ``.onnx``)."""
    path = Path(path).absolute()
    return {path, path.with_name(path.name + ".onnx")} if not path.suffix else {path}
