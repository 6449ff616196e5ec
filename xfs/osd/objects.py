"""The OSD's on-disk object store (format version 3): the one canonical description.

Layout under ``root``::

    FORMAT                    "xfs-osd-objects 2\\n"
    UUID                      this OSD's uuid (uuid4, canonical form, then "\\n")
    objects/<pp>/<volume>/<ino>/<objno>
    objects/<pp>/<volume>/<ino>/epoch

where ``<pp>`` is the first two hex digits of sha256(file_id), ``file_id`` is
``"<volume>:<ino>"`` and each object file is a header, a table of per-4-KiB-block
CRC32Cs and the data (:mod:`xfs.common.object_format`), so a small read reads and verifies
only its blocks. An object is replaced whole (temp file ``.tmp.<objno>.<hex>`` beside it, then
``os.replace``), so a reader never sees it torn. Paths are only ever built from ids that
:func:`parse_file_id` and :func:`check_objno` accepted, so nothing outside ``root`` is
touched whatever a peer sends.

Durability (docs/design/replication.md, "Durability on an OSD"): a write syncs nothing;
:meth:`ObjectStore.fsync` (the client's ``fsync(2)`` and ``close()``) fsyncs the objects
of the file written since its last fsync, its directory if names in it changed (every
rename does) and the directories above it only if the file's directory is new; the
bookkeeping is :mod:`xfs.osd.unsynced`, and a file this process has no record of (after a
restart) is synced whole. Records (``epoch``, ``xloc``), ``put`` and ``write(sync=True)``
are durable before they return: data fsynced before the rename, then the directory.

``epoch`` holds the highest truncate epoch a truncate of the file presented here, as
``struct.pack(">4sHHQI", b"XFSE", 1, 0, epoch, crc32c(the 16 bytes before))``; it is
written only by a truncate that raises it (temp ``.tmp.epoch.<hex>``, fsync, replace,
fsync of the directories), and a missing file means epoch 0. A write or truncate whose
XCap carries a lower epoch is refused (:class:`StaleEpoch`); reads are not fenced.

``xloc`` (format 3) holds the highest XLocSet version of the file this OSD has installed
(docs/design/replication.md), in the same record format as ``epoch``; a missing file
means version 0. Requests carrying an older version are refused by the replication
layer (``xfs.osd.replication``), which is what fences a stale primary. Version 1, a new
file's, is kept in memory only: no XLocSet is older, so a record of it fences nothing.

Version 1 was the layout without ``epoch`` files, version 2 without ``xloc`` files,
version 3 without block tables in objects: :meth:`ObjectStore.open` upgrades any of them
by rewriting FORMAT (every file then has epoch 0 and XLocSet version 0; objects without
a table are still read, and rewritten with one by their next write). Nothing reads a
version-4 store as an older one.

Everything here is synchronous; the service calls it from worker threads, concurrently.
Read-modify-write of one object is serialised by a striped lock on (file_id, objno);
reads take no lock (an object file is always whole). Writes hold a striped per-file gate
shared, truncate and delete hold it exclusive, so a write that passed the epoch check
lands before a truncate that raises the epoch, never after it. An fsync holds each
object's lock while it fsyncs that object, and the gate exclusive only to list the
objects of a file it has no record of.

Errors: bad ids and arguments raise ``XfsError(EINVAL)``; a bad header, short file or
CRC mismatch raises :class:`CorruptObject` (EIO), a bad epoch file :class:`CorruptEpoch`
(EIO); an older truncate epoch raises :class:`StaleEpoch` (EACCES); a full disk raises
``XfsError(ENOSPC)``; any other OS failure ``XfsError(EIO)``. A store whose FORMAT or
UUID is missing or wrong raises :class:`StoreFormatError` from :meth:`ObjectStore.open`
(a startup failure, never sent on the wire, so not an ``XfsError``).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import secrets
import struct
import threading
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import google_crc32c

from xfs.common import extents as extents_
from xfs.common import object_format, object_io
from xfs.common.object_format import HEADER
from xfs.osd.unsynced import Unsynced
from xfs.proto.errors import XfsError

FORMAT_VERSION = 4
FORMAT_LINE = f"xfs-osd-objects {FORMAT_VERSION}\n"
# older formats open() upgrades in place
UPGRADABLE = {"xfs-osd-objects 1\n", "xfs-osd-objects 2\n", "xfs-osd-objects 3\n"}
MAX_OBJNO = 1 << 40
MAX_INO = (1 << 63) - 1
MAX_OBJECT_SIZE = object_format.MAX_DATA  # stripe size is checked against it
MAX_EPOCH = (1 << 64) - 1
TEMP_PREFIX = ".tmp."
EPOCH_NAME = "epoch"
XLOC_NAME = "xloc"  # same record format as EPOCH_NAME
EPOCH_MAGIC = b"XFSE"
EPOCH_VERSION = 1
EPOCH_RECORD = struct.Struct(">4sHHQI")  # magic, version, flags, epoch, crc32c(first 16)
# a new file's XLocSet version (xfs/mrc/replicas.py new_xloc): none is older, so an OSD
# keeps it in memory only (a missing record, version 0, refuses nothing more)
FIRST_XLOC_VERSION = 1

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INO_RE = re.compile(r"[1-9][0-9]{0,18}")
_OBJNO_RE = re.compile(r"0|[1-9][0-9]{0,12}")
_PREFIX_RE = re.compile(r"[0-9a-f]{2}")
TEMP_RE = re.compile(r"\.tmp\.(?:0|[1-9][0-9]{0,12}|epoch|xloc)\.[0-9a-f]{16}")
_N_LOCKS = 64
_EPOCH_CACHE = 1 << 16  # files whose epoch is remembered in memory


class CorruptObject(XfsError):
    """An object on disk failed verification (header, length or CRC32C)."""

    def __init__(self, file_id: str, objno: int, reason: str = "") -> None:
        super().__init__(
            errno.EIO, f"corrupt object {objno} of {file_id}" + (f": {reason}" if reason else "")
        )
        self.file_id = file_id
        self.objno = objno


class CorruptEpoch(XfsError):
    """A file's epoch record on disk failed verification."""

    def __init__(self, file_id: str, reason: str) -> None:
        super().__init__(errno.EIO, f"corrupt truncate epoch of {file_id}: {reason}")
        self.file_id = file_id


