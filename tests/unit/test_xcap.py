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


# ----------------------------------------------------------------------------- the cache
def test_cache_keys_on_every_byte_of_the_token(ring: KeyRing) -> None:
    """A token differing from a cached one in any byte is verified afresh, and refused."""
    keys = ring.public_keys()
    cache = VerifiedCache()
    v = XCapVerifier(lambda: keys, cache)
    x = sign(unsigned(), ring)
    kw: dict[str, Any] = {"holder": HOLDER, "file_id": "vol1:42", "rights": 1, "xloc": XLOC}
    v.verify(x, now=T0, **kw)
    v.verify(x, now=T0, **kw)
    assert (cache.hits, cache.misses) == (1, 1)
    wire = xc.encode_xcap(x)
    checked = 0
    for i in range(len(wire)):
        for bit in range(8):
            b = bytearray(wire)
            b[i] ^= 1 << bit
            try:
                y = xc.decode_xcap(bytes(b))
            except (ProtocolError, XfsError):
                continue
            if y == x:
                continue  # another encoding of the same values (none exists for msgpack ints)
            assert xc.token_bytes(y) != xc.token_bytes(x)
            hits, misses = cache.hits, cache.misses
            with pytest.raises(XfsError) as e:
                v.verify(y, now=T0, holder=HOLDER, file_id=y.file_id, rights=0)
            assert e.value.code == errno.EACCES
            assert cache.hits == hits  # never served from the cache
            # looked up and missed, unless its key id names no key (refused before)
            assert cache.misses == misses + 1 or y.key_id not in keys
            checked += 1
    assert checked > 100
    assert len(cache) == 1  # only the genuine token was ever added
    v.verify(x, now=T0, **kw)  # and it is still served from the cache


# ----------------------------------------------------------------------------- issuing
def test_rights_for_flags() -> None:
    import os

    from xfs.mrc.xcaps import rights_for_flags

    assert rights_for_flags(os.O_RDONLY) == Rights.READ
    assert rights_for_flags(os.O_WRONLY) == Rights.WRITE | Rights.TRUNCATE
    assert rights_for_flags(os.O_RDWR) == Rights.READ | Rights.WRITE | Rights.TRUNCATE
    # O_TRUNC was checked for write: the opener truncates the OSDs with this XCap
    assert rights_for_flags(os.O_RDONLY | os.O_TRUNC) == Rights.READ | Rights.TRUNCATE
    for flags in (os.O_RDONLY, os.O_RDWR | os.O_TRUNC | os.O_CREAT):
        assert not rights_for_flags(flags) & Rights.DELETE


def test_issuer_checks_returned_xcaps(ring: KeyRing) -> None:
    from xfs.mrc.xcaps import XCapIssuer

    now = [float(T0)]
    issuer = XCapIssuer(ring, lambda: now[0], 60)
    x = issuer.issue("vol1", 42, Rights.WRITE | Rights.TRUNCATE, 3, XLOC, HOLDER)
    assert (x.not_before, x.expires, x.truncate_epoch) == (T0, T0 + 60, 3)
    ok: dict[str, Any] = {"holder": HOLDER, "volume_id": "vol1", "ino": 42, "rights": Rights.WRITE}
    issuer.check(x, **ok)
    for bad, reason in (
        ({"holder": bytes(32)}, "another certificate"),
        ({"ino": 43}, "issued for"),
        ({"volume_id": "vol2"}, "issued for"),
        ({"rights": Rights.READ}, "rights"),
    ):
        with pytest.raises(XfsError, match=reason):
            issuer.check(x, **{**ok, **bad})
    with pytest.raises(XfsError, match="bad signature"):
        issuer.check(dataclasses.replace(x, rights=0xF), **ok)
    with pytest.raises(XfsError, match="unknown key"):
        issuer.check(sign(x, KeyRing.generate()), **ok)
    now[0] = T0 + 60
    with pytest.raises(XfsError, match="expired"):
        issuer.check(x, **ok)


