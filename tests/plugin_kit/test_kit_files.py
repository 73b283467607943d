"""qtool.write_atomic: whole file or nothing."""

import pytest
import qtool


def test_write_atomic_replaces_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b.txt"
    assert qtool.write_atomic(target, "one") == target
    qtool.write_atomic(target, b"two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.txt"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        qtool.write_atomic(target, 42)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.txt"]
