"""What every MRC over one store shares, kept in the store (format 7): the XCap signing
keys and the OSDs being drained. An MRC that takes over from another signs with the same
keys, so the XCaps clients hold stay valid, and drains what the other drained
(docs/design/metadata-ha.md).

Stores made before format 7 kept both in the MRC's data directory; :func:`adopt_files`
moves them in once, when the MRC starts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from xfs.common.xcap import KeyDir
from xfs.mrc.sql import MetaStore

log = logging.getLogger(__name__)


class StoreKeys:
    """A ``KeyRing``'s keys in the store's ``xcap_keys`` table (a ``KeyBacking``)."""

    def __init__(self, store: MetaStore) -> None:
        self._store = store

    def load(self) -> tuple[dict[str, bytes], dict[str, float], str]:
        with self._store.read() as cur:
            rows = cur.execute("SELECT id, private, since, signing FROM xcap_keys").fetchall()
        keys = {kid: bytes(raw) for kid, raw, _, _ in rows}
        since = {kid: float(t) for kid, _, t, _ in rows}
        current = next((kid for kid, _, _, signing in rows if signing), "")
        return keys, since, current

    def save_key(self, kid: str, raw: bytes, since: float) -> None:
        with self._store.transaction() as cur:
            cur.execute(
                "INSERT INTO xcap_keys (id, private, since, signing) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (id) DO UPDATE SET private = excluded.private, "
                "since = excluded.since",
                (kid, raw, since),
            )

    def set_since(self, kid: str, since: float) -> None:
        with self._store.transaction() as cur:
            cur.execute("UPDATE xcap_keys SET since = ? WHERE id = ?", (since, kid))

    def save_current(self, kid: str) -> None:
        with self._store.transaction() as cur:
            cur.execute("UPDATE xcap_keys SET signing = 0 WHERE signing = 1 AND id != ?", (kid,))
            cur.execute("UPDATE xcap_keys SET signing = 1 WHERE id = ?", (kid,))

    def delete(self, kid: str) -> None:
        with self._store.transaction() as cur:
            cur.execute("DELETE FROM xcap_keys WHERE id = ?", (kid,))


def draining(store: MetaStore) -> set[str]:
    with store.read() as cur:
        return {uuid for (uuid,) in cur.execute("SELECT uuid FROM draining").fetchall()}


def set_draining(store: MetaStore, uuid: str, on: bool) -> None:
    with store.transaction() as cur:
        if on:
            cur.execute("INSERT INTO draining (uuid) VALUES (?) ON CONFLICT DO NOTHING", (uuid,))
        else:
            cur.execute("DELETE FROM draining WHERE uuid = ?", (uuid,))


def adopt_files(store: MetaStore, data_dir: Path) -> list[str]:
    """Move a key ring directory and a draining.json of the data directory into the store
    (when the store has none yet); each file moved is renamed ``*.adopted``. What was
    moved, a line each."""
    done = []
    keys_dir, drain_file = data_dir / "xcap-keys", data_dir / "draining.json"
    theirs = StoreKeys(store)
    if keys_dir.is_dir() and not theirs.load()[0]:
        raws, since, current = KeyDir(keys_dir).load()
        if raws:
            for kid, raw in raws.items():
                theirs.save_key(kid, raw, since[kid])
            theirs.save_current(current)
            keys_dir.rename(keys_dir.with_name("xcap-keys.adopted"))
            done.append(f"moved {len(raws)} XCap keys from {keys_dir} into the store")
    if drain_file.is_file():
        for uuid in json.loads(drain_file.read_text()):
            set_draining(store, uuid, True)
        drain_file.rename(drain_file.with_name("draining.json.adopted"))
        done.append(f"moved the draining OSDs of {drain_file} into the store")
    for line in done:
        log.info("%s", line)
    return done