class StaleEpoch(XfsError):
    """A write or truncate carried a truncate epoch older than one this OSD has seen."""

    def __init__(self, file_id: str, epoch: int, current: int) -> None:
        super().__init__(
            errno.EACCES,
            f"xcap: truncate epoch {epoch} of {file_id} is older than {current} "
            "(the file was truncated since: renew the XCap)",
        )
        self.file_id = file_id
        self.epoch = epoch
        self.current = current


class StoreFormatError(Exception):
    """The directory is not an object store of this format version."""


# ----------------------------------------------------------------------------- pure logic
def _einval(message: str) -> XfsError:
    return XfsError(errno.EINVAL, message)


def parse_file_id(file_id: object) -> tuple[str, int]:
    """Split ``"<volume-uuid>:<ino>"`` into (volume, ino); EINVAL unless canonical."""
    if not isinstance(file_id, str):
        raise _einval("file id must be a string")
    volume, sep, ino = file_id.partition(":")
    if not (sep and _UUID_RE.fullmatch(volume) and _INO_RE.fullmatch(ino)):
        raise _einval(f"bad file id {file_id!r:.100}")
    n = int(ino)
    if n > MAX_INO:
        raise _einval(f"bad file id {file_id!r:.100}: inode out of range")
    return volume, n


def check_objno(objno: object) -> int:
    if not isinstance(objno, int) or isinstance(objno, bool) or not 0 <= objno <= MAX_OBJNO:
        raise _einval(f"bad object number {objno!r:.50}")
    return objno


