#!/bin/bash
# Make the core fixtures with the real ostree (2022.7): one repository per mode holding objects of
# every type, a GPG-signed commit (detached .commitmeta) and a tombstone commit.
#
#   make-fixtures.sh [--large] [OUTDIR]        (OUTDIR defaults to tests/data/fixtures)
#
# OUTDIR/<mode>/{config,refs/heads/*,objects/**}   mode = archive bare bare-user bare-user-only
# OUTDIR/manifest.json   commit checksums, whether user.* xattrs were used, and for the bare
#                        modes the attributes git cannot keep (mode, uid, gid, xattrs, symlink
#                        target) of every content object, so tests can rebuild the real object
# OUTDIR/gpg-pubkey.asc  the throwaway public key that signed the "second" commit
#
# The tree has a regular file, an executable, an empty file, symlinks, a setuid file, a file
# owned by 1000:1000 (needs root; else skipped), a non-ASCII name, nested and empty directories,
# and user.* xattrs on a file and on a directory when the work filesystem supports them.
# --large adds a 3 MiB file (not part of the checked-in set; tests generate large files).
#
# Commits (the same in every mode except bare-user-only, which canonicalises the tree):
#   first    no parent, no metadata (--no-bindings), fixed timestamp
#   second   parent = first; metadata: version, ref-binding, typed keys; GPG-signed (archive, bare)
#   doomed   deleted with `prune --delete-commit` in repos with core.tombstone-commits=true
#            (archive, bare) -> a .tombstone-commit object
set -euo pipefail

large=0
if [ "${1:-}" = "--large" ]; then large=1; shift; fi
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/fixtures}

