"""The bytes of one object file: a header, a table of block checksums, the data.

Pure functions, no I/O; ``xfs.osd.objects`` reads and writes the files, and a mount on the
OSD's host reads them itself (``xfs.client.local_reads``). An object file
is (version 2, written by this xfs)::

    header   struct.pack(">4sHHII", b"XFSO", 2, 0, crc32c(table), len(data))
    table    one ">I" crc32c per BLOCK (4 KiB) of data, the last block short
    data

so a read of a few KiB anywhere in an object reads and verifies those blocks and the
table, not the whole object (a cold 4 KiB read of a 1 MiB object cost a 1 MiB read
before). The table's own checksum sits in the header, so replicas compare by header
alone (``ObjectStore.sums``). Objects are still replaced whole, through a temporary file
and a rename, so header, table and data always belong together.

Version 1 (xfs before this format) had no table: the header's checksum covered the whole
data. Such objects are still read and verified; any write replaces them with version 2.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import google_crc32c

MAGIC = b"XFSO"
VERSION = 2
WHOLE = 1  # the version whose header checksum covers the whole data
HEADER = struct.Struct(">4sHHII")  # magic, version, flags, crc32c, len(data)
BLOCK = 4096
_SUM = struct.Struct(">I")
MAX_DATA = (1 << 32) - 1  # the header's length field


def blocks(length: int) -> int:
    """Checksummed blocks of ``length`` bytes of data."""
    return -(-length // BLOCK)


def table_size(version: int, length: int) -> int:
    return 0 if version == WHOLE else _SUM.size * blocks(length)


def file_size(version: int, length: int) -> int:
    """The size on disk of an object of ``length`` bytes."""
    return HEADER.size + table_size(version, length) + length


def data_length(size: int) -> int:
    """The data length of a version-2 object file of ``size`` bytes on disk (the inverse
    of :func:`file_size`: n blocks take n * (BLOCK + 4) bytes at most, the last may be
    short); 0 for anything shorter than a header."""
    rest = size - HEADER.size
    if rest <= 0:
        return 0
    n = -(-rest // (BLOCK + _SUM.size))
    return rest - _SUM.size * n


def data_offset(version: int, length: int) -> int:
    return HEADER.size + table_size(version, length)


def encode(data: bytes) -> bytes:
    """The header and table that go before ``data``."""
    if len(data) > MAX_DATA:
        raise ValueError(f"object of {len(data)} bytes is too large")
    # crc32c takes bytes only: a slice copies 4 KiB, ~0.1 ms a MiB in all
    table = b"".join(
        _SUM.pack(google_crc32c.value(data[i : i + BLOCK])) for i in range(0, len(data), BLOCK)
    )
    return HEADER.pack(MAGIC, VERSION, 0, google_crc32c.value(table), len(data)) + table


def decode_header(header: bytes) -> tuple[int, int, int]:
    """(version, checksum, length); ValueError with the reason if it is not a header."""
    if len(header) != HEADER.size:
        raise ValueError(f"short header ({len(header)} bytes)")
    magic, version, flags, crc, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}")
    if version not in (WHOLE, VERSION) or flags != 0:
        raise ValueError(f"unknown object version {version} flags {flags}")
    return version, crc, length


def decode_table(version: int, crc: int, length: int, table: bytes) -> list[int]:
    """The block checksums of a version-2 table, verified against the header."""
    if len(table) != table_size(version, length):
        raise ValueError(f"table of {len(table)} bytes, header says {length} bytes of data")
    if google_crc32c.value(table) != crc:
        raise ValueError("CRC32C mismatch in the block table")
    return [s for (s,) in _SUM.iter_unpack(table)]


def check_blocks(sums: list[int], first: int, data: bytes) -> None:
    """Verify ``data``, which starts at block ``first``, against the table's checksums."""
    for i, at in enumerate(range(0, len(data), BLOCK)):
        if google_crc32c.value(data[at : at + BLOCK]) != sums[first + i]:
            raise ValueError(f"CRC32C mismatch in block {first + i}")


def decode(raw: bytes) -> bytes:
    """The verified data of a whole object file; ValueError with the reason if bad."""
    version, crc, length = decode_header(raw[: HEADER.size])
    start = data_offset(version, length)
    if len(raw) != start + length:
        raise ValueError(f"file is {len(raw)} bytes, header says {length} bytes of data")
    data = raw[start:]
    if version == WHOLE:
        if google_crc32c.value(data) != crc:
            raise ValueError("CRC32C mismatch")
    else:
        check_blocks(decode_table(version, crc, length, raw[HEADER.size : start]), 0, data)
    return data


def spans(on_disk: int, offset: int, length: int) -> list[tuple[int, int]]:
    """(count, at) of each part of a version-2 object file of ``on_disk`` bytes that
    :func:`read_range` reads for [offset, offset+length): the first page (header and
    table), the rest of the table if longer, the blocks of the range. Computed from the
    size alone, before anything is read, so that the reads can be asked of the disk at
    once; a file of another version or a bad size needs other parts (it is a hint)."""
    size = data_length(on_disk)
    end = min(size, offset + length)
    start = data_offset(VERSION, size)
    out = [(BLOCK, 0)]
    if start > BLOCK:
        out.append((start - BLOCK, BLOCK))
    if offset < end:
        lo, hi = (offset // BLOCK) * BLOCK, min(size, -(-end // BLOCK) * BLOCK)
        out.append((hi - lo, start + lo))
    return out


def read_range(pread: Callable[[int, int], bytes], on_disk: int, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of the data of an object file of ``on_disk`` bytes,
    short past its end, through ``pread(count, at)``: the header, the table and the
    blocks the range lies in, verified (all of a version-1 object). ValueError with the
    reason if the file is bad."""
    head = pread(BLOCK, 0)  # one page: the header and a table of up to 1,020 blocks
    version, crc, size = decode_header(head[: HEADER.size])
    if version == WHOLE:
        return decode(pread(on_disk, 0))[offset : offset + length]
    if on_disk != file_size(version, size):
        raise ValueError(f"file is {on_disk} bytes, header says {size} bytes of data")
    end = min(size, offset + length)
    if offset >= end:
        return b""
    start = data_offset(version, size)
    table = head[HEADER.size : start]
    if len(table) < start - HEADER.size:
        table = pread(start - HEADER.size, HEADER.size)
    sums = decode_table(version, crc, size, table)
    first, last = offset // BLOCK, (end - 1) // BLOCK
    lo, hi = first * BLOCK, min(size, (last + 1) * BLOCK)
    data = pread(hi - lo, start + lo)
    if len(data) != hi - lo:
        raise ValueError(f"short file: {len(data)} bytes at {lo}, header says {size}")
    check_blocks(sums, first, data)
    return data[offset - lo : end - lo]