def check_uint(name: str, value: object, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _einval(f"bad {name} {value!r:.50}")
    if maximum is not None and value > maximum:
        raise _einval(f"{name} {value} exceeds {maximum}")
    return value


def file_relpath(file_id: str) -> tuple[str, str, str]:
    """The directory of a file under objects/, as its three path components."""
    volume, ino = parse_file_id(file_id)
    prefix = hashlib.sha256(file_id.encode()).hexdigest()[:2]
    return prefix, volume, str(ino)


def parse_object_relpath(parts: tuple[str, ...]) -> tuple[str, int] | None:
    """(file_id, objno) for the components of a path under objects/, or None.

    The exact inverse of :meth:`ObjectStore.object_path`: only canonical names parse.
    """
    if len(parts) != 4:
        return None
    prefix, volume, ino, name = parts
    if not _OBJNO_RE.fullmatch(name) or int(name) > MAX_OBJNO:
        return None
    file_id = f"{volume}:{ino}"
    try:
        if file_relpath(file_id) != (prefix, volume, ino):
            return None
    except XfsError:
        return None
    return file_id, int(name)


def is_valid_dir(parts: tuple[str, ...]) -> bool:
    """Whether the components name a directory the layout has (1 to 3 levels deep)."""
    if len(parts) == 1:
        return bool(_PREFIX_RE.fullmatch(parts[0]))
    if len(parts) == 2:
        return bool(_PREFIX_RE.fullmatch(parts[0]) and _UUID_RE.fullmatch(parts[1]))
    if len(parts) == 3:
        try:
            return file_relpath(f"{parts[1]}:{parts[2]}") == parts
        except XfsError:
            return False
    return False


def encode_epoch(epoch: int) -> bytes:
    check_uint("truncate epoch", epoch, MAX_EPOCH)
    head = EPOCH_RECORD.pack(EPOCH_MAGIC, EPOCH_VERSION, 0, epoch, 0)[:-4]
    return head + struct.pack(">I", google_crc32c.value(head))


def decode_epoch(raw: bytes) -> int:
    """The epoch of an epoch record; ValueError with the reason if it is not one."""
    if len(raw) != EPOCH_RECORD.size:
        raise ValueError(f"{len(raw)} bytes, not {EPOCH_RECORD.size}")
    magic, version, flags, epoch, crc = EPOCH_RECORD.unpack(raw)
    if magic != EPOCH_MAGIC:
        raise ValueError(f"bad magic {magic!r}")
    if version != EPOCH_VERSION or flags != 0:
        raise ValueError(f"unknown epoch record version {version} flags {flags}")
    if google_crc32c.value(raw[:-4]) != crc:
        raise ValueError("CRC32C mismatch")
    return int(epoch)


def check_format(root: Path) -> str:
    """Check FORMAT and UUID of an existing store; return its uuid."""
    try:
        fmt = (root / "FORMAT").read_bytes()
        osd_uuid = (root / "UUID").read_text("ascii", "replace").strip()
    except FileNotFoundError as e:
        raise StoreFormatError(f"{root}: missing {Path(e.filename).name}") from None
    except OSError as e:
        raise StoreFormatError(f"{root}: {e.strerror}") from None
    if fmt != FORMAT_LINE.encode():
        raise StoreFormatError(
            f"{root}: FORMAT is {fmt[:60]!r}, this xfs reads {FORMAT_LINE.strip()!r} only"
        )
    if not _UUID_RE.fullmatch(osd_uuid):
        raise StoreFormatError(f"{root}: UUID file holds no uuid")
    if not (root / "objects").is_dir():
        raise StoreFormatError(f"{root}: missing objects/")
    return osd_uuid


# ----------------------------------------------------------------------------- I/O
@contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """OSError -> XfsError: ENOSPC (and EDQUOT) as ENOSPC, anything else as EIO."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise XfsError(errno.ENOSPC, f"{what}: no space left on OSD") from e
        raise XfsError(errno.EIO, f"{what}: {e.strerror or e}") from e


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_path(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(d: Path) -> list[Path]:
    """Make a file's directory and the ones above it (up to objects/) that are missing;
    the directories it made, from the top."""
    made: list[Path] = []
    for level in (d.parent.parent, d.parent, d):
        try:
            level.mkdir()
        except FileExistsError:
            continue
        made.append(level)
    return made


def _write_file_atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class _Gate:
    """Shared (writes) or exclusive (truncate, delete) use of the files of one stripe.

    A waiting exclusive user holds new shared users back, so truncates are not starved.
    Not reentrant: no caller takes a gate it already holds.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class ObjectStore:
    """Objects of files on one local file system. Call :meth:`open` before use."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self._uuid: str | None = None
        self._locks = [threading.Lock() for _ in range(_N_LOCKS)]
        self._gates = [_Gate() for _ in range(_N_LOCKS)]
        self._epochs: OrderedDict[str, int] = OrderedDict()  # file_id -> epoch on disk
        self._epochs_lock = threading.Lock()
        self._xlocs: dict[str, int] = {}  # file_id -> installed XLocSet version
        self._xlocs_lock = threading.Lock()
        self._xloc_write = threading.Lock()
        self._unsynced = Unsynced()  # what fsync must make durable, per file

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Create the layout in an empty (or missing) directory, else check it (and
        upgrade a store of an older format version, see the module's description)."""
        with _os_errors(f"open {self.root}"):
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / "FORMAT").exists():
                self._create()
            else:
                self._upgrade()
        self._uuid = check_format(self.root)

    def _upgrade(self) -> None:
        try:
            fmt = (self.root / "FORMAT").read_text("ascii", "replace")
        except OSError:
            return  # check_format reports it
        if fmt in UPGRADABLE:
            # 1 -> 2 adds epoch files, 2 -> 3 xloc files; without any it is valid as 3
            _write_file_atomic(self.root / "FORMAT", FORMAT_LINE.encode())
            _fsync_path(self.root)

    def _create(self) -> None:
        # FORMAT is written last, so a store without it is one whose creation was cut short.
        leftovers = {p.name for p in self.root.iterdir()}
        known = {"UUID", "objects", f"{TEMP_PREFIX}UUID", f"{TEMP_PREFIX}FORMAT"}
        if leftovers - known or (self.objects.is_dir() and any(self.objects.iterdir())):
            raise StoreFormatError(f"{self.root}: not empty and not an xfs object store")
        if not (self.root / "UUID").exists():
            _write_file_atomic(self.root / "UUID", f"{uuidlib.uuid4()}\n".encode())
        self.objects.mkdir(exist_ok=True)
        _write_file_atomic(self.root / "FORMAT", FORMAT_LINE.encode())
        _fsync_path(self.root)

    @property
    def uuid(self) -> str:
        if self._uuid is None:
            raise RuntimeError("ObjectStore.open() has not been called")
        return self._uuid

    # ------------------------------------------------------------------ paths
    def file_dir(self, file_id: str) -> Path:
        return self.objects.joinpath(*file_relpath(file_id))

    def open_dir(self, file_id: str) -> int:
        """A read-only descriptor of the file's directory (the caller closes it); ENOENT
        if no object of the file is here."""
        try:
            return os.open(self.file_dir(file_id), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise XfsError(errno.ENOENT, f"no object of {file_id} here") from None

    def object_path(self, file_id: str, objno: int) -> Path:
        return self.file_dir(file_id) / str(check_objno(objno))

    def _lock(self, file_id: str, objno: int) -> threading.Lock:
        return self._locks[hash((file_id, objno)) % _N_LOCKS]

    def _gate(self, file_id: str) -> _Gate:
        return self._gates[hash(file_id) % _N_LOCKS]

    # ------------------------------------------------------------------ truncate epochs
    def epoch(self, file_id: str) -> int:
        """The highest truncate epoch a truncate of the file presented here (0: none)."""
        with self._gate(file_id).shared():
            return self._epoch(file_id)

    def _epoch(self, file_id: str) -> int:
        """``epoch`` with the file's gate held (so no truncate stores one meanwhile)."""
        d = self.file_dir(file_id)
        with self._epochs_lock:
            if file_id in self._epochs:
                self._epochs.move_to_end(file_id)
                return self._epochs[file_id]
        with _os_errors(f"read the truncate epoch of {file_id}"):
            try:
                fd = os.open(d / EPOCH_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                raw = None
            else:
                with open(fd, "rb", buffering=0) as f:
                    raw = f.read(EPOCH_RECORD.size + 1)
        try:
            epoch = 0 if raw is None else decode_epoch(raw)
        except ValueError as e:
            raise CorruptEpoch(file_id, str(e)) from None
        self._remember_epoch(file_id, epoch)
        return epoch

    def _remember_epoch(self, file_id: str, epoch: int | None) -> None:
        with self._epochs_lock:
            if epoch is None:
                self._epochs.pop(file_id, None)
                return
            self._epochs[file_id] = epoch
            self._epochs.move_to_end(file_id)
            while len(self._epochs) > _EPOCH_CACHE:
                self._epochs.popitem(last=False)

    def _check_epoch(self, file_id: str, epoch: int) -> int:
        """Refuse ``epoch`` if older than the file's; returns the file's. Gate held."""
        current = self._epoch(file_id)
        if check_uint("truncate epoch", epoch, MAX_EPOCH) < current:
            raise StaleEpoch(file_id, epoch, current)
        return current

    def _store_epoch(self, file_id: str, epoch: int) -> None:
        """Persist a higher epoch (durably, before the truncate acts). Gate held exclusive."""
        self._remember_epoch(file_id, None)
        with _os_errors(f"write the truncate epoch of {file_id}"):
            path = self.file_dir(file_id) / EPOCH_NAME
            self._replace(file_id, path, None, encode_epoch(epoch), sync=True)
        self._remember_epoch(file_id, epoch)

    # ------------------------------------------------------------------ XLocSet versions
    def xloc_version(self, file_id: str) -> int:
        """The highest XLocSet version of the file installed here (0: none)."""
        with self._xlocs_lock:
            if file_id in self._xlocs:
                return self._xlocs[file_id]
        path = self.file_dir(file_id) / XLOC_NAME
        with _os_errors(f"read the XLocSet version of {file_id}"):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raw = None
        try:
            version = 0 if raw is None else decode_epoch(raw)
        except ValueError as e:
            raise CorruptEpoch(file_id, f"xloc record: {e}") from None
        with self._xlocs_lock:
            self._xlocs[file_id] = version
        return version

    def cached_xloc_version(self, file_id: str) -> int | None:
        """The installed XLocSet version if it is in memory (no I/O), else None."""
        with self._xlocs_lock:
            return self._xlocs.get(file_id)

    def admit_xloc(self, file_id: str, version: int) -> tuple[int, bool]:
        """Install ``version`` if it is newer (as :meth:`install_xloc_version`), in one
        call: (the version installed before, whether this OSD held anything of the file
        before)."""
        held = self.file_dir(file_id).is_dir()
        before = self.xloc_version(file_id)
        if version > before:
            self.install_xloc_version(file_id, version)
        return before, held

    def install_xloc_version(self, file_id: str, version: int) -> int:
        """Persist ``version`` if it is higher than the installed one; returns the
        installed version afterwards (durable before this returns). The first version
        of a file is only remembered: no older XLocSet exists to fence (see the module's
        description), so losing it in a crash refuses no request it would have."""
        check_uint("XLocSet version", version, MAX_EPOCH)
        with self._xloc_write:
            current = self.xloc_version(file_id)
            if version > current:
                if version > FIRST_XLOC_VERSION:
                    path = self.file_dir(file_id) / XLOC_NAME
                    with _os_errors(f"write the XLocSet version of {file_id}"):
                        self._replace(file_id, path, None, encode_epoch(version), sync=True)
                with self._xlocs_lock:
                    self._xlocs[file_id] = version
                return version
            return current

    def sums(self, file_id: str) -> list[tuple[int, int, int]]:
        """(objno, crc32c, length) of every object held here, from the headers."""
        out = []
        for objno, path in self._held(file_id):
            with _os_errors(f"read object {objno} of {file_id}"):
                try:
                    with open(path, "rb", buffering=0) as f:
                        header = f.read(HEADER.size)
                except FileNotFoundError:
                    continue
            try:
                _, crc, length = object_format.decode_header(header)
            except ValueError:
                crc, length = 0, -1  # unreadable: differs from every good copy
            out.append((objno, crc, length))
        return out

    def load(self, file_id: str, objno: int) -> bytes | None:
        """The whole verified object, or None if this OSD does not hold it."""
        return self._load(file_id, objno, self.object_path(file_id, objno))

    def put(
        self, file_id: str, objno: int, data: bytes | None, *, epoch: int | None = None
    ) -> None:
        """Replace an object whole (``None``: remove it), durably: reconciliation, repair
        and fills. Fenced by the truncate epoch like ``write``."""
        path = self.object_path(file_id, objno)
        with self._gate(file_id).shared(), self._lock(file_id, objno):
            if epoch is not None:
                self._check_epoch(file_id, epoch)
            if data is None:
                with _os_errors(f"remove object {objno} of {file_id}"):
                    path.unlink(missing_ok=True)
                self._unsynced.wrote(file_id, None)  # a name went: the next fsync syncs it
            else:
                self._store(file_id, objno, path, bytes(data), sync=True)

    def _held(self, file_id: str) -> list[tuple[int, Path]]:
        """The objects of a file on disk, by object number."""
        d = self.file_dir(file_id)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        return sorted(
            (int(n), d / n) for n in names if _OBJNO_RE.fullmatch(n) and int(n) <= MAX_OBJNO
        )

    # ------------------------------------------------------------------ objects
    def _load(self, file_id: str, objno: int, path: Path) -> bytes | None:
        """The verified data of an object, or None if it does not exist."""
        with self._opened(file_id, objno, path) as fd:
            if fd is None:
                return None
            raw = _read_all(fd)
        try:
            return object_format.decode(raw)
        except ValueError as e:
            raise CorruptObject(file_id, objno, str(e)) from None

    @staticmethod
    @contextmanager
    def _opened(file_id: str, objno: int, path: Path) -> Iterator[int | None]:
        """A descriptor of the object file for reading, or None if there is none."""
        with _os_errors(f"read object {objno} of {file_id}"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                yield None
                return
            try:
                yield fd
            finally:
                os.close(fd)

    def _load_range(
        self, file_id: str, objno: int, path: Path, offset: int, length: int
    ) -> bytes | None:
        """Bytes [offset, offset+length) of an object, short past its end, reading and
        verifying only the blocks they lie in (all of an object without a block table);
        None if the object does not exist."""
        with self._opened(file_id, objno, path) as fd:
            return None if fd is None else self._read_blocks(file_id, objno, fd, offset, length)

    def _read_blocks(self, file_id: str, objno: int, fd: int, offset: int, length: int) -> bytes:
        try:
            return object_io.read_range(fd, offset, length)
        except ValueError as e:
            raise CorruptObject(file_id, objno, str(e)) from None

    def _store(self, file_id: str, objno: int, path: Path, data: bytes, sync: bool) -> None:
        with _os_errors(f"write object {objno} of {file_id}"):
            try:
                prefix = object_format.encode(data)
            except ValueError as e:
                raise _einval(str(e)) from None
            self._replace(file_id, path, objno, prefix, data, sync=sync)

    def _replace(
        self, file_id: str, path: Path, objno: int | None, *chunks: bytes, sync: bool
    ) -> None:
        """Write ``path`` (object ``objno`` of the file, or a record) anew through a
        temporary file of its own: the old content stays whole until the rename.

        Without ``sync`` nothing is synced and the object is noted for the file's next
        fsync; the caller holds the object's lock, which orders the note and the rename
        against that fsync (see :meth:`Unsynced.sync`). With ``sync``, durably: the data
        before the rename, then the directory (and the ones above it if need be)."""
        d = path.parent
        tmp = d / f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            self._unsynced.make_dir(file_id, functools.partial(_make_dir, d))
            fd = os.open(tmp, flags, 0o600)
        try:
            try:
                for chunk in chunks:
                    _write_all(fd, chunk)
                if sync or self._unsynced.wrote(file_id, objno):
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if sync:
            _fsync_path(d, os.O_DIRECTORY)
            if self._unsynced.ancestors_unsynced(file_id):
                self._sync_ancestors(file_id, d, everything=not self._unsynced.known(file_id))

    def _sync_ancestors(self, file_id: str, file_dir: Path, *, everything: bool) -> None:
        """fsync the directories above a file's that gained an entry: with
        ``everything`` (a file this process has no record of) all of them up to
        objects/, else the parent of each directory on the way that this process made
        and no fsync has covered yet (made for this file or another one: a file is
        durable only once every directory above it is)."""
        if everything:
            for d in (file_dir.parent, file_dir.parent.parent, self.objects):
                _fsync_path(d, os.O_DIRECTORY)
        else:
            for made in (file_dir, file_dir.parent, file_dir.parent.parent):
                if self._unsynced.entry_unsynced(made):
                    _fsync_path(made.parent, os.O_DIRECTORY)
                    self._unsynced.entry_synced(made)
        self._unsynced.ancestors_synced(file_id)

    def read(self, file_id: str, objno: int, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of an object: short or empty past what it holds."""
        return self.read_held(file_id, objno, offset, length) or b""

    def read_held(self, file_id: str, objno: int, offset: int, length: int) -> bytes | None:
        """As :meth:`read`, but None if this OSD does not hold the object."""
        path = self.object_path(file_id, objno)
        check_uint("offset", offset)
        check_uint("length", length)
        return self._load_range(file_id, objno, path, offset, length)

    def write(
        self,
        file_id: str,
        objno: int,
        offset: int,
        data: bytes,
        sync: bool = False,
        *,
        epoch: int | None = None,
        extents: Sequence[extents_.Extent] = (),
    ) -> None:
        """Write ``data`` at ``offset``; a gap after the old end is zero-filled. With
        ``extents``, ``data`` holds several ranges of the object, written at once
        (xfs/common/extents.py).

        With ``epoch`` (the XCap's truncate epoch), refused if the file was truncated
        here with a higher one (:class:`StaleEpoch`)."""
        path = self.object_path(file_id, objno)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _einval("data must be bytes")
        data = bytes(data)
        why = extents_.problem(offset, len(data), extents)
        if why:
            raise _einval(why)
        check_uint("offset", offset, max(0, MAX_OBJECT_SIZE - len(data)))
        if extents_.end_of(offset, len(data), extents) > MAX_OBJECT_SIZE:
            raise _einval(f"a range ends past {MAX_OBJECT_SIZE} bytes")
        with self._gate(file_id).shared(), self._lock(file_id, objno):
            if epoch is not None:
                self._check_epoch(file_id, epoch)
            if extents or offset != 0 or self._length(file_id, objno, path) > len(data):
                old = self._load(file_id, objno, path) or b""
                buf = bytearray(old)
                extents_.patch(buf, data, extents_.ranges(offset, len(data), extents))
                data = bytes(buf)
            self._store(file_id, objno, path, data, sync)

    def _length(self, file_id: str, objno: int, path: Path) -> int:
        """An object's length from its header, not verified (0 if missing); if the header
        is bad, its size on disk less the header, which no good object's length exceeds."""
        with self._opened(file_id, objno, path) as fd:
            if fd is None:
                return 0
            try:
                return object_format.decode_header(os.pread(fd, HEADER.size, 0))[2]
            except ValueError:
                return max(0, os.fstat(fd).st_size - HEADER.size)

    def _header_length(self, file_id: str, objno: int, path: Path) -> int | None:
        """An object's length from its header, checked against the file's size."""
        with self._opened(file_id, objno, path) as fd:
            if fd is None:
                return None
            header = os.pread(fd, HEADER.size, 0)
            size = os.fstat(fd).st_size
        try:
            version, _, length = object_format.decode_header(header)
        except ValueError as e:
            raise CorruptObject(file_id, objno, str(e)) from None
        if size != object_format.file_size(version, length):
            raise CorruptObject(file_id, objno, f"file is {size} bytes, header says {length}")
        return length

    # ------------------------------------------------------------------ files
    def truncate(
        self,
        file_id: str,
        size: int,
        stripe_size: int,
        width: int,
        column: int,
        *,
        epoch: int | None = None,
    ) -> None:
        """Make the objects held here consistent with a file of ``size`` bytes.

        Objects starting at or past ``size`` are deleted and the one holding bytes past
        ``size`` is cut; the rest (holes included) stay. Acts on every object of the file
        on disk, a superset of the column's own, so that even a stray object cannot hold
        data past the end; ``width`` and ``column`` are only checked.

        With ``epoch`` (the XCap's truncate epoch): refused if older than the file's
        (:class:`StaleEpoch`); a higher one is stored first, fencing off every write
        that carries an older one. The same epoch again (a retry) truncates again.
        """
        self.file_dir(file_id)
        check_uint("size", size)
        if check_uint("stripe size", stripe_size, MAX_OBJECT_SIZE) == 0:
            raise _einval("stripe size must be positive")
        if check_uint("width", width) == 0 or check_uint("column", column) >= width:
            raise _einval(f"bad column {column} of width {width}")
        if epoch is not None:
            check_uint("truncate epoch", epoch, MAX_EPOCH)
        with self._gate(file_id).exclusive():
            if epoch is not None and self._check_epoch(file_id, epoch) < epoch:
                self._store_epoch(file_id, epoch)
            self._cut(file_id, size, stripe_size)

    def _cut(self, file_id: str, size: int, stripe_size: int) -> None:
        for objno, path in self._held(file_id):
            start = objno * stripe_size
            with self._lock(file_id, objno):
                if start >= size:
                    with _os_errors(f"delete object {objno} of {file_id}"):
                        path.unlink(missing_ok=True)
                    self._unsynced.wrote(file_id, None)  # a name went
                elif self._length(file_id, objno, path) > size - start:
                    data = self._load(file_id, objno, path)
                    if data is not None:
                        self._store(file_id, objno, path, data[: size - start], sync=False)

    def held_size(self, file_id: str, stripe_size: int) -> int:
        """max(objno * stripe_size + len(object)) over the objects held here, or 0."""
        self.file_dir(file_id)
        if check_uint("stripe size", stripe_size) == 0:
            raise _einval("stripe size must be positive")
        size = 0
        for objno, path in self._held(file_id):
            length = self._header_length(file_id, objno, path)
            if length is not None:
                size = max(size, objno * stripe_size + length)
        return size

    def held_bytes(self, file_id: str) -> int:
        """The bytes of data of the file's objects held here (what st_blocks counts),
        from their sizes on disk: exact for objects with a block table, a few bytes in a
        thousand low for objects written before (a hint for st_blocks, nothing more)."""
        total = 0
        for _, path in self._held(file_id):
            with _os_errors(f"stat {path.name} of {file_id}"):
                try:
                    size = os.stat(path, follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
            total += object_format.data_length(size)
        return total

    def sync_and_measure(self, file_id: str) -> int:
        """:meth:`fsync`, then :meth:`held_bytes` (one worker-thread call for both)."""
        self.fsync(file_id)
        return self.held_bytes(file_id)

    def fsync(self, file_id: str) -> None:
        """Make durable what was written of the file here: the objects written since its
        last fsync and the directory entries that changed; every object and directory
        up to objects/ if this process has no record of the file (it restarted)."""
        d = self.file_dir(file_id)
        with _os_errors(f"fsync {file_id}"), self._unsynced.sync(file_id) as todo:
            objects = todo.objects
            if objects is None:
                # no write of the file is between its rename and its note meanwhile:
                # each one either renamed before the listing or is noted for next time
                with self._gate(file_id).exclusive():
                    self._unsynced.track(file_id)
                    objects = frozenset(objno for objno, _ in self._held(file_id))
            for objno in sorted(objects):
                with self._lock(file_id, objno):  # see Unsynced.sync
                    try:
                        _fsync_path(d / str(objno))
                    except FileNotFoundError:
                        continue  # truncated away since: the directory fsync covers it
            try:
                if todo.entries or todo.ancestors:
                    _fsync_path(d, os.O_DIRECTORY)
                if todo.ancestors:
                    self._sync_ancestors(file_id, d, everything=todo.objects is None)
            except FileNotFoundError:
                if d.exists():
                    raise
                # the file was deleted (or never written here): nothing to sync

    def delete(self, file_id: str) -> None:
        """Remove every object of the file and its directory; missing is fine.

        The volume directory above it stays (shared with the volume's other files).
        """
        d = self.file_dir(file_id)
        with self._gate(file_id).exclusive(), _os_errors(f"delete {file_id}"):
            self._remember_epoch(file_id, None)
            self._unsynced.forget(file_id)
            self._unsynced.entry_synced(d)  # (gone: nothing to make durable of it)
            with self._xlocs_lock:
                self._xlocs.pop(file_id, None)
            for _ in range(3):  # a racing write may add an object between unlinks and rmdir
                try:
                    names = os.listdir(d)
                except FileNotFoundError:
                    return
                for name in names:
                    (d / name).unlink(missing_ok=True)
                try:
                    d.rmdir()
                    return
                except FileNotFoundError:
                    return
                except OSError as e:
                    if e.errno != errno.ENOTEMPTY:
                        raise
            d.rmdir()

    # ------------------------------------------------------------------ whole store
    def usage(self) -> tuple[int, int]:
        """(free bytes, total bytes) of the file system holding the store."""
        with _os_errors(f"statvfs {self.root}"):
            st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def iter_objects(self) -> Iterator[tuple[str, int]]:
        """(file_id, objno) of every well-named object (scrub reports the rest)."""
        for prefix in _listdir(self.objects):
            for volume in _listdir(self.objects / prefix):
                for ino in _listdir(self.objects / prefix / volume):
                    for name in _listdir(self.objects / prefix / volume / ino):
                        parsed = parse_object_relpath((prefix, volume, ino, name))
                        if parsed is not None:
                            yield parsed

    def count_objects(self) -> int:
        return sum(1 for _ in self.iter_objects())


def _read_all(fd: int) -> bytes:
    """The whole file behind ``fd``, from its start (the descriptor stays open)."""
    with open(fd, "rb", buffering=0, closefd=False) as f:
        f.seek(0)
        return f.readall()


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