# Work on the local disk: tmpfs may lack user.* xattrs.
work=$(mktemp -d /var/tmp/pyostree-fixtures.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"

python3 - "$work" "$large" <<'PY'
import json, os, random, sys

work, large = sys.argv[1], sys.argv[2] == "1"
xattrs_ok = True
try:
    probe = os.path.join(work, "probe")
    open(probe, "w").close()
    os.setxattr(probe, "user.probe", b"1")
    os.mkdir(probe + "d")
    os.setxattr(probe + "d", "user.probe", b"1")
except OSError:
    xattrs_ok = False
root_ok = os.geteuid() == 0

def write(rel, data, mode=0o644, xattrs=None, tree="tree1"):
    path = os.path.join(work, tree, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if xattrs_ok:
        for k, v in (xattrs or {}).items():
            os.setxattr(path, k, v)
    return path

for tree in ("tree1", "tree2"):
    base = os.path.join(work, tree)
    write("hello.txt", b"Hello, OSTree!\n", tree=tree)
    write("bin/run.sh", b"#!/bin/sh\necho run\n", 0o755, tree=tree)
    write("empty", b"", tree=tree)
    os.symlink("hello.txt", os.path.join(base, "link"))
    os.symlink("../does/not/exist", os.path.join(base, "bin", "dangling"))
    os.makedirs(os.path.join(base, "emptydir"))
    write("usr/share/doc/nested/deep.txt", b"deep\n" * 100, tree=tree)
    write("\u00fcn\u00efc\u00f6de.txt", b"utf-8 name\n", tree=tree)
    write("etc/conf", b"key=value\n", 0o640,
          {"user.zeta": b"last", "user.alpha": b"first", "user.bin": bytes(range(256))},
          tree=tree)
    if xattrs_ok:
        os.setxattr(os.path.join(base, "etc"), "user.dirattr", b"dir\x00value")
    write("sbin/suid", b"\x7fELF pretend\n", 0o4755, tree=tree)
    if root_ok:
        p = write("home/user/secret", b"secret\n", 0o600, tree=tree)
        os.chown(p, 1000, 1000)
        os.chown(os.path.dirname(p), 1000, 1000)

base2 = os.path.join(work, "tree2")
write("hello.txt", b"Hello again, OSTree!\n", tree="tree2")
write("var/new/file", b"new in the second commit\n", 0o644, tree="tree2")
if large:
    rng = random.Random(4242)
    with open(os.path.join(base2, "large.bin"), "wb") as f:
        for _ in range(48):
            f.write(rng.randbytes(64 * 1024))
os.makedirs(os.path.join(work, "tree3"))
write("doomed.txt", b"this commit will be deleted\n", tree="tree3")
for tree in ("tree1", "tree2", "tree3"):
    os.chmod(os.path.join(work, tree), 0o755)
json.dump({"xattrs": xattrs_ok, "root": root_ok}, open(os.path.join(work, "env.json"), "w"))
PY

gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key 'pyostree fixtures <fixtures@example.invalid>' ed25519 sign never 2>/dev/null
keyid=$(gpg --batch --with-colons --list-keys | awk -F: '/^fpr:/ {print $10; exit}')

rm -rf "$out"
mkdir -p "$out"
gpg --batch --armor --export "$keyid" > "$out/gpg-pubkey.asc"

ts1=2024-01-01T00:00:00Z
ts2=2024-02-02T12:34:56Z
declare -A first second doomed
mkdir -p "$work/repos"
for mode in archive bare bare-user bare-user-only; do
    repo=$work/repos/$mode
    ostree --repo="$repo" init --mode="$mode"
    first[$mode]=$(ostree --repo="$repo" commit -b main --no-bindings --timestamp="$ts1" \
        -s "first" "$work/tree1")
    second[$mode]=$(ostree --repo="$repo" commit -b main --timestamp="$ts2" \
        -s "second" -m $'A body\nwith two lines' \
        --add-metadata-string=version=2.0 \
        --add-metadata=ostree.endoflife-count=uint32\ 7 \
        --add-metadata=numbers='[1, 2, 3]' \
        --add-metadata=flags='(true, "x", uint64 18446744073709551615)' \
        "$work/tree2")
    case $mode in
    archive|bare)
        ostree --repo="$repo" gpg-sign --gpg-homedir="$GNUPGHOME" "${second[$mode]}" "$keyid"
        ostree --repo="$repo" config set core.tombstone-commits true
        doomed[$mode]=$(ostree --repo="$repo" commit -b doomed --timestamp="$ts1" \
            -s "doomed" "$work/tree3")
        ostree --repo="$repo" refs --delete doomed
        ostree --repo="$repo" prune --delete-commit="${doomed[$mode]}" >/dev/null
        ;;
    esac
    ostree --repo="$repo" fsck -q
    dest=$out/$mode
    mkdir -p "$dest/refs"
    cp "$repo/config" "$dest/config"
    cp -a "$repo/refs/heads" "$dest/refs/heads"
    cp -a "$repo/objects" "$dest/objects"
done

python3 - "$work" "$out" "$keyid" \
    "${first[archive]}" "${second[archive]}" "${doomed[archive]}" \
    "${first[bare-user-only]}" "${second[bare-user-only]}" <<'PY'
import json, os, stat, sys

work, out, keyid, f1, s1, d1, f2, s2 = sys.argv[1:9]
env = json.load(open(os.path.join(work, "env.json")))
manifest = {
    "ostree": os.popen("ostree --version").read().split("Version: '")[1].split("'")[0],
    "xattrs": env["xattrs"],
    "root": env["root"],
    "gpg_key": keyid,
    "commits": {"first": f1, "second": s1, "doomed": d1},
    "commits_bare_user_only": {"first": f2, "second": s2},
    "content": {},
}
# What git cannot keep: mode, owner, xattrs (incl. user.ostreemeta) of bare-mode file objects.
for mode in ("bare", "bare-user", "bare-user-only"):
    objs = os.path.join(work, "repos", mode, "objects")
    entries = {}
    for sub in sorted(os.listdir(objs)):
        for name in sorted(os.listdir(os.path.join(objs, sub))):
            if not name.endswith(".file"):
                continue
            path = os.path.join(objs, sub, name)
            st = os.lstat(path)
            entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            else:
                names = sorted(os.listxattr(path, follow_symlinks=False))
                entry["xattrs"] = {n: os.getxattr(path, n).hex() for n in names}
            entries[f"{sub}/{name}"] = entry
    manifest["content"][mode] = entries
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
PY
du -sh "$out" >&2
