"""``streamapp upload``'s pure helpers."""

from __future__ import annotations

import pytest

from streamapp.tools.upload import bootstrap_servers, image_files


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://localhost:9092", "localhost:9092"),
        ("tansu://127.0.0.1:1234", "127.0.0.1:1234"),
        ("kafka://a:1;kafka://b:2", "a:1,b:2"),
        ("a:1,b:2", "a:1,b:2"),
    ],
)
def test_bootstrap_servers(url, servers):
    assert bootstrap_servers(url) == servers


def test_image_files_keep_folder_layout(tmp_path):
    (tmp_path / "d" / "sub dir").mkdir(parents=True)
    (tmp_path / "d" / "sub dir" / "7.png").write_bytes(b"x")
    (tmp_path / "d" / "notes.txt").write_text("skip me")
    (tmp_path / "one.JPG").write_bytes(b"x")
    found = list(image_files([tmp_path / "d", tmp_path / "one.JPG"]))
    assert [(p.name, key) for p, key in found] == [("7.png", "sub dir/7.png"), ("one.JPG", "one.JPG")]
    with pytest.raises(FileNotFoundError):
        list(image_files([tmp_path / "missing"]))
