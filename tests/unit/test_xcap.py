"""XCap signing and verification, the key ring, and the verified-signature cache."""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xfs.common import xcap as xc
from xfs.common.xcap import KeyRing, VerifiedCache, XCapVerifier, sign, verify
from xfs.proto.errors import ProtocolError, XfsError
from xfs.proto.records import Replica, Rights, StripingPolicy, UpdatePolicy, XCap, XLocSet

T0 = 1_800_000_000
HOLDER = bytes(range(32))
XLOC = XLocSet(
    version=3,
    replicas=[Replica(osds=["osd-a", "osd-b"], striping=StripingPolicy(1 << 20, 2))],
    update_policy=UpdatePolicy.RONLY,
)
RW = int(Rights.READ | Rights.WRITE)


def unsigned(**changes: Any) -> XCap:
    x = XCap(
        volume="vol1",
        ino=42,
        rights=RW,
        truncate_epoch=7,
        xloc_version=XLOC.version,
        xloc_hash=XLOC.digest(),
        not_before=T0,
        expires=T0 + 600,
        holder=HOLDER,
        key_id="",
    )
    return dataclasses.replace(x, **changes)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


def use(x: XCap, keys: dict[str, bytes], **changes: Any) -> None:
    kw: dict[str, Any] = {
        "now": T0 + 1.0,
        "holder": HOLDER,
        "file_id": "vol1:42",
        "rights": int(Rights.READ),
        "xloc": XLOC,
    }
    kw.update(changes)
    verify(x, keys, **kw)


def refused(x: XCap, keys: dict[str, bytes], **changes: Any) -> str:
    with pytest.raises(XfsError) as e:
        use(x, keys, **changes)
    assert e.value.code == errno.EACCES
    return e.value.message


def test_sign_and_verify(ring: KeyRing) -> None:
    x = sign(unsigned(), ring)
    assert x.key_id == ring.current and len(x.signature) == 64
    use(x, ring.public_keys())
    use(x, ring.public_keys(), rights=RW)
    use(x, ring.public_keys(), rights=0, xloc=None)


def _flips(value: object) -> Iterator[Any]:
    """Single-bit changes of a field value."""
    if isinstance(value, bytes):
        for i in range(len(value) * 8):
            b = bytearray(value)
            b[i // 8] ^= 1 << (i % 8)
            yield bytes(b)
    elif isinstance(value, int):
        for i in range(63):
            yield value ^ (1 << i)
    elif isinstance(value, str):
        raw = value.encode()
        for i in range(len(raw) * 8):
            b = bytearray(raw)
            b[i // 8] ^= 1 << (i % 8)
            try:
                yield b.decode()
            except UnicodeDecodeError:
                continue


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(XCap)])
def test_every_single_bit_flip_is_refused(ring: KeyRing, name: str) -> None:
    x = sign(unsigned(), ring)
    keys = ring.public_keys()
    count = 0
    for flipped in _flips(getattr(x, name)):
        bad = dataclasses.replace(x, **{name: flipped})
        with pytest.raises(XfsError) as e:
            xc.check_signature(bad, keys)
        assert e.value.code == errno.EACCES
        count += 1
    assert count >= 8


def test_wrong_and_unknown_keys(ring: KeyRing) -> None:
    x = sign(unsigned(), ring)
    other = KeyRing.generate()
    assert "unknown key" in refused(x, other.public_keys())
    swapped = {ring.current: other.public_keys()[other.current]}
    assert "bad signature" in refused(x, swapped)
    relabelled = dataclasses.replace(sign(unsigned(), other), key_id=ring.current)
    assert "bad signature" in refused(relabelled, ring.public_keys())
    assert "unknown key" in refused(x, {})
    assert "malformed" in refused(dataclasses.replace(x, signature=b""), ring.public_keys())
    assert "bad signature" in refused(x, {ring.current: b"\x00" * 31})


def test_validity_window(ring: KeyRing) -> None:
    x = sign(unsigned(), ring)
    keys = ring.public_keys()
    use(x, keys, now=T0 - 5)  # clock skew allowance
    use(x, keys, now=T0 + 599.999)
    assert "not valid before" in refused(x, keys, now=T0 - 5.001)
    assert "expired" in refused(x, keys, now=T0 + 600)
    assert "expired" in refused(x, keys, now=T0 + 10**6)


