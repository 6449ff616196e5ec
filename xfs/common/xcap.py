"""XCaps: the capabilities the MRC signs (Ed25519) and the OSDs verify without asking it.

The signature covers ``b"xfs-xcap-v1\\0"`` followed by the msgpack array of every field of
the ``XCap`` but ``signature``, in field order; the key id is among the signed fields. The
MRC's ``KeyRing`` names each key by ``key_id(public)`` (16 hex digits of the SHA-256 of the
raw public key); a new key can be ``stage``d (published, not yet signing) before it is
``promote``d, and the older keys still verify until they are retired (the schedule is
``xfs.mrc.xcaps.KeyRotator``'s).

``verify`` is pure (no clock, no I/O): the caller passes the time and the connection's
holder fingerprint. ``VerifiedCache`` remembers signature checks only, keyed by the whole
token and the public key that verified it; expiry, holder, file, rights and XLocSet are
checked on every use.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import hmac
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from xfs.proto.errors import ProtocolError, XfsError
from xfs.proto.records import XCap, XLocSet

DOMAIN = b"xfs-xcap-v1\0"
CLOCK_SKEW = 5.0  # seconds a token is accepted before its not_before
MAX_ENCODED = 4096  # an encoded XCap is ~200 bytes

_SIGNED_FIELDS = tuple(f.name for f in dataclasses.fields(XCap) if f.name != "signature")
_KEY_FILE = re.compile(r"([0-9a-f]{16})\.key")
_CURRENT = "current"


def _refuse(reason: str) -> XfsError:
    return XfsError(errno.EACCES, f"xcap: {reason}")


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


# ------------------------------------------------------------------ the key ring
class KeyBacking(Protocol):
    """Where a ``KeyRing`` keeps its keys: a directory (``KeyDir``), or the MRC's store
    (``xfs.mrc.keys.StoreKeys``, which MRCs over one store share)."""

    def load(self) -> tuple[dict[str, bytes], dict[str, float], str]:
        """key id -> raw private key, key id -> since, the current key id (empty: none)."""
        ...

    def save_key(self, kid: str, raw: bytes, since: float) -> None: ...

    def set_since(self, kid: str, since: float) -> None: ...

    def save_current(self, kid: str) -> None: ...

    def delete(self, kid: str) -> None: ...


class KeyDir:
    """A directory of ``<key_id>.key`` files (raw 32-byte private keys, mode 0600) and a
    ``current`` file naming the signing key; each key's ``since`` is its file's mtime."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)

    def load(self) -> tuple[dict[str, bytes], dict[str, float], str]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys: dict[str, bytes] = {}
        since: dict[str, float] = {}
        try:
            for path in sorted(self.dir.iterdir()):
                m = _KEY_FILE.fullmatch(path.name)
                if m is None:
                    continue
                keys[m.group(1)] = path.read_bytes()
                since[m.group(1)] = path.stat().st_mtime
            current = (self.dir / _CURRENT).read_text().strip() if keys else ""
        except OSError as e:
            raise XfsError(e.errno or errno.EIO, f"key ring {self.dir}: {e.strerror}") from None
        return keys, since, current

    def save_key(self, kid: str, raw: bytes, since: float) -> None:
        """Write a key atomically, its mtime set to its ``since``."""
        _write_atomic(self.dir / f"{kid}.key", raw, 0o600)
        self.set_since(kid, since)

    def set_since(self, kid: str, since: float) -> None:
        path = self.dir / f"{kid}.key"
        try:
            os.utime(path, (since, since))
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)  # the time decides when older keys retire: keep it
            finally:
                os.close(fd)
        except OSError as e:
            raise XfsError(e.errno or errno.EIO, f"key ring {self.dir}: {e.strerror}") from None

    def save_current(self, kid: str) -> None:
        _write_atomic(self.dir / _CURRENT, kid.encode() + b"\n", 0o600)

    def delete(self, kid: str) -> None:
        (self.dir / f"{kid}.key").unlink(missing_ok=True)


