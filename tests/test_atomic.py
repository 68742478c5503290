from pathlib import Path

import pytest

from lpsctl.atomic import atomic_path


def test_atomic_path_leaves_no_partial_file(tmp_path: Path):
    final = tmp_path / "out.json"
    final.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(final) as temp:
        temp.write_text("half")
        raise KeyboardInterrupt
    assert final.read_text() == "old" and list(tmp_path.iterdir()) == [final]
    with atomic_path(final) as temp:
        temp.write_text("new")
    assert final.read_text() == "new" and list(tmp_path.iterdir()) == [final]


def test_the_temporary_name_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path):
    with atomic_path(tmp_path / "labels.png") as temp:
        assert temp.suffix == ".png" and temp.parent == tmp_path
        temp.write_bytes(b"x")
    assert (tmp_path / "labels.png").read_bytes() == b"x"
