"""scripts/check_wheel.py, which CI runs on the built wheel: each check fails on the wheel it exists for."""
import importlib.util
import os
import zipfile

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("check_wheel", os.path.join(REPO, "scripts", "check_wheel.py"))
cw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cw)

GOOD_NAME = "uccl_ep-0.1.0+cu13-cp311-cp311-manylinux_2_28_x86_64.whl"
MODULE = "uccl/ep/_C.cpython-311-x86_64-linux-gnu.so"
GOOD_FILES = ("uccl/ep/__init__.py", MODULE)
CLEAN_NEEDED = ["libstdc++.so.6", "libgcc_s.so.1", "libc.so.6"]


def wheel(tmp_path, name=GOOD_NAME, files=GOOD_FILES):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        for f in files:
            z.writestr(f, b"\x7fELF" if f.endswith(".so") else b"")
    return str(path)


@pytest.fixture
def needed(monkeypatch):
    """What readelf reports for the module (a stand-in: the test wheels hold no real ELF)."""
    box = {"value": CLEAN_NEEDED}
    monkeypatch.setattr(cw, "needed_of", lambda path: box["value"])
    return box


def test_a_good_wheel_passes(tmp_path, needed):
    assert cw.check(wheel(tmp_path)) == []
    assert cw.check(wheel(tmp_path, name=GOOD_NAME.replace("manylinux_2_28_x86_64", "linux_x86_64"))) == []


@pytest.mark.parametrize("name, words", [
    ("uccl_ep-0.1.0-cp311-cp311-linux_x86_64.whl", "does not end in +cu12"),
    ("uccl_ep-0.1.0+cu13-cp311-cp312-linux_x86_64.whl", "differ"),
    ("uccl_ep-0.1.0+cu13-cp311-cp311-win_amd64.whl", "platform tag"),
    ("uccl_ep-0.1.0+cu13-py3-none-any.whl", "not a uccl_ep-"),
])
def test_a_wrong_tag_is_named(tmp_path, needed, name, words):
    problems = cw.check(wheel(tmp_path, name=name))
    assert any(words in p for p in problems), problems


@pytest.mark.parametrize("extra, words", [
    (("uccl/__init__.py",), "namespace package"),
    (("deep_ep/__init__.py",), "alias is its own distribution"),
    (("uccl/ep/_C.cpython-312-x86_64-linux-gnu.so",), "expected one uccl/ep/_C*.so"),
])
def test_wrong_contents_are_named(tmp_path, needed, extra, words):
    problems = cw.check(wheel(tmp_path, files=GOOD_FILES + extra))
    assert any(words in p for p in problems), problems


@pytest.mark.parametrize("lib", ["libfabric.so.1", "libibverbs.so.1", "libcuda.so.1", "libtorch_cpu.so",
                                 "libspdlog.so.1.10", "libfmt.so.9", "libc10.so"])
def test_a_forbidden_library_is_named(tmp_path, needed, lib):
    needed["value"] = CLEAN_NEEDED + [lib]
    problems = cw.check(wheel(tmp_path))
    assert any(lib in p for p in problems), problems


def test_its_command_line_answers_help_and_refuses_unknown_flags(capsys):
    assert cw.main(["--help"]) == 0
    assert "WHEEL" in capsys.readouterr().out
    assert cw.main([]) == 2
    assert "the following arguments are required: WHEEL" in capsys.readouterr().err
    assert cw.main(["--strict", "x.whl"]) == 2
    assert "unrecognized arguments: --strict" in capsys.readouterr().err
