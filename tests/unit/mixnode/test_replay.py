"""The replay store: atomic check-and-add across threads, durable tags, bounded by purging."""

from __future__ import annotations

import os
import threading

from mixnode.replay import ReplayStore


def test_check_and_add_flags_the_second_sighting_only(tmp_path):
    store = ReplayStore(tmp_path / "r.sqlite")
    tag = os.urandom(32)
    assert store.check_and_add(5, tag) is False
    assert store.check_and_add(5, tag) is True
    assert store.check_and_add(6, tag) is False  # another epoch, another window
    store.close()


def test_persisted_tags_survive_a_restart_and_purge_drops_old_epochs(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ReplayStore(path)
    tags = {e: [os.urandom(32) for _ in range(50)] for e in (3, 4, 5)}
    for epoch, batch in tags.items():
        for tag in batch:
            store.check_and_add(epoch, tag)
        store.persist(epoch, batch)
    store.close()

    again = ReplayStore(path)
    assert again.load([4, 5]) == 100
    assert all(again.check_and_add(4, t) for t in tags[4])
    assert not again.check_and_add(3, tags[3][0])  # epoch 3 not loaded
    again.purge_before(5)
    assert again.count(4) == 0 and again.count(5) == 50
    again.close()
    third = ReplayStore(path)
    assert third.load([3, 4, 5]) == 50
    third.close()


def test_concurrent_threads_see_each_tag_exactly_once(tmp_path):
    store = ReplayStore(tmp_path / "r.sqlite")
    tags = [os.urandom(32) for _ in range(2000)]
    fresh = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [t for t in tags if not store.check_and_add(1, t)]
        store.persist(1, mine)
        with lock:
            fresh.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fresh) == sorted(tags)
    store.close()
    reopened = ReplayStore(tmp_path / "r.sqlite")
    assert reopened.load([1]) == 2000
    reopened.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_flood_of_fresh_tags_does_not_grow_memory_past_the_filter(tmp_path):
    # The attack: valid packets with fresh tags, as many as an epoch allows. 400,000 tags held
    # in a set take ~40 MB; the filter for 100,000 tags takes 0.36 MB whatever arrives.
    store = ReplayStore(tmp_path / "r.sqlite", capacity=100_000)
    store.check_and_add(7, os.urandom(32))
    tags = os.urandom(32 * 400_000)
    before = _rss_bytes()
    for i in range(0, len(tags), 32):
        store.check_and_add(7, tags[i : i + 32])
    grown = _rss_bytes() - before
    assert grown < 8 * 1024 * 1024, grown
    assert store.over_capacity() == [7]
    assert store.check_and_add(7, tags[:32]) is True  # still no false negative
    store.close()


def test_tags_in_the_one_row_per_tag_table_of_older_files_are_still_loaded_and_purged(tmp_path):
    import sqlite3

    path = tmp_path / "r.sqlite"
    old, new = [os.urandom(16) for _ in range(3)], [os.urandom(16) for _ in range(4)]
    ReplayStore(path).close()
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO tags (epoch, tag) VALUES (?, ?)", [(4, t) for t in old])
    conn.commit()
    conn.close()
    store = ReplayStore(path)
    store.persist_many({4: new[:2], 5: new[2:]})
    store.close()
    again = ReplayStore(path)
    assert again.load([4, 5]) == 7
    assert all(again.check_and_add(4, t) for t in old + new[:2]) and all(again.check_and_add(5, t) for t in new[2:])
    again.purge_before(5)
    again.close()
    third = ReplayStore(path)
    assert third.load([4, 5]) == 2
    third.close()
