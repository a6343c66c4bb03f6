"""``pull --subpath``: only the named directories (or a file) are fetched; the commit stays
partial until a full pull completes it."""

from __future__ import annotations

from pathlib import Path

from pyostree.commit import commit_tree
from pyostree.core import ObjectType
from pyostree.maintenance import fsck, walk_commit
from pyostree.pull import PullOptions, pull
from pyostree.remotes import Remote
from pyostree.repo import Repo, RepoMode
from pyostree.signing import regenerate_summary

from .httpserver import FaultServer


def _tree(root: Path) -> None:
    for d, names in {"usr/etc": ["a.conf", "b.conf"], "usr/bin": ["tool"],
                     "usr/share/doc": [f"d{i}" for i in range(10)]}.items():
        (root / d).mkdir(parents=True)
        for n in names:
            (root / d / n).write_text(f"{d}/{n}\n")


def test_subpath_then_full(tmp_path: Path) -> None:
    server_repo = Repo.create(tmp_path / "srv/repo", RepoMode.ARCHIVE)
    _tree(tmp_path / "tree")
    csum = commit_tree(server_repo, tmp_path / "tree", branch="os/main", subject="v1")
    regenerate_summary(server_repo)
    client = Repo.create(tmp_path / "client", RepoMode.BARE_USER)
    with FaultServer(tmp_path / "srv") as srv:
        remote = Remote(name="origin", url=srv.url_for("/repo"), gpg_verify=False)
        pull(client, remote, ["os/main"], PullOptions(subpaths=("/usr/etc", "/usr/bin/tool")))
        fetched = {p for p in (r.path for r in srv.requests) if p.endswith(".filez")}
        assert len(fetched) == 3  # a.conf, b.conf, tool; nothing from usr/share/doc
        assert client.is_partial(csum)
        assert client.read_ref("origin:os/main") == csum
        missing = [o for o in walk_commit(client, csum, missing_ok=True)
                   if not client.has_object(*o)]
        # usr/share was never fetched, so neither was anything below it.
        assert [t for t, _ in missing] == [ObjectType.DIRTREE]
        pull(client, remote, ["os/main"])
    assert not client.is_partial(csum)
    assert all(client.has_object(t, c) for t, c in walk_commit(client, csum))
    assert client.has_object(ObjectType.COMMIT, csum)
    assert fsck(client).errors == []
