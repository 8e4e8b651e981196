"""Archive safety: member names that escape the target folder (zip-slip), links, special files."""
from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from metajax.data import DataError, load_omniglot, safe_extract
from metajax.data.archives import check_member_name


@pytest.mark.parametrize("name", [
    "../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:\\evil.txt", "C:/evil.txt",
    "a\\..\\..\\evil.txt", "..", "", "a/\0b",
])
def test_unsafe_member_names(name):
    with pytest.raises(DataError, match="zip-slip"):
        check_member_name(name, "x.zip")


@pytest.mark.parametrize("name, normal", [
    ("a/b.png", "a/b.png"), ("a/./b.png", "a/b.png"), ("a/", "a"), ("a/b..c/d", "a/b..c/d"),
])
def test_safe_member_names(name, normal):
    assert check_member_name(name, "x.zip") == normal


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_zip_slip_is_refused_before_writing(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("ok/first.txt", b"1"), ("../../escaped.txt", b"2")])
    target = tmp_path / "deep" / "target"
    with pytest.raises(DataError, match="'../../escaped.txt'.*zip-slip"):
        safe_extract(archive, target)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (target / "ok" / "first.txt").exists()  # nothing at all was written


def test_tar_slip_links_and_devices_are_refused(tmp_path):
    target = tmp_path / "target"
    with pytest.raises(DataError, match="zip-slip"):
        safe_extract(_tar(tmp_path / "a.tar.gz", [_file("../escaped.txt")]), target)
    link = tarfile.TarInfo("data/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(DataError, match="link or special file"):
        safe_extract(_tar(tmp_path / "b.tar.gz", [_file("data/a.txt"), (link, None)]), target)
    device = tarfile.TarInfo("data/dev")
    device.type = tarfile.CHRTYPE
    with pytest.raises(DataError, match="link or special file"):
        safe_extract(_tar(tmp_path / "c.tar.gz", [(device, None)]), target)
    assert not (tmp_path / "escaped.txt").exists() and not target.exists()


def test_symlinked_folder_inside_target_cannot_redirect(tmp_path):
    target, outside = tmp_path / "target", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "sub").symlink_to(outside)
    with pytest.raises(DataError, match="outside"):
        safe_extract(_zip(tmp_path / "a.zip", [("sub/evil.txt", b"2")]), target)
    assert not (outside / "evil.txt").exists()


def test_plain_archives_extract(tmp_path):
    for archive in (_zip(tmp_path / "a.zip", [("d/x.txt", b"zip"), ("d/e/", b"")]),
                    _tar(tmp_path / "a.tar.gz", [_file("d/x.txt", b"tar")])):
        target = tmp_path / f"out-{archive.suffix}"
        written = safe_extract(archive, target)
        assert written == [(target / "d" / "x.txt").resolve()]
        assert (target / "d" / "x.txt").read_bytes() in (b"zip", b"tar")
    (tmp_path / "junk.bin").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="neither a readable zip nor tar"):
        safe_extract(tmp_path / "junk.bin", tmp_path / "x")


def test_loaders_refuse_slip_archives(tmp_path):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    _zip(folder / "images_background.zip", [("images_background/../../../evil.png", b"")])
    _zip(folder / "images_evaluation.zip", [("images_evaluation/A/character01/x.png", b"")])
    with pytest.raises(DataError, match="images_background.zip holds a member named.*zip-slip"):
        load_omniglot(folder, cache_dir=tmp_path / "cache")
