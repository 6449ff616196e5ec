"""Scrub: check exactly the invariants of the object store's format (see objects.py).

1. FORMAT and UUID are those of this format version (else StoreFormatError: nothing
   else can be interpreted).
2. Every path under objects/ is one the layout builds: a prefix dir, a volume dir, a
   file dir whose prefix matches, canonical object names, an ``epoch`` file; or a temp
   file younger than TEMP_MAX_AGE (a write in progress). Anything else is reported as
   stray.
3. Every object decodes and its CRC32C matches; every epoch record decodes and its
   CRC32C matches (else its file id is reported in ``bad_epochs``).

Scrub only reports (``xfs scrub``); a replicated OSD repairs a corrupt object from another
replica when a read or the MRC's scrubber (``osd.scrub``) finds it.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field

from xfs.osd.objects import (
    EPOCH_NAME,
    EPOCH_RECORD,
    TEMP_RE,
    XLOC_NAME,
    CorruptObject,
    ObjectStore,
    check_format,
    decode_epoch,
    is_valid_dir,
    parse_object_relpath,
)

TEMP_MAX_AGE = 3600.0  # seconds: an older temp file is the leftover of a crash


@dataclass(frozen=True)
class ScrubReport:
    checked: int
    corrupt: list[tuple[str, int]] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)  # paths relative to the store's root
    bad_epochs: list[str] = field(default_factory=list)  # file ids

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.stray and not self.bad_epochs


def scrub(store: ObjectStore, *, now: float | None = None) -> ScrubReport:
    """Check the whole store. ``now`` (unix seconds) is for tests; default: time.time()."""
    check_format(store.root)
    now = time.time() if now is None else now
    checked = 0
    corrupt: list[tuple[str, int]] = []
    stray: list[str] = []
    bad_epochs: list[str] = []

    def walk(parts: tuple[str, ...]) -> None:
        nonlocal checked
        try:
            with os.scandir(store.objects.joinpath(*parts)) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            return  # the file was deleted while we walked
        for entry in entries:
            sub = (*parts, entry.name)
            rel = os.path.join("objects", *sub)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if is_valid_dir(sub):
                    walk(sub)
                else:
                    stray.append(rel)
                continue
            parsed = parse_object_relpath(sub) if stat.S_ISREG(st.st_mode) else None
            if parsed is not None:
                checked += 1
                try:
                    store.load(parsed[0], parsed[1])  # verifies the whole object
                except CorruptObject:
                    corrupt.append(parsed)
            elif len(sub) == 4 and entry.name in (EPOCH_NAME, XLOC_NAME) and is_valid_dir(parts):
                if not stat.S_ISREG(st.st_mode):
                    stray.append(rel)
                    continue
                try:
                    with open(entry.path, "rb") as f:
                        decode_epoch(f.read(EPOCH_RECORD.size + 1))
                except ValueError:
                    bad_epochs.append(f"{parts[1]}:{parts[2]}")
                except FileNotFoundError:
                    continue
            elif not (
                len(sub) == 4
                and stat.S_ISREG(st.st_mode)
                and TEMP_RE.fullmatch(entry.name)
                and now - st.st_mtime < TEMP_MAX_AGE
            ):
                stray.append(rel)

    walk(())
    return ScrubReport(checked=checked, corrupt=corrupt, stray=stray, bad_epochs=bad_epochs)
