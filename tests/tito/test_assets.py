"""`tito export` copies `modules/NN_name/assets/` to `tinytorch/assets/NN_name/` byte for byte."""

import gzip

ASSET = "tinytorch/assets/01_tensor"


def add_assets(course):
    folder = course.root / "modules/01_tensor/assets"
    (folder / "sub").mkdir(parents=True)
    blob = gzip.compress(b"payload\x00\xff\r\n", mtime=0)
    (folder / "data.bin.gz").write_bytes(blob)
    (folder / "sub/notes.txt").write_bytes(b"line one\r\nline two\n")  # CRLF kept as is
    (folder / "helper.py").write_text("x = 1\n")  # a .py asset is data too: no header needed
    (folder / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    return folder, blob


def test_assets_are_copied_byte_for_byte(course):
    folder, blob = add_assets(course)
    result = course.tito("export")
    assert result.exit_code == 0, result.output
    assert (course.root / f"{ASSET}/data.bin.gz").read_bytes() == blob
    assert (course.root / f"{ASSET}/sub/notes.txt").read_bytes() == b"line one\r\nline two\n"
    assert (course.root / f"{ASSET}/helper.py").read_text() == "x = 1\n"
    assert not (course.root / f"{ASSET}/.DS_Store").exists(), "hidden files must not be copied"
    assert f"added {ASSET}/data.bin.gz" in result.output


def test_assets_get_no_init_and_are_not_imported(course):
    add_assets(course)
    course.tito("export")
    assert not list((course.root / "tinytorch/assets").rglob("__init__.py"))
    assert "assets" not in course.read("tinytorch/__init__.py")
    probe = (
        "import importlib.resources, sys, tinytorch\n"
        "print((importlib.resources.files('tinytorch') / 'assets' / '01_tensor' / 'sub' / 'notes.txt').read_bytes())\n"
        "print('tinytorch.assets' in sys.modules)\n"
    )
    run = course.subprocess("-c", probe)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["b'line one\\r\\nline two\\n'", "False"]


def test_rerun_is_identical_and_check_is_clean(course):
    add_assets(course)
    course.tito("export")
    before = {p: p.read_bytes() for p in (course.root / "tinytorch").rglob("*") if p.is_file()}
    again = course.tito("export")
    assert again.exit_code == 0 and "0 file(s) updated" in again.output, again.output
    assert {p: p.read_bytes() for p in (course.root / "tinytorch").rglob("*") if p.is_file()} == before
    check = course.tito("export", "--check")
    assert check.exit_code == 0, check.output


def test_check_reports_added_changed_and_stale_assets_and_writes_nothing(course):
    folder, _ = add_assets(course)
    course.tito("export")
    (folder / "data.bin.gz").write_bytes(b"new bytes")  # changed
    (folder / "extra.txt").write_text("more\n")  # added
    (folder / "sub/notes.txt").unlink()  # its copy is now stale
    check = course.tito("export", "--check")
    assert check.exit_code == 1
    assert f"changed: {ASSET}/data.bin.gz" in check.output
    assert f"added: {ASSET}/extra.txt" in check.output
    assert f"removed: {ASSET}/sub/notes.txt" in check.output
    assert (course.root / f"{ASSET}/sub/notes.txt").exists(), "--check must not write or delete"
    assert not (course.root / f"{ASSET}/extra.txt").exists()


def test_stale_assets_are_removed_with_their_emptied_folders(course):
    folder, _ = add_assets(course)
    course.tito("export")
    (folder / "sub/notes.txt").unlink()
    stray = course.root / "tinytorch/assets/09_gone/old.bin"  # a module that no longer exists
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\x00")
    result = course.tito("export")
    assert result.exit_code == 0, result.output
    assert f"removed {ASSET}/sub/notes.txt" in result.output
    assert not (course.root / f"{ASSET}/sub").exists()
    assert not stray.parent.exists()
    assert course.tito("export", "--check").exit_code == 0


def test_asset_of_an_unselected_module_is_not_written(course):
    add_assets(course)
    result = course.tito("export", "2")
    assert result.exit_code == 0, result.output
    assert not (course.root / "tinytorch/assets").exists()
    course.tito("export", "1")
    assert (course.root / f"{ASSET}/data.bin.gz").exists()


def test_export_target_inside_assets_is_an_error(repo):
    repo.module("01_data", "# %%\n#| default_exp assets.loader\n#| export\nx = 1\n")
    result = repo.tito("export")
    assert result.exit_code != 0
    assert "inside tinytorch/assets/" in result.output
