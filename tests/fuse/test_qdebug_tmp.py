import sqlite3
from pathlib import Path
import pytest
from tests.fuse.test_quotas import *  # noqa
from tests.fuse.test_quotas import users, shared, quota, volume, principal, shown, df  # noqa
from tests.fuse.test_multiuser import as_user, ok
from tests.system.grid import Grid

def ranges(grid):
    db = sqlite3.connect(f"file:{grid.state / 'mrc' / 'data' / 'mrc.db'}?mode=ro", uri=True)
    r = db.execute("SELECT c.principal, r.first, r.last FROM ino_ranges r JOIN clients c ON c.id = r.client WHERE r.first <= r.last").fetchall()
    db.close()
    return r

@pytest.mark.timeout(60)
def test_dbg(grid: Grid, users, shared: Path) -> None:
    alice, bob = users
    ok(as_user(alice, "touch before && mkdir d1", shared))
    print("\nranges", ranges(grid))
    ok(quota(grid, "set", volume(grid), "--principal", principal(alice), "--files", "5"))
    print(shown(grid), df(alice, shared))
    print(as_user(alice, "touch after", shared))
    print(as_user(alice, "mkdir d2", shared))
    print(as_user(alice, "cd d1 && touch inner", shared))
    print("ranges", ranges(grid))
    print(shown(grid))
