"""The documentation stays true to the code.

* ``docs/cli.md`` is exactly what ``docs/gen_cli_reference.py`` generates from the parser;
* every command and the ``admin``/``remote``/``static-delta`` subcommands are documented;
* every ``pyostree`` command line shown in the docs parses with the real argument parser;
* the Python examples of ``docs/api.md`` run;
* relative links (and their ``#anchors``) in README.md and docs/*.md point to existing files.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pyostree.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REGENERATE = "python3 docs/gen_cli_reference.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_reference",
                                                  DOCS / "gen_cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _code_blocks(text: str, languages: tuple[str, ...]) -> Iterator[str]:
    for match in re.finditer(r"^```([\w-]*)\n(.*?)^```", text, re.M | re.S):
        if match.group(1) in languages:
            yield match.group(2)


# ------------------------------------------------------------------------------ CLI reference


def test_cli_reference_is_current() -> None:
    expected = _generator().render()
    try:
        current = (DOCS / "cli.md").read_text(encoding="utf-8")
    except FileNotFoundError:
        pytest.fail(f"docs/cli.md is missing; generate it with: {REGENERATE}")
    if current != expected:
        diff = "".join(list(difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True),
            "docs/cli.md", "generated", n=1))[:40])
        pytest.fail(f"docs/cli.md is out of date with the argument parser; regenerate it with: "
                    f"{REGENERATE}\n{diff}")


def test_generator_check_mode(tmp_path: Path) -> None:
    gen = _generator()
    out = tmp_path / "cli.md"
    assert gen.main(["--check", "--output", str(out)]) == 1
    assert gen.main(["--output", str(out)]) == 0
    assert gen.main(["--check", "--output", str(out)]) == 0
    text = out.read_text()
    # Every option of a sample command appears with its help text.
    assert "### `pyostree admin deploy`" in text
    assert "- `--karg KEY=VALUE`: set a kernel argument" in text
    assert "- `--os, --stateroot OS`: the stateroot (OS name)" in text


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[
        argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError(f"{parser.prog} has no subcommands")


def _command_paths() -> list[tuple[str, ...]]:
    top = _subparsers(build_parser())
    paths: list[tuple[str, ...]] = [(name,) for name in top.choices]
    for group in ("admin", "remote", "static-delta"):
        paths += [(group, name) for name in _subparsers(top.choices[group]).choices]
    return paths


def _mentioned(words: tuple[str, ...], text: str) -> bool:
    """``pyostree [opts] w1 [opts] w2`` appears somewhere (options may sit between words)."""
    opts = r"(?:\s+-{1,2}[\w-]+(?:=\S+)?)*"
    pattern = r"pyostree" + "".join(opts + r"\s+" + re.escape(w) for w in words) + r"(?![\w-])"
    return re.search(pattern, text) is not None


def test_every_command_is_documented() -> None:
    texts = [(DOCS / name).read_text(encoding="utf-8") for name in ("user-guide.md", "cli.md")]
    missing = [" ".join(p) for p in _command_paths()
               if not any(_mentioned(p, text) for text in texts)]
    assert not missing, (f"commands missing from docs/user-guide.md and docs/cli.md: {missing}; "
                         f"regenerate the reference with: {REGENERATE}")


def test_user_guide_shows_the_main_commands() -> None:
    text = (DOCS / "user-guide.md").read_text(encoding="utf-8")
    wanted = [("init",), ("commit",), ("checkout",), ("fsck",), ("prune",), ("refs",),
              ("remote", "add"), ("pull",), ("gpg-sign",), ("sign",), ("summary",),
              ("static-delta", "generate"), ("admin", "init-fs"), ("admin", "os-init"),
              ("admin", "deploy"), ("admin", "status"), ("admin", "undeploy"),
              ("admin", "set-default"), ("admin", "pin"), ("admin", "cleanup"),
              ("admin", "switch"), ("admin", "upgrade"), ("admin", "rollback"),
              ("admin", "kargs"), ("update",)]
    missing = [" ".join(w) for w in wanted if not _mentioned(w, text)]
    assert not missing, f"docs/user-guide.md has no example of: {missing}"


# ------------------------------------------------------------------------------ examples


def _command_lines(text: str) -> Iterator[list[str]]:
    """Every ``pyostree ...`` command in sh/console blocks, as argv lists."""
    for block in _code_blocks(text, ("sh", "console", "bash")):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            if "pyostree" not in line:
                continue
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as exc:
                raise AssertionError(f"cannot split shell line {line!r}: {exc}") from None
            segment: list[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", "||", "|", ";"):
                    if segment and segment[0] == "pyostree":
                        yield segment
                    segment = []
                else:
                    segment.append(token)


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _parse_error(argv: list[str]) -> str | None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            _parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return err.getvalue().strip() or f"exit {exc.code}"
    return None


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.name)
def test_command_examples_parse(path: Path) -> None:
    failures = []
    for argv in _command_lines(path.read_text(encoding="utf-8")):
        error = _parse_error(argv[1:])
        if error is not None:
            failures.append(f"{shlex.join(argv)}: {error}")
    assert not failures, f"{path.name}: examples the parser rejects:\n" + "\n".join(failures)


def test_example_extraction_catches_bad_options() -> None:
    text = "```sh\npyostree --repo=r pull --no-such-option origin ref  # comment\n```\n"
    (argv,) = list(_command_lines(text))
    assert argv == ["pyostree", "--repo=r", "pull", "--no-such-option", "origin", "ref"]
    assert _parse_error(argv[1:]) is not None
    chained = "```sh\npyostree update --install-units && systemctl daemon-reload\n```\n"
    assert list(_command_lines(chained)) == [["pyostree", "update", "--install-units"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="the API examples deploy into a bare repository")
@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg to make a signing key")
def test_api_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "Build Key <build@example.com>", "ed25519", "sign", "never"],
                   env=env, check=True, capture_output=True)
    work = tmp_path / "work"
    (work / "signing-keys").mkdir(parents=True)
    exported = subprocess.run(["gpg", "--export-secret-keys", "--armor", "build@example.com"],
                              env=env, check=True, capture_output=True).stdout
    (work / "signing-keys" / "build.asc").write_bytes(exported)
    monkeypatch.chdir(work)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    # Deployments stay mutable, so pytest can remove the temporary directory afterwards.
    monkeypatch.setenv("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
    blocks = list(_code_blocks((DOCS / "api.md").read_text(encoding="utf-8"), ("python",)))
    assert len(blocks) >= 6
    namespace: dict[str, object] = {"__name__": "api_md"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md python block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "not found: refspec 'no/such/ref' not found" in out
    assert (work / "sysroot/boot/loader").is_symlink()


# ------------------------------------------------------------------------------ links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def _links(text: str) -> Iterator[str]:
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    for match in re.finditer(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        yield match.group(1)
    for match in re.finditer(r"^\[[^\]]+\]:\s+(\S+)", text, re.M):
        yield match.group(1)


def test_slug_rules() -> None:
    assert _slug("Hardening compared with libostree 2022.7") == (
        "hardening-compared-with-libostree-20227")
    assert _slug("The updater: `pyostree update`") == "the-updater-pyostree-update"


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.name)
def test_relative_links_exist(path: Path) -> None:
    broken = []
    for target in _links(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{path.name} has broken links: {broken}"