# ----------------------------------------------------------------------------- rotation
def test_stage_and_promote(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    ring = KeyRing.load_or_create(d, now=1000.0)
    first = ring.current
    assert ring.since() == {first: 1000.0} and ring.staged == ()
    staged = ring.stage(now=2000.0)
    assert ring.current == first and ring.staged == (staged,)
    assert set(ring.public_keys()) == {first, staged}  # published before it signs
    assert sign(unsigned(), ring).key_id == first
    again = KeyRing.load_or_create(d)
    assert again.current == first and again.staged == (staged,)
    assert again.since() == {first: 1000.0, staged: 2000.0}
    ring.promote(staged, now=2300.0)
    assert ring.current == staged and ring.staged == ()
    assert sign(unsigned(), ring).key_id == staged
    again = KeyRing.load_or_create(d)
    assert again.current == staged and again.since() == {first: 1000.0, staged: 2300.0}
    with pytest.raises(XfsError) as e:
        ring.promote("0123456789abcdef")
    assert e.value.code == errno.ENOENT


def test_plan_rotation() -> None:
    from xfs.mrc.xcaps import RotationPlan, plan_rotation

    def plan(since: dict[str, float], current: str, now: float) -> RotationPlan:
        return plan_rotation(since, current, now, period=1000, lead=100, keep=65)

    assert plan({"a": 0}, "a", 899) == RotationPlan()
    assert plan({"a": 0}, "a", 900) == RotationPlan(stage=True)
    # staged at 900: promoted when both the period and the lead are over
    assert plan({"a": 0, "b": 900}, "a", 999) == RotationPlan()
    assert plan({"a": 0, "b": 900}, "a", 1000) == RotationPlan(promote="b")
    assert plan({"a": 0, "b": 950}, "a", 1000) == RotationPlan()  # staged late
    assert plan({"a": 0, "b": 950}, "a", 1050) == RotationPlan(promote="b")
    # b current since 1000: a signed until then, so its tokens live until 1000 + keep
    assert plan({"a": 0, "b": 1000}, "b", 1064) == RotationPlan()
    assert plan({"a": 0, "b": 1000}, "b", 1065) == RotationPlan(retire=("a",))
    # an MRC that was down long: old keys go, a new key is staged (not used at once)
    assert plan({"a": 0, "b": 1000}, "b", 10**6) == RotationPlan(stage=True, retire=("a",))


def test_rotator_rotates_on_schedule_and_audits(tmp_path: Path) -> None:
    from xfs.common.audit import AuditLog, records
    from xfs.mrc.xcaps import KeyRotator

    now = [float(T0)]
    ring = KeyRing.load_or_create(tmp_path / "keys", now=now[0])
    first = ring.current
    with AuditLog(tmp_path / "audit.log", "mrc") as log:
        rotator = KeyRotator(ring, lambda: now[0], period=3600, lifetime=600, audit=log)
        lead, keep = 300, 600 + xc.CLOCK_SKEW
        tokens = {}
        rotator.step()
        assert ring.key_ids == (first,)
        now[0] = T0 + 3600 - lead
        rotator.step()
        (second,) = ring.staged
        assert ring.current == first
        now[0] = T0 + 3600
        tokens["last-of-first"] = sign(unsigned(expires=int(now[0]) + 600), ring)
        rotator.step()
        assert ring.current == second
        keys = ring.public_keys()
        use(tokens["last-of-first"], keys, now=now[0] + 599)  # the old key still verifies
        now[0] = T0 + 3600 + keep - 1
        rotator.step()
        assert set(ring.key_ids) == {first, second}
        now[0] = T0 + 3600 + keep
        rotator.step()
        assert ring.key_ids == (second,)
        assert "unknown key" in refused(tokens["last-of-first"], ring.public_keys(), now=T0)
        assert not (tmp_path / "keys" / f"{first}.key").exists()
    actions = [(r["event"], r["action"], r["detail"]["key"]) for r in records(log.path)]
    assert actions == [
        ("admin", "xcap_key_stage", second),
        ("admin", "xcap_key_promote", second),
        ("admin", "xcap_key_retire", first),
    ]


# ----------------------------------------------------------------------------- config
def test_xcap_lifetime_and_rotation_are_bounded(tmp_path: Path) -> None:
    from xfs.common import config as cfg

    base = {"tls": {"cert": "c", "key": "k", "trust": []}, "data_dir": "d"}
    assert cfg.from_dict(cfg.MRCConfig, base, tmp_path).xcap_lifetime == 600
    for lifetime in (10, 600, 120.5):
        cfg.from_dict(cfg.MRCConfig, {**base, "xcap_lifetime": lifetime}, tmp_path)
    for lifetime in (601, 3600, 9.9, 0, -1):
        with pytest.raises(cfg.ConfigError, match=r"xcap_lifetime.*within minutes"):
            cfg.from_dict(cfg.MRCConfig, {**base, "xcap_lifetime": lifetime}, tmp_path)
    cfg.from_dict(cfg.MRCConfig, {**base, "xcap_key_rotation": 1 / 6}, tmp_path)
    for hours in (0.1, 0, -24):
        with pytest.raises(cfg.ConfigError, match="xcap_key_rotation"):
            cfg.from_dict(cfg.MRCConfig, {**base, "xcap_key_rotation": hours}, tmp_path)
    toml = tmp_path / "mrc.toml"
    toml.write_text(
        'data_dir = "d"\nxcap_lifetime = 86400\n[tls]\ncert = "c"\nkey = "k"\ntrust = []\n'
    )
    with pytest.raises(cfg.ConfigError, match=r"86400 s is outside 10\.\.600 s"):
        cfg.load(cfg.MRCConfig, toml)
