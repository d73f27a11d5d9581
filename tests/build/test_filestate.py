"""The file-hash state cache: a file is read again only when its stat changes."""

import hashlib
import os

from lmbuild.build.filestate import StateCache


def test_hashes_once_per_stat_and_survives_a_new_process(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello" * 1000)
    cache = StateCache(tmp_path / "state.json")
    h = cache.digest(f)
    assert h == hashlib.sha256(b"hello" * 1000).hexdigest() and cache.hashed_bytes == 5000
    assert cache.digest(f) == h and cache.hashed_bytes == 5000  # remembered
    cache.save()
    again = StateCache(tmp_path / "state.json")
    assert again.digest(f) == h and again.hashed_bytes == 0  # from the file


def test_a_touch_rehashes_once_and_gives_the_same_digest(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    cache = StateCache()
    h = cache.digest(f)
    os.utime(f, (1, 1))
    assert cache.digest(f) == h and cache.hashed_bytes == 2


def test_an_edit_is_seen(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    cache = StateCache()
    h = cache.digest(f)
    f.write_text("two, longer")
    assert cache.digest(f) != h


def test_a_moved_file_is_not_read_again(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("content")
    cache = StateCache()
    h = cache.digest(f)
    (tmp_path / "sub").mkdir()
    moved = f.rename(tmp_path / "sub" / "b.txt")  # same inode, same mtime
    assert cache.digest(moved) == h and cache.hashed_bytes == len("content")


def test_a_damaged_cache_file_costs_a_rehash_only(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert StateCache(tmp_path / "state.json").digest(f) == hashlib.sha256(b"x").hexdigest()


def test_folder_digest_follows_names_and_bytes(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    cache = StateCache()
    h = cache.folder_digest(tmp_path / "m")
    (tmp_path / "m" / "config.json").rename(tmp_path / "m" / "other.json")
    assert cache.folder_digest(tmp_path / "m") != h


def test_the_cache_keeps_one_entry_per_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    for t in (1, 2, 3):
        os.utime(f, (t, t))
        cache = StateCache(tmp_path / "state.json")
        cache.digest(f)
        cache.save()
    import json

    assert len(json.loads((tmp_path / "state.json").read_text())) == 1