def test_holder_file_rights_xloc(ring: KeyRing) -> None:
    x = sign(unsigned(), ring)
    keys = ring.public_keys()
    assert "another certificate" in refused(x, keys, holder=bytes(32))
    assert "another certificate" in refused(x, keys, holder=HOLDER[:-1])
    assert "issued for" in refused(x, keys, file_id="vol1:43")
    assert "issued for" in refused(x, keys, file_id="vol2:42")
    assert "rights" in refused(x, keys, rights=int(Rights.TRUNCATE))
    assert "rights" in refused(x, keys, rights=int(Rights.READ | Rights.DELETE))
    newer = dataclasses.replace(XLOC, version=4)
    assert "version" in refused(x, keys, xloc=newer)
    forged = dataclasses.replace(
        XLOC, replicas=[Replica(osds=["osd-a", "osd-evil"], striping=StripingPolicy(1 << 20, 2))]
    )
    assert "hash" in refused(x, keys, xloc=forged)


def test_rotation_keeps_old_tokens_until_retired(ring: KeyRing) -> None:
    old_id = ring.current
    old = sign(unsigned(), ring)
    new_id = ring.rotate()
    assert new_id != old_id and ring.current == new_id
    new = sign(unsigned(), ring)
    assert new.key_id == new_id
    use(old, ring.public_keys())
    use(new, ring.public_keys())
    ring.retire(old_id)
    assert "unknown key" in refused(old, ring.public_keys())
    use(new, ring.public_keys())
    with pytest.raises(XfsError) as e:
        ring.retire(new_id)
    assert e.value.code == errno.EINVAL
    with pytest.raises(XfsError) as e:
        ring.retire(old_id)
    assert e.value.code == errno.ENOENT


def test_key_ring_on_disk(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    ring = KeyRing.load_or_create(d)
    first = ring.current
    assert (d / f"{first}.key").stat().st_mode & 0o777 == 0o600
    assert xc.key_id(ring.public_keys()[first]) == first
    token = sign(unsigned(), ring)
    second = ring.rotate()

    again = KeyRing.load_or_create(d)
    assert again.current == second
    assert again.public_keys() == ring.public_keys()
    use(token, again.public_keys())
    again.retire(first)
    assert not (d / f"{first}.key").exists()
    assert set(KeyRing.load_or_create(d).public_keys()) == {second}

    (d / f"{second}.key").write_bytes(b"\x01" * 32)  # a key that is not the one named
    with pytest.raises(XfsError) as e:
        KeyRing.load_or_create(d)
    assert e.value.code == errno.EINVAL


def test_verifier_caches_signatures_only(ring: KeyRing) -> None:
    keys = ring.public_keys()
    v = XCapVerifier(lambda: keys, VerifiedCache(size=2))
    x = sign(unsigned(), ring)
    kw: dict[str, Any] = {"holder": HOLDER, "file_id": "vol1:42", "rights": 1, "xloc": XLOC}
    v.verify(x, now=T0, **kw)
    v.verify(x, now=T0 + 1, **kw)
    # everything but the signature is checked on every use, cached or not
    for bad in (
        {"now": T0 + 600},
        {"now": T0, "holder": bytes(32)},
        {"now": T0, "file_id": "vol1:1"},
        {"now": T0, "rights": int(Rights.DELETE)},
    ):
        with pytest.raises(XfsError):
            v.verify(x, **{**kw, **bad})
    # a tampered token is a different cache key
    with pytest.raises(XfsError):
        v.verify(dataclasses.replace(x, rights=0xF), now=T0, **kw)
    # a retired key stops verifying at once, even for a cached token
    old = ring.current
    ring.rotate()
    ring.retire(old)
    keys = ring.public_keys()
    with pytest.raises(XfsError):
        v.verify(x, now=T0, **kw)


def test_cache_is_bounded() -> None:
    cache = VerifiedCache(size=3)
    for i in range(5):
        cache.add(b"k", bytes([i]))
    assert len(cache) == 3
    assert not cache.contains(b"k", b"\x00") and cache.contains(b"k", b"\x04")
    assert not cache.contains(b"other", b"\x04")


def test_encode_decode(ring: KeyRing) -> None:
    x = sign(unsigned(), ring)
    assert xc.decode_xcap(xc.encode_xcap(x)) == x
    for garbage in (b"", b"\xc1", b"\x93\x01\x02\x03", xc.encode_xcap(x) + b"\x00", b"\x00" * 5000):
        with pytest.raises(ProtocolError):
            xc.decode_xcap(garbage)
