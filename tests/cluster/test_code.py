"""Code packages: packed deterministically, named by their SHA-256, and on a node checked
(name, members, size) before anything is written or imported."""

from __future__ import annotations

import hashlib
import io
import stat
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplex.cluster import CodeRejected, pack_code
from agentplex.cluster.lowlevel import CodeCache, code_package_name

MODULE = "from agentplex import Actor\n\nclass Echo(Actor):\n    VERSION = {version}\n"


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[CodeCache]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    got = CodeCache()
    yield got
    got.close()
    for name in [m for m in sys.modules if m.startswith("agentplex_code_")]:
        del sys.modules[name]


def _zip(members: dict[str, bytes], *, mode: int = stat.S_IFREG | 0o644) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def test_the_same_files_pack_to_the_same_hash_and_another_version_to_another(
        tmp_path: Path) -> None:
    (tmp_path / "opsim.py").write_text(MODULE.format(version=1))
    first = pack_code(tmp_path / "opsim.py")
    (tmp_path / "opsim.py").touch()  # a newer time stamp changes nothing
    assert pack_code(tmp_path / "opsim.py") == first
    assert first.sha256 == hashlib.sha256(first.archive).hexdigest()
    assert first.modules == ("opsim",)
    (tmp_path / "opsim.py").write_text(MODULE.format(version=2))
    assert pack_code(tmp_path / "opsim.py").sha256 != first.sha256


def test_a_folder_packs_its_py_files_without_caches_or_hidden_folders(tmp_path: Path
                                                                       ) -> None:
    (tmp_path / "sims").mkdir()
    (tmp_path / "sims" / "__init__.py").write_text("")
    (tmp_path / "sims" / "opsim.py").write_text(MODULE.format(version=1))
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "notes.txt").write_text("not code")
    for skipped in ("__pycache__", ".venv"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "junk.py").write_text("")
    package = pack_code(tmp_path)
    assert package.modules == ("helpers", "sims", "sims.opsim")
    with zipfile.ZipFile(io.BytesIO(package.archive)) as archive:
        assert archive.namelist() == ["helpers.py", "sims/__init__.py", "sims/opsim.py"]
    with pytest.raises(CodeRejected, match="more than 10 bytes"):
        pack_code(tmp_path, max_bytes=10)
    (tmp_path / "my-sim.py").write_text("")
    with pytest.raises(CodeRejected, match="not an importable module name"):
        pack_code(tmp_path)


def test_two_versions_import_side_by_side_under_their_hashes(tmp_path: Path,
                                                             cache: CodeCache) -> None:
    packages = []
    for version in (1, 2):
        (tmp_path / "opsim.py").write_text(MODULE.format(version=version))
        packages.append(pack_code(tmp_path / "opsim.py"))
    for version, package in enumerate(packages, 1):
        names = cache.install(package.sha256, package.archive, ["opsim"])
        assert names == [f"{code_package_name(package.sha256)}.opsim"]
        assert version == sys.modules[names[0]].Echo.VERSION
    again = packages[0]  # cached per hash: a second send unpacks nothing
    assert cache.install(again.sha256, again.archive, ["opsim"]) == \
        [f"{again.package}.opsim"]
    assert sorted(p.name for p in cache.root.iterdir()) == sorted(p.package for p in packages)


def test_an_archive_that_is_not_what_its_hash_names_is_refused(tmp_path: Path,
                                                              cache: CodeCache) -> None:
    (tmp_path / "opsim.py").write_text(MODULE.format(version=1))
    package = pack_code(tmp_path / "opsim.py")
    tampered = package.archive[:-1] + b"\x01"
    with pytest.raises(CodeRejected, match=r"SHA-256 is .* not the"):
        cache.install(package.sha256, tampered, ["opsim"])
    other = "0" * 64
    with pytest.raises(CodeRejected, match="not the 0000"):
        cache.install(other, package.archive, ["opsim"])
    with pytest.raises(CodeRejected, match="not a SHA-256"):
        cache.install("../../etc", package.archive, ["opsim"])
    assert list(cache.root.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.py", "/tmp/evil.py", "a/../../evil.py",
                                  "a\\..\\evil.py", "C:evil.py", "./evil.py"])
def test_a_member_outside_the_package_is_refused_before_anything_is_written(
        tmp_path: Path, cache: CodeCache, name: str) -> None:
    archive = _zip({"ok.py": b"", name: b"raise SystemExit('ran')\n"})
    with pytest.raises(CodeRejected, match="not a path inside the package"):
        cache.install(hashlib.sha256(archive).hexdigest(), archive, ["ok"])
    assert list(cache.root.iterdir()) == []
    assert not (cache.root.parent / "evil.py").exists()


def test_links_other_files_and_bombs_are_refused(cache: CodeCache) -> None:
    def install(archive: bytes) -> None:
        cache.install(hashlib.sha256(archive).hexdigest(), archive, ["ok"])

    with pytest.raises(CodeRejected, match="not a plain file"):
        install(_zip({"ok.py": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777))
    with pytest.raises(CodeRejected, match=r"not a \.py file"):
        install(_zip({"ok.py": b"", "lib.so": b"\x7fELF"}))
    with pytest.raises(CodeRejected, match="unpacked"):
        small = CodeCache(max_bytes=1000)
        try:
            archive = _zip({"ok.py": b"#" * 5000})  # compresses to far less than 1000
            assert len(archive) < 1000
            small.install(hashlib.sha256(archive).hexdigest(), archive, ["ok"])
        finally:
            small.close()
    with pytest.raises(CodeRejected, match="not a zip archive"):
        install(b"not a zip")
    with pytest.raises(CodeRejected, match="holds no module 'missing'"):
        archive = _zip({"ok.py": b""})
        cache.install(hashlib.sha256(archive).hexdigest(), archive, ["missing"])


def test_a_module_that_fails_to_import_is_refused_with_its_error(cache: CodeCache) -> None:
    archive = _zip({"bad.py": b"import no_such_module_anywhere\n"})
    with pytest.raises(CodeRejected, match="No module named 'no_such_module_anywhere'"):
        cache.install(hashlib.sha256(archive).hexdigest(), archive, ["bad"])
