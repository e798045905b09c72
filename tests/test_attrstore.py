"""The attribute file: exact attributes by key and ETag, shared by mounts, never in the way."""

from __future__ import annotations

import sqlite3

from cwfs import attrstore
from cwfs.attrstore import AttrStore, Known
from cwfs.mount import attribute_file

ENDPOINT = "http://127.0.0.1:9000"


def store(path, bucket="b", entries=1000) -> AttrStore:
    return AttrStore(path, ENDPOINT, bucket, entries)


def test_a_version_is_recalled_only_under_its_etag(tmp_path):
    s = store(tmp_path / "a.sqlite")
    s.remember("k", Known('"e1"', 5, 0o640))
    assert s.recall("k", '"e1"') == Known('"e1"', 5, 0o640)
    assert s.recall("k", '"e2"') is None and s.recall("k", None) is None


def test_a_second_store_on_the_same_file_loads_what_the_first_wrote(tmp_path):
    first, second = store(tmp_path / "a.sqlite"), store(tmp_path / "a.sqlite")
    first.remember("d/k1", Known('"e"', 1, 0o600))
    first.remember("d/k2", Known('"f"', 2, None))
    first.flush()
    second.load(["d/k0", "d/k1", "d/k2", "d/k3"])  # one listing page, in key order
    assert second.recall("d/k1", '"e"') == Known('"e"', 1, 0o600)
    assert second.recall("d/k2", '"f"') == Known('"f"', 2, None)
    other_bucket = store(tmp_path / "a.sqlite", bucket="other")
    other_bucket.load(["d/k1"])
    assert other_bucket.recall("d/k1", '"e"') is None
    first.close()
    second.close()


def test_a_damaged_file_is_rebuilt_empty(tmp_path, caplog):
    path = tmp_path / "a.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    s = store(path)
    assert "starting it again, empty" in caplog.text
    s.remember("k", Known('"e"', 1, None))
    s.flush()
    assert sqlite3.connect(path).execute("SELECT key FROM attributes_v1").fetchall() == [("k",)]


def test_the_file_is_pruned_to_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(attrstore, "MAX_ROWS", 100)
    monkeypatch.setattr(attrstore, "PRUNE_TO", 90)
    s = store(tmp_path / "a.sqlite")
    for i in range(150):
        s.remember(f"k{i:03d}", Known('"e"', i, None))
    s.flush()
    count = sqlite3.connect(tmp_path / "a.sqlite").execute("SELECT count(*) FROM attributes_v1")
    assert count.fetchone()[0] == 90


def test_the_table_is_counted_once_per_check_every_rows(tmp_path, monkeypatch):
    """Counting reads the whole table: not on every flush, which came once per answer
    under stat-ahead. The bound then holds to within CHECK_EVERY rows per mount."""
    monkeypatch.setattr(attrstore, "MAX_ROWS", 100)
    monkeypatch.setattr(attrstore, "PRUNE_TO", 90)
    monkeypatch.setattr(attrstore, "CHECK_EVERY", 50)
    s = store(tmp_path / "a.sqlite")
    counts = []
    real_prune = s._prune
    monkeypatch.setattr(s, "_prune", lambda: (counts.append(1), real_prune()))
    db = sqlite3.connect(tmp_path / "a.sqlite")
    for batch in range(30):
        for i in range(10):
            s.remember(f"k{batch:02d}{i}", Known('"e"', i, None))
        s.flush()
        rows = db.execute("SELECT count(*) FROM attributes_v1").fetchone()[0]
        assert rows <= 100 + 50
    assert len(counts) == 1 + 290 // 50


def test_off_keeps_attributes_in_memory_only(tmp_path):
    assert attribute_file("off") is None
    s = AttrStore(attribute_file("off"), ENDPOINT, "b", 10)
    s.remember("k", Known('"e"', 1, None))
    s.flush()
    assert s.recall("k", '"e"') is not None and not list(tmp_path.iterdir())
