#!/bin/sh
# Regenerate the OpenPGP fixtures of tests/test_gpg.py with the real GnuPG (2.2) and ostree.
#
#   tests/data/gpg/make-keys.sh        (writes next to itself; needs gpg, gpgconf, ostree)
#
# Every gpg call runs in a throw-away GNUPGHOME with a frozen --faked-system-time, so the
# timestamps in the fixtures are fixed (the key material is random):
#   2020-01-01  keys are created (the "expired" key expires 30 days later, on 2020-01-31)
#   2020-01-10  data.bin is signed by every key
#   2020-01-20  the "revoked" key and the signing subkey of "subrev" are revoked
#
# Files written:
#   data.bin                    the signed bytes
#   sig-<name>.gpg              binary detached signature of data.bin (gpg --detach-sign)
#   sig-good-expiring.gpg       by "good", with a signature expiration time of 2 days
#   <name>.asc                  armored public key (gpg --armor --export)
#   trusted-ostree.gpg          the binary keyring `ostree remote add --gpg-import` wrote for
#                               good+rsa+expired+revoked+subrev (it contains trust packets)
#   good.sec.asc, rsa.sec.gpg   unprotected secret keys (armored / binary export)
#   protected.sec.asc           secret key protected with the passphrase "hunter2"
#   revoked-before-revocation.asc  the "revoked" key as exported before it was revoked
# Keys: good (ed25519 primary signs), rsa (rsa2048 cert-only primary + rsa2048 signing subkey),
# expired (ed25519, expired), revoked (ed25519, revoked with its revocation certificate),
# subrev (ed25519 cert-only primary, signing subkey revoked), unknown (not in the keyring),
# protected (ed25519, passphrase-protected).
set -eu

OUT=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
export GNUPGHOME="$WORK/home"
mkdir -m 700 "$GNUPGHOME"
cleanup() {
    gpgconf --kill gpg-agent 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

T_CREATE='20200101T000000!'
T_SIGN='20200110T000000!'
T_REVOKE='20200120T000000!'
PASS=''

# g TIME GPG-ARGS...: gpg in batch mode at a fixed time, passphrase $PASS via loopback.
g() {
    t=$1
    shift
    gpg --batch --no-tty --quiet --pinentry-mode loopback --passphrase "$PASS" \
        --faked-system-time "$t" "$@" 2>>"$WORK/gpg.log"
}
fpr() {
    gpg --batch --with-colons --list-keys "$1" 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}'
}

cd "$OUT"
rm -f ./*.asc ./*.gpg ./*.bin
printf 'pyostree gpg fixture: signed bytes \000\001\002\377\n' > data.bin

g "$T_CREATE" --quick-gen-key 'Good Signer <good@example.org>' ed25519 sign never
g "$T_CREATE" --quick-gen-key 'RSA Signer <rsa@example.org>' rsa2048 cert never
g "$T_CREATE" --quick-add-key "$(fpr rsa@example.org)" rsa2048 sign never
g "$T_CREATE" --quick-gen-key 'Expired Signer <expired@example.org>' ed25519 sign 30d
g "$T_CREATE" --quick-gen-key 'Revoked Signer <revoked@example.org>' ed25519 sign never
g "$T_CREATE" --quick-gen-key 'Subkey Revoked <subrev@example.org>' ed25519 cert never
g "$T_CREATE" --quick-add-key "$(fpr subrev@example.org)" ed25519 sign never
g "$T_CREATE" --quick-gen-key 'Unknown Signer <unknown@example.org>' ed25519 sign never
PASS=hunter2 g "$T_CREATE" --quick-gen-key 'Protected Signer <protected@example.org>' \
    ed25519 sign never

for name in good rsa expired revoked subrev unknown; do
    # gpg picks the signing subkey itself when the primary key cannot sign (rsa, subrev).
    g "$T_SIGN" --local-user "$(fpr $name@example.org)" --detach-sign \
        --output "sig-$name.gpg" data.bin
done

# A good signature that itself expires two days after it was made (2020-01-12).
g "$T_SIGN" --local-user "$(fpr good@example.org)" --default-sig-expire 2d --detach-sign \
    --output sig-good-expiring.gpg data.bin

# A copy of the "revoked" key from before its revocation (to test keyring merging).
g "$T_SIGN" --armor --export "$(fpr revoked@example.org)" > revoked-before-revocation.asc

# Revoke the whole "revoked" key with the certificate gpg made at key generation
# (its armor lines are escaped with a leading ':' to prevent accidental import).
REV=$(fpr revoked@example.org)
sed 's/^:-----/-----/' "$GNUPGHOME/openpgp-revocs.d/$REV.rev" > "$WORK/revoked.rev"
g "$T_REVOKE" --import "$WORK/revoked.rev"

# Revoke the signing subkey of "subrev" (reason 0: no reason, empty description).
printf 'key 1\nrevkey\ny\n0\n\ny\nsave\n' | \
    g "$T_REVOKE" --command-fd 0 --edit-key "$(fpr subrev@example.org)"

for name in good rsa expired revoked subrev unknown protected; do
    g "$T_REVOKE" --armor --export "$(fpr $name@example.org)" > "$name.asc"
done
g "$T_REVOKE" --armor --export-secret-keys "$(fpr good@example.org)" > good.sec.asc
g "$T_REVOKE" --export-secret-keys "$(fpr rsa@example.org)" > rsa.sec.gpg
PASS=hunter2 g "$T_REVOKE" --armor --export-secret-keys "$(fpr protected@example.org)" \
    > protected.sec.asc

# The keyring file libostree itself writes for a remote (binary, with trust packets).
cat good.asc rsa.asc expired.asc revoked.asc subrev.asc > "$WORK/trusted.asc"
ostree --repo="$WORK/repo" init --mode=archive
ostree --repo="$WORK/repo" remote add --gpg-import="$WORK/trusted.asc" r http://127.0.0.1/ \
    > /dev/null
cp "$WORK/repo/r.trustedkeys.gpg" trusted-ostree.gpg

# Sanity: gpgv itself must agree with what the tests expect.
gpgv --homedir "$GNUPGHOME" --keyring "$OUT/trusted-ostree.gpg" sig-good.gpg data.bin \
    2>/dev/null
gpgv --homedir "$GNUPGHOME" --keyring "$OUT/trusted-ostree.gpg" sig-rsa.gpg data.bin \
    2>/dev/null
echo "fixtures written to $OUT"