class KeyRing:
    """The MRC's signing keys: one current key, older ones kept to verify until retired,
    and perhaps a staged newer one that verifies (OSDs learn it) but does not sign yet.

    Built in memory by ``generate()`` or kept in a ``KeyBacking``. Each key has a
    ``since`` time: when it became current, or, for a staged key, when it was staged. A
    key is *staged* if its ``since`` is later than the current key's, *old* otherwise.
    """

    def __init__(
        self,
        keys: Mapping[str, Ed25519PrivateKey],
        current: str,
        backing: KeyBacking | None = None,
        since: Mapping[str, float] | None = None,
    ) -> None:
        if current not in keys:
            raise XfsError(errno.EINVAL, f"current key {current!r} is not in the ring")
        for kid, key in keys.items():
            if key_id(_raw(key.public_key())) != kid:
                raise XfsError(errno.EINVAL, f"key {kid!r} does not match its id")
        self._keys = dict(keys)
        self._current = current
        self._backing = backing
        self._since = {kid: float((since or {}).get(kid, 0.0)) for kid in keys}

    @classmethod
    def generate(cls, now: float | None = None) -> KeyRing:
        """A ring of one fresh key, kept in memory only."""
        key = Ed25519PrivateKey.generate()
        kid = key_id(_raw(key.public_key()))
        return cls({kid: key}, kid, since={kid: time.time() if now is None else now})

    @classmethod
    def load_or_create(cls, dir: Path, now: float | None = None) -> KeyRing:
        """The ring kept in directory ``dir``, or a new one of one key made there."""
        return cls.load_or_create_in(KeyDir(dir), now)

    @classmethod
    def load_or_create_in(cls, backing: KeyBacking, now: float | None = None) -> KeyRing:
        """The ring kept in ``backing``, or a new one of one key (``since`` now) kept there."""
        raws, since, current = backing.load()
        if not raws:
            ring = cls.generate(now)
            ring._backing = backing
            ring._save_key(ring.current)
            backing.save_current(ring.current)
            return ring
        keys: dict[str, Ed25519PrivateKey] = {}
        for kid, raw in raws.items():
            if len(raw) != 32:
                raise XfsError(errno.EINVAL, f"key {kid}: not a raw Ed25519 private key")
            keys[kid] = Ed25519PrivateKey.from_private_bytes(raw)
        return cls(keys, current, backing, since)

    @property
    def current(self) -> str:
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def public_keys(self) -> dict[str, bytes]:
        """Every key that verifies (old, current, staged): key id -> raw public key."""
        return {kid: _raw(key.public_key()) for kid, key in self._keys.items()}

    def since(self) -> dict[str, float]:
        """key id -> when it became current (or was staged), unix seconds."""
        return dict(self._since)

    @property
    def staged(self) -> tuple[str, ...]:
        """Keys newer than the current one: published, not yet signing."""
        now = self._since[self._current]
        return tuple(k for k, t in self._since.items() if k != self._current and t > now)

    def stage(self, now: float | None = None) -> str:
        """Add a new key that verifies but does not sign yet. Returns its id."""
        key = Ed25519PrivateKey.generate()
        kid = key_id(_raw(key.public_key()))
        self._keys[kid] = key
        self._since[kid] = time.time() if now is None else now
        self._save_key(kid)
        return kid

    def promote(self, kid: str, now: float | None = None) -> None:
        """Make ``kid`` (a key of the ring) the signing key from ``now`` on."""
        if kid not in self._keys:
            raise XfsError(errno.ENOENT, f"no key {kid!r:.40} in the ring")
        self._since[kid] = time.time() if now is None else now
        if self._backing is not None:
            self._backing.set_since(kid, self._since[kid])
        self._current = kid
        if self._backing is not None:
            self._backing.save_current(kid)

    def rotate(self, now: float | None = None) -> str:
        """Make a new current key at once; the previous ones still verify. Returns its id.
        (An OSD refuses its tokens until its next heartbeat: ``stage`` first to avoid it.)"""
        kid = self.stage(now)
        self.promote(kid, now)
        return kid

    def retire(self, kid: str) -> None:
        """Forget a key: tokens signed with it no longer verify."""
        if kid == self._current:
            raise XfsError(errno.EINVAL, "cannot retire the current key; rotate first")
        if kid not in self._keys:
            raise XfsError(errno.ENOENT, f"no key {kid!r:.40} in the ring")
        if self._backing is not None:
            self._backing.delete(kid)
        del self._keys[kid]
        del self._since[kid]

    def sign_bytes(self, message: bytes) -> bytes:
        return self._keys[self._current].sign(message)

    def _save_key(self, kid: str) -> None:
        if self._backing is None:
            return
        raw = self._keys[kid].private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._backing.save_key(kid, raw, self._since[kid])


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot write {path}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ signing
def _pack(values: list[Any]) -> bytes:
    try:
        return msgpack.packb(values, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise _refuse(f"unencodable field ({e})") from None


def signed_bytes(x: XCap) -> bytes:
    """What the signature covers."""
    return DOMAIN + _pack([getattr(x, name) for name in _SIGNED_FIELDS])


def token_bytes(x: XCap) -> bytes:
    """The whole token, signature included (the cache key)."""
    return _pack([getattr(x, f.name) for f in dataclasses.fields(XCap)])


def sign(x: XCap, ring: KeyRing) -> XCap:
    """``x`` with ``key_id`` set to the ring's current key and signed by it."""
    unsigned = dataclasses.replace(x, key_id=ring.current, signature=b"")
    return dataclasses.replace(unsigned, signature=ring.sign_bytes(signed_bytes(unsigned)))


def encode_xcap(x: XCap) -> bytes:
    return msgpack.packb(x.to_wire(), use_bin_type=True)


def decode_xcap(b: bytes) -> XCap:
    """Strict decode (``ProtocolError`` on anything that is not an XCap)."""
    if len(b) > MAX_ENCODED:
        raise ProtocolError("xcap too long")
    try:
        value = msgpack.unpackb(b, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise ProtocolError(f"malformed xcap ({e})") from None
    return XCap.from_wire(value)


# ------------------------------------------------------------------ verification
def check_signature(x: XCap, keys: Mapping[str, bytes]) -> bytes:
    """Check the signature; returns the raw public key that verified it."""
    public_raw = keys.get(x.key_id) if isinstance(x.key_id, str) else None
    if public_raw is None:
        raise _refuse(f"unknown key id {x.key_id!r:.40}")
    if not isinstance(x.signature, bytes) or len(x.signature) != 64:
        raise _refuse("malformed signature")
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(x.signature, signed_bytes(x))
    except (InvalidSignature, ValueError):
        raise _refuse("bad signature") from None
    return public_raw


def check_use(
    x: XCap,
    *,
    now: float,
    holder: bytes,
    file_id: str,
    rights: int,
    xloc: XLocSet | None = None,
) -> None:
    """Everything but the signature: validity window, holder, file, rights, XLocSet."""
    if now < x.not_before - CLOCK_SKEW:
        raise _refuse(f"not valid before {x.not_before}")
    if now >= x.expires:
        raise _refuse(f"expired at {x.expires}")
    if not hmac.compare_digest(x.holder, holder):
        raise _refuse("issued to another certificate")
    if x.file_id != file_id:
        raise _refuse(f"issued for {x.file_id!r:.80}, not {file_id!r:.80}")
    if rights & ~x.rights:
        raise _refuse(f"grants rights {x.rights:#x}, {rights:#x} needed")
    if xloc is not None:
        if xloc.version != x.xloc_version:
            raise _refuse(f"XLocSet version {x.xloc_version}, current is {xloc.version}")
        if not hmac.compare_digest(xloc.digest(), x.xloc_hash):
            raise _refuse("XLocSet hash mismatch")


def verify(
    x: XCap,
    keys: Mapping[str, bytes],
    *,
    now: float,
    holder: bytes,
    file_id: str,
    rights: int,
    xloc: XLocSet | None = None,
) -> None:
    """Raise ``XfsError(EACCES)`` unless ``x`` is genuine and allows this use now."""
    check_signature(x, keys)
    check_use(x, now=now, holder=holder, file_id=file_id, rights=rights, xloc=xloc)


class VerifiedCache:
    """A bounded LRU of tokens whose signature verified (thread-safe)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def contains(self, public_raw: bytes, token: bytes) -> bool:
        key = (public_raw, token)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return True
            self.misses += 1
            return False

    def add(self, public_raw: bytes, token: bytes) -> None:
        with self._lock:
            self._entries[(public_raw, token)] = None
            self._entries.move_to_end((public_raw, token))
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class XCapVerifier:
    """``verify`` with a signature cache, over keys that may change (rotation, retirement).

    ``keys`` is called on every check, so a retired key stops verifying at once, cached
    tokens included (the cache is keyed by the public key as well as the token).
    """

    def __init__(
        self, keys: Callable[[], Mapping[str, bytes]], cache: VerifiedCache | None = None
    ) -> None:
        self._keys = keys
        self._cache = cache if cache is not None else VerifiedCache()

    def verify(
        self,
        x: XCap,
        *,
        now: float,
        holder: bytes,
        file_id: str,
        rights: int,
        xloc: XLocSet | None = None,
    ) -> None:
        keys = self._keys()
        public_raw = keys.get(x.key_id) if isinstance(x.key_id, str) else None
        token = token_bytes(x)
        if public_raw is None or not self._cache.contains(public_raw, token):
            public_raw = check_signature(x, keys)
            self._cache.add(public_raw, token)
        check_use(x, now=now, holder=holder, file_id=file_id, rights=rights, xloc=xloc)
