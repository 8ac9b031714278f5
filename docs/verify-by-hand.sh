#!/usr/bin/env bash
# Check a Custody device store with openssl, sha256sum, base64 and sed only —
# no Custody code. docs/format.md explains every step; its section 10 lists
# exactly what this checks (signatures by one key, seq, prev, media SHA-256)
# and what it leaves to `custody verify`. Decrypting: docs/decrypt-by-hand.py.
#
#   docs/verify-by-hand.sh STORE DEVICE_PUBLIC_KEY_HEX
#
# DEVICE_PUBLIC_KEY_HEX is the device's Ed25519 public key as listed in the
# unit's trust.json ("keys" → the device's key id → "public").
# Prints one line per entry and exits non-zero at the first failure.
# (It checks one device key: a ledger with a key_rotated entry needs the new
# key from there on; see docs/format.md.)
set -euo pipefail
store=$1 pub_hex=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

hex_to_bin() { printf '%b' "$(sed 's/../\\x&/g' <<<"$1")"; }

# An Ed25519 public key as PEM: the fixed 12-byte SubjectPublicKeyInfo prefix, then the key.
{ hex_to_bin 302a300506032b6570032100; hex_to_bin "$pub_hex"; } >"$work/pub.der"
openssl pkey -pubin -inform DER -in "$work/pub.der" -out "$work/pub.pem"
keyid=$(hex_to_bin "$pub_hex" | sha256sum | cut -d' ' -f1)

prev=0000000000000000000000000000000000000000000000000000000000000000
expect_seq=0
type=application/vnd.custody.entry+json
while IFS= read -r line; do
  payload_b64=$(sed -n 's/.*"payload":"\([^"]*\)".*/\1/p' <<<"$line")
  sig_keyid=$(sed -n 's/.*"keyid":"\([0-9a-f]*\)".*/\1/p' <<<"$line")
  sig_b64=$(sed -n 's/.*"sig":"\([^"]*\)".*/\1/p' <<<"$line")
  base64 -d <<<"$payload_b64" >"$work/payload"
  base64 -d <<<"$sig_b64" >"$work/sig"
  # DSSE pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(payload)> <payload>"
  { printf 'DSSEv1 %d %s %d ' "${#type}" "$type" "$(wc -c <"$work/payload")"
    cat "$work/payload"; } >"$work/pae"
  [ "$sig_keyid" = "$keyid" ] || { echo "FAIL: signed by key $sig_keyid, not the device key"; exit 1; }
  openssl pkeyutl -verify -pubin -inkey "$work/pub.pem" -rawin -in "$work/pae" \
    -sigfile "$work/sig" >/dev/null || { echo "FAIL: bad signature at entry $expect_seq"; exit 1; }
  seq=$(sed -n 's/.*"seq":\([0-9]*\).*/\1/p' "$work/payload")
  link=$(sed -n 's/.*"prev":"\([0-9a-f]*\)".*/\1/p' "$work/payload")
  kind=$(sed -n 's/.*"kind":"\([a-z_]*\)".*/\1/p' "$work/payload")
  [ "$seq" = "$expect_seq" ] || { echo "FAIL: entry $seq where $expect_seq should be"; exit 1; }
  [ "$link" = "$prev" ] || { echo "FAIL: entry $seq does not link to entry $((seq - 1))"; exit 1; }
  echo "entry $seq $kind: signature ok, chain ok"
  # Media sealed by this entry: the stored file's SHA-256 must match.
  file=$(sed -n 's/.*"file":"\([^"]*\)".*/\1/p' "$work/payload")
  if [ -n "$file" ]; then
    want=$(sed -n 's/.*"sha256":"\([0-9a-f]\{64\}\)".*/\1/p' "$work/payload")
    have=$(sha256sum <"$store/media/$file" | cut -d' ' -f1) \
      || { echo "FAIL: $file is missing"; exit 1; }
    [ "$have" = "$want" ] || { echo "FAIL: $file does not match entry $seq"; exit 1; }
    echo "  media $file: sha256 ok"
  fi
  prev=$(sha256sum <"$work/payload" | cut -d' ' -f1)
  expect_seq=$((seq + 1))
done <"$store/ledger.jsonl"
echo "OK: $expect_seq entries, head $prev"
