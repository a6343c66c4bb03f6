"""GKeyFile dialect: parsing, GLib value rules, exact round-trip and GLib-style writing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyostree.errors import FormatError
from pyostree.formats.keyfile import KeyFile, escape_value, join_list, split_list, unescape_value

OSTREE = shutil.which("ostree")
needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")

SAMPLE = """# repo config
[core]
repo_version=1
mode = archive-z2
  indexed-deltas=true

[remote "origin"]
url=http://127.0.0.1:8000/repo
branches=main;devel;
gpg-verify=false
Name[de]=Ursprung
"""


def test_round_trip_exact_with_comments_and_odd_spacing() -> None:
    assert KeyFile.parse(SAMPLE).to_text() == SAMPLE
    for text in ("", "\n", "[a]\nk=v", "[a]\r\nk=v\r\n", "\n\n# c\n[a]\n\n\nk= v  \n"):
        assert KeyFile.parse(text).to_text() == text


def test_reading_values() -> None:
    kf = KeyFile.parse(SAMPLE)
    assert kf.groups() == ["core", 'remote "origin"']
    assert kf.has_group("core") and not kf.has_group("nope")
    assert kf.keys("core") == ["repo_version", "mode", "indexed-deltas"]
    assert kf.get("core", "mode") == "archive-z2"  # whitespace around '=' dropped
    assert kf.get_int("core", "repo_version") == 1
    assert kf.get_bool("core", "indexed-deltas") is True
    assert kf.get_bool('remote "origin"', "gpg-verify", True) is False
    assert kf.get_list('remote "origin"', "branches") == ["main", "devel"]
    assert kf.get('remote "origin"', "Name[de]") == "Ursprung"
    assert kf.get("core", "missing") is None
    assert kf.get("core", "missing", "dflt") == "dflt"
    assert kf.get_bool("nogroup", "x", True) is True
    assert kf.get_int("core", "missing", 7) == 7
    assert kf.get_list("core", "missing", ["a"]) == ["a"]


def test_trailing_value_whitespace_is_kept_but_ignored_for_bools() -> None:
    kf = KeyFile.parse("[g]\na=x  \nb=true \t\nc=1\nd=0\ne=False\n")
    assert kf.get("g", "a") == "x  "
    assert kf.get_bool("g", "b") is True
    assert kf.get_bool("g", "c") is True
    assert kf.get_bool("g", "d") is False
    with pytest.raises(FormatError, match="boolean"):
        kf.get_bool("g", "e")


def test_integers() -> None:
    kf = KeyFile.parse("[g]\na= -12\nb=+5 trailing\nc=12x\nd=2147483648\ne=\n")
    assert kf.get_int("g", "a") == -12
    assert kf.get_int("g", "b") == 5  # strtol stops at the blank, as GLib accepts
    with pytest.raises(FormatError, match="number"):
        kf.get_int("g", "c")
    with pytest.raises(FormatError, match="out of range"):
        kf.get_int("g", "d")
    with pytest.raises(FormatError):
        kf.get_int("g", "e")


def test_duplicate_keys_last_wins_and_repeated_groups_merge() -> None:
    text = "[a]\nk=1\n[b]\nx=y\n[a]\nk=2\nj=3\n"
    kf = KeyFile.parse(text)
    assert kf.get("a", "k") == "2"
    assert kf.groups() == ["a", "b"]
    assert kf.keys("a") == ["k", "j"]
    assert kf.items("a") == {"k": "2", "j": "3"}
    assert kf.to_text() == text


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (r"\sa b", " a b"),
        (r"x\ny\tz\rw\\", "x\ny\tz\rw\\"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_unescape(raw: str, value: str) -> None:
    assert unescape_value(raw) == value


@pytest.mark.parametrize("raw", ["a\\", r"a\x", r"a\;b"])
def test_invalid_escapes(raw: str) -> None:
    with pytest.raises(FormatError):
        unescape_value(raw)
    kf = KeyFile.parse(f"[g]\nk={raw}\n")  # parsing is fine; reading the string is not
    with pytest.raises(FormatError, match=r"\[g\] k"):
        kf.get("g", "k")
    if raw == r"a\;b":
        assert kf.get_list("g", "k") == ["a;b"]


def test_lists() -> None:
    assert split_list("a;b;") == ["a", "b"]
    assert split_list("a;b") == ["a", "b"]
    assert split_list("a;;b") == ["a", "", "b"]
    assert split_list(";") == [""]
    assert split_list("") == []
    assert split_list(r"a\;b;c") == ["a;b", "c"]
    assert split_list("a,b,", ",") == ["a", "b"]
    assert join_list(["a;b", " c", "d"]) == r"a\;b;\sc;d;"
    assert split_list(join_list(["a;b", " c", "", "x\ny"])) == ["a;b", " c", "", "x\ny"]


def test_escape_matches_glib_rules() -> None:
    assert escape_value("  a b ") == r"\s\sa b "
    assert escape_value("\ta\tb") == "\\ta\tb"
    assert escape_value("a\nb\\c\r") == r"a\nb\\c\r"
    assert escape_value("a;b") == "a;b"
    assert escape_value("a; b", separator=";") == r"a\;\sb"


@pytest.mark.parametrize(
    "text",
    [
        "k=v\n",  # key before any group
        "[g]\njunk\n",
        "[g]\n=v\n",
        "[g\n",
        "[a]b]\n",
        "[]\n",
        "[g]\nk[de=v\n",
        "[g]\nk[d e]=v\n",
        "[g]\nk[de]x=v\n",
        "[g]\nk]=v\n",
        "[g]\nk=v\0\n",
        "[g\x01]\n",
    ],
)
def test_bad_lines_raise(text: str) -> None:
    with pytest.raises(FormatError):
        KeyFile.parse(text)


def test_group_header_whitespace_and_leading_space() -> None:
    kf = KeyFile.parse("  [core]  \t\n\t key = v\n   \n  # note\n k x =y\n")
    assert kf.get("core", "key") == "v"
    assert kf.get("core", "k x") == "y"  # inner blanks are allowed in key names


def test_set_existing_new_key_and_new_group_like_glib() -> None:
    kf = KeyFile.parse("[core]\nrepo_version=1\nmode=bare\n\n[other]\na=b\n")
    kf.set("core", "mode", "archive-z2")
    kf.set_bool("core", "indexed-deltas", True)
    kf.set('remote "o"', "url", "http://x")
    kf.set_list('remote "o"', "branches", ["a", "b"])
    kf.set_int("other", "n", -3)
    assert kf.to_text() == (
        "[core]\nrepo_version=1\nmode=archive-z2\nindexed-deltas=true\n\n"
        "[other]\na=b\nn=-3\n\n"
        '[remote "o"]\nurl=http://x\nbranches=a;b;\n'
    )
    again = KeyFile.parse(kf.to_text())
    assert again.get_list('remote "o"', "branches") == ["a", "b"]
    assert again.get_int("other", "n") == -3


def test_set_escapes_and_reads_back() -> None:
    kf = KeyFile()
    value = " lead\ttab\nline\\back;semi "
    kf.set("g", "k", value)
    assert kf.to_text() == "[g]\nk=\\slead\ttab\\nline\\\\back;semi \n"
    assert KeyFile.parse(kf.to_text()).get("g", "k") == value


def test_set_without_final_newline_and_empty_sections() -> None:
    kf = KeyFile.parse("[a]\nx=1")
    kf.set("b", "y", "2")
    assert kf.to_text() == "[a]\nx=1\n\n[b]\ny=2\n"
    kf = KeyFile.parse("[a]\n[b]\nz=1\n")
    kf.set("a", "k", "v")
    assert kf.to_text() == "[a]\nk=v\n[b]\nz=1\n"


def test_set_rejects_bad_names() -> None:
    kf = KeyFile()
    for group, key in (("a]", "k"), ("", "k"), ("g", "a=b"), ("g", " k"), ("g", "")):
        with pytest.raises(ValueError):
            kf.set(group, key, "v")
    with pytest.raises(ValueError):
        kf.set_raw("g", "k", "a\nb")


def test_remove_key_and_group() -> None:
    kf = KeyFile.parse('[core]\nmode=bare\nx=1\nx=2\n\n[remote "a"]\nurl=u\n\n[z]\nq=1\n')
    assert kf.remove_key("core", "x") is True
    assert kf.remove_key("core", "x") is False
    assert kf.remove_group('remote "a"') is True
    assert kf.remove_group('remote "a"') is False
    assert kf.to_text() == "[core]\nmode=bare\n\n[z]\nq=1\n"
    assert kf.remove_group("z") is True
    assert kf.to_text() == "[core]\nmode=bare\n"


def test_copy_is_independent() -> None:
    kf = KeyFile.parse("[a]\nk=1\n")
    other = kf.copy()
    other.set("a", "k", "2")
    assert kf.get("a", "k") == "1" and other.get("a", "k") == "2"


# ---------------------------------------------------------------------------- interop


def _ostree(*args: str) -> str:
    assert OSTREE is not None
    return subprocess.run([OSTREE, *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.interop
@needs_ostree
def test_real_config_round_trips_and_our_edits_read_back(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _ostree("init", f"--repo={repo}", "--mode=archive")
    _ostree("config", f"--repo={repo}", "set", "core.min-free-space-percent", "5")
    _ostree("remote", "add", f"--repo={repo}", "--no-gpg-verify", "o", "http://127.0.0.1:1/r")
    text = (repo / "config").read_text()
    kf = KeyFile.parse(text)
    assert kf.to_text() == text
    assert kf.get("core", "mode") == "archive-z2"
    assert kf.get_int("core", "min-free-space-percent") == 5
    assert kf.get_bool('remote "o"', "gpg-verify", True) is False

    tricky = " two  leading; semi\ttab \\ back"
    kf.set("core", "x-note", tricky)
    kf.set_list("core", "x-list", ["a;b", "c"])
    (repo / "config").write_text(kf.to_text())
    got = _ostree("config", f"--repo={repo}", "get", "core.x-note")
    assert got == tricky + "\n"
    assert _ostree("config", f"--repo={repo}", "get", "core.mode") == "archive-z2\n"


@pytest.mark.interop
@needs_ostree
def test_glib_writes_what_we_write(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _ostree("init", f"--repo={repo}", "--mode=bare-user")
    before = KeyFile.parse((repo / "config").read_text())
    value = " a\\b\nc"
    _ostree("config", f"--repo={repo}", "set", "core.x-val", value)
    _ostree("config", f"--repo={repo}", "set", "newgroup.k", "v")
    before.set("core", "x-val", value)
    before.set("newgroup", "k", "v")
    assert before.to_text() == (repo / "config").read_text()
