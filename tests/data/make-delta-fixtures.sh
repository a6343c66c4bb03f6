#!/bin/sh
# Build an archive repository with two commits and a set of static deltas between them, using
# the real ostree (2022.7).  Used by tests/test_delta_formats.py (interop tests) as an oracle.
#
#   make-delta-fixtures.sh OUTDIR
#
# OUTDIR/repo            archive repo; refs: v1 (commit A), v2 (commit B)
# OUTDIR/commits         "A B" commit checksums, one line
# OUTDIR/deltas/NAME/    one directory per variant, holding superblock and parts 0,1,...
#                        (NAME.log next to it keeps ostree's chatter)
#   empty-a   from empty to A               empty-b   from empty to B
#   ab        A -> B, defaults (rollsum + bsdiff)
#   ab-inline A -> B, --inline              ab-nobsdiff   --disable-bsdiff
#   ab-swap   A -> B, --swap-endianness     ab-chunk0     --max-chunk-size=0 (one object per part)
#   ab-fallback  --min-fallback-size=1 (the 1.1 MB new file becomes a fallback)
#   ab-signed    dummy-signed superblock (OSTSGNDT wrapper)
# Everything is deterministic except the superblock generation timestamps.
#
# Note: ostree 2022.7 computes each rollsum chunk's crc32 over the *start of the file* (a bug
# fixed upstream), so a file only gets rollsum ops when its first change lies beyond 32 KiB;
# the changes below are placed accordingly.
set -eu
out=$1
rm -rf "$out"
mkdir -p "$out/deltas"
repo=$out/repo
ostree --repo="$repo" init --mode=archive
ostree --repo="$repo" config set core.fsync false

python3 - "$out/tree-a" "$out/tree-b" <<'PY'
import os, random, sys

a, b = sys.argv[1], sys.argv[2]
rng = random.Random(20240611)

def rand(n: int) -> bytes:
    return rng.randbytes(n)

def write(root: str, rel: str, data: bytes, mode: int = 0o644, xattrs: dict | None = None) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    for k, v in (xattrs or {}).items():
        os.setxattr(path, k, v)

big1 = rand(200 * 1024)              # few bytes changed -> rollsum
big2 = rand(256 * 1024)              # a byte changed every 3 KiB -> bsdiff
lines = [f"line {i}: {rng.getrandbits(64):016x} lorem ipsum dolor sit amet\n" for i in range(3000)]
text_a = "".join(lines).encode()
lines_b = list(lines)
for pos in (2900, 1500, 800):
    lines_b[pos:pos] = [f"inserted at {pos}\n"] * 3
text_b = "".join(lines_b).encode()

for root in (a, b):
    os.makedirs(os.path.join(root, "usr/share/empty-dir"), exist_ok=True)
    write(root, "usr/lib/same.so", b"unchanged library\n" * 50, 0o755)
    write(root, "etc/empty", b"")

write(a, "usr/bin/big1.bin", big1, 0o755)
write(a, "usr/lib/big2.dat", big2)
write(a, "usr/share/doc/text.txt", text_a)
write(a, "etc/conf", b"key=1\n", 0o600, {"user.pyostree": b"conf-a"})
write(a, "usr/share/removed", b"this file goes away in B\n")
os.symlink("bin/big1.bin", os.path.join(a, "usr/link"))

mod1 = bytearray(big1)
for off in (50_000, 100_000, 150_001):
    mod1[off] ^= 0xFF
mod2 = bytearray(big2)
for off in range(100, len(mod2), 3072):
    mod2[off] = (mod2[off] + 1) & 0xFF
write(b, "usr/bin/big1.bin", bytes(mod1), 0o755)
write(b, "usr/lib/big2.dat", bytes(mod2))
write(b, "usr/share/doc/text.txt", text_b)
write(b, "etc/conf", b"key=2\n", 0o600, {"user.pyostree": b"conf-b", "user.abc": b"\x00\x01"})
write(b, "usr/share/new.txt", b"a brand new file\n")
write(b, "usr/share/another-empty", b"")
write(b, "opt/large-new.bin", (rand(4096) * 269)[:1_100_000])  # compressible: fast xz
write(b, "usr/bin/setuid-tool", b"#!/bin/sh\necho hi\n", 0o4755)
os.symlink("big1.bin", os.path.join(b, "usr/bin/alias"))
os.symlink("bin/big1.bin", os.path.join(b, "usr/link"))
os.symlink("/nonexistent/absolute/target", os.path.join(b, "usr/dangling"))
os.setxattr(os.path.join(b, "usr/share"), "user.dirattr", b"yes")
PY

ostree --repo="$repo" commit -b v1 --tree=dir="$out/tree-a" --owner-uid=0 --owner-gid=0 \
    --timestamp=2024-01-01T00:00:00Z -s "commit A" >/dev/null
ostree --repo="$repo" commit -b v2 --tree=dir="$out/tree-b" --owner-uid=0 --owner-gid=0 \
    --timestamp=2024-02-01T00:00:00Z -s "commit B" \
    --add-detached-metadata-string=pyostree.note=hello >/dev/null
A=$(ostree --repo="$repo" rev-parse v1)
B=$(ostree --repo="$repo" rev-parse v2)
echo "$A $B" >"$out/commits"

gen() {
    name=$1; shift
    mkdir -p "$out/deltas/$name"
    ostree --repo="$repo" static-delta generate --filename="$out/deltas/$name/superblock" "$@" \
        >"$out/deltas/$name.log" 2>&1 || { cat "$out/deltas/$name.log" >&2; exit 1; }
}
gen empty-a --empty --to="$A"
gen empty-b --empty --to="$B"
gen ab --from="$A" --to="$B"
gen ab-inline --from="$A" --to="$B" --inline
gen ab-nobsdiff --from="$A" --to="$B" --disable-bsdiff
gen ab-swap --from="$A" --to="$B" --swap-endianness
gen ab-chunk0 --from="$A" --to="$B" --max-chunk-size=0
gen ab-fallback --from="$A" --to="$B" --min-fallback-size=1
OSTREE_DUMMY_SIGN_ENABLED=1 gen ab-signed --from="$A" --to="$B" --sign=0123456789abcdef \
    --sign-type=dummy
