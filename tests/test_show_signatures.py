"""``show`` of a GPG-signed commit prints its signatures exactly as the real ``ostree show``
does: ``Found N signatures:`` and, for each, when and by which key it was made and the verdict
(key not found, good, expired key, revoked key, bad), with the keys of ``--gpg-homedir`` or of
``--gpg-verify-remote``, in the local time zone."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .pullhelpers import (
    GpgHome,
    GpgKey,
    commit,
    init_repo,
    needs_gpg,
    needs_ostree,
    ostree,
    pyostree,
    write_tree,
)

pytestmark = [needs_ostree, needs_gpg, pytest.mark.interop]


@dataclass
class Signed:
    repo: Path
    signed: str  # by good, expiring, expired and revoked
    unsigned: str
    keydir: Path  # every public key, one keyring file each
    keys: dict[str, GpgKey]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signed]:
    base = tmp_path_factory.mktemp("showsigs")
    gpg = GpgHome.create(base / "gnupg")
    try:
        keys = {
            "good": gpg.gen("good"),
            "expiring": gpg.gen("expiring", expire="2y"),
            "expired": gpg.gen("expired", created="20200101T000000!", expire="30d"),
            "revoked": gpg.gen("revoked"),
        }
        repo = init_repo(base / "repo")
        tree = base / "tree"
        write_tree(tree, 1, nfiles=2, big=0)
        unsigned = commit(repo, tree, "main", subject="unsigned")
        signed = commit(repo, tree, "main", subject="signed")
        for name in ("good", "expiring", "revoked"):
            gpg.sign_commit(repo, signed, keys[name])
        with gpg.faked_time("20200105T000000"):
            gpg.sign_commit(repo, signed, keys["expired"])
        gpg.revoke(keys["revoked"])
        keydir = base / "keys"
        keydir.mkdir()
        for key in keys.values():
            shutil.copy(key.public, keydir / key.public.name)
        (keydir / "trustdb.gpg").write_bytes(b"not a keyring")  # skipped, as by ostree
        yield Signed(repo, signed, unsigned, keydir, keys)
    finally:
        gpg.close()


def both(repo: Path, *args: str, tz: str = "UTC") -> tuple[str, str]:
    env = {**os.environ, "TZ": tz, "LC_ALL": "C.UTF-8"}
    want = ostree(f"--repo={repo}", "show", *args, env=env)
    got = pyostree(f"--repo={repo}", "show", *args, env=env)
    assert got.returncode == 0, got.stderr
    return want.stdout, got.stdout


def test_unsigned_commit_prints_no_signatures(signed: Signed) -> None:
    want, got = both(signed.repo, signed.unsigned)
    assert got == want and "signature" not in got


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_without_the_keys(signed: Signed, tz: str) -> None:
    want, got = both(signed.repo, signed.signed, tz=tz)
    assert got == want
    assert "Found 4 signatures:" in got
    assert got.count("Can't check signature: public key not found") == 4


def test_with_the_keys_of_a_directory(signed: Signed) -> None:
    want, got = both(signed.repo, f"--gpg-homedir={signed.keydir}", signed.signed)
    assert got == want
    assert 'Good signature from "Good Signer <good@example.org>"' in got
    assert "Key expires" in got  # the expiring key
    assert "Key revoked" in got
    assert "Key expired" in got or "BAD signature" in got


def test_with_the_keys_of_a_remote(signed: Signed, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(signed.repo, repo, symlinks=True)
    ostree(f"--repo={repo}", "remote", "add", f"--gpg-import={signed.keys['good'].public}",
           "origin", "http://127.0.0.1:9/")
    want, got = both(repo, "--gpg-verify-remote=origin", signed.signed)
    assert got == want
    assert got.count("Good signature from") == 1


def test_bad_keyring_directory_and_unknown_remote(signed: Signed, tmp_path: Path) -> None:
    for arg, message in ((f"--gpg-homedir={tmp_path / 'none'}", "No such file or directory"),
                         ("--gpg-verify-remote=nope", 'Remote "nope" not found')):
        want = ostree(f"--repo={signed.repo}", "show", arg, signed.signed, check=False)
        got = pyostree(f"--repo={signed.repo}", "show", arg, signed.signed)
        assert want.returncode != 0 and got.returncode != 0
        errors = [ln for ln in got.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], got.stderr
        assert "Traceback" not in got.stderr
        assert message in want.stderr
