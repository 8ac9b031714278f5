"""The README of an evidence package: how a court's expert checks it.

Two ways: ``custody verify PACKAGE``, and by hand with openssl, sha256sum,
base64, sed and od only. The by-hand steps are bash blocks the expert pastes
in the package folder; tests/archive/test_package.py runs exactly these blocks.
"""

from __future__ import annotations

from protocol.trust import TrustFile

_SETUP = r"""
work=$(mktemp -d)
fail() { echo "FAIL: $*" >&2; false; }
hex_to_bin() { printf '%b' "$(sed 's/../\\x&/g' <<<"$1")"; }
# An Ed25519 public key as PEM: the fixed 12-byte SubjectPublicKeyInfo prefix, then the key.
pem() {
  { hex_to_bin 302a300506032b6570032100; hex_to_bin "$1"; } >"$work/$2.der"
  openssl pkey -pubin -inform DER -in "$work/$2.der" -out "$work/$2.pem"
}
grep -q "\"public\": \"$DEVICE_KEY\"" trust.json || fail "the device key is not in trust.json"
pem "$DEVICE_KEY" device
n=0
for k in $LOG_KEYS; do
  grep -q "\"public\": \"$k\"" trust.json || fail "log key $k is not in trust.json"
  pem "$k" "log$n"; n=$((n + 1))
done
sha256sum trust.json
"""

_ENTRIES = r"""
type=application/vnd.custody.entry+json
while IFS= read -r line; do
  sed -n 's/.*"payload":"\([^"]*\)".*/\1/p' <<<"$line" | base64 -d >"$work/payload"
  sed -n 's/.*"sig":"\([^"]*\)".*/\1/p' <<<"$line" | base64 -d >"$work/sig"
  # DSSE pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(payload)> <payload>"
  { printf 'DSSEv1 %d %s %d ' "${#type}" "$type" "$(wc -c <"$work/payload")"
    cat "$work/payload"; } >"$work/pae"
  seq=$(sed -n 's/.*"seq":\([0-9]*\).*/\1/p' "$work/payload")
  openssl pkeyutl -verify -pubin -inkey "$work/device.pem" -rawin -in "$work/pae" \
    -sigfile "$work/sig" >/dev/null || fail "entry $seq: bad device signature"
  cp "$work/payload" "$work/$seq.payload"
  echo "entry $seq: signed by the device"
done <ledger-extract.jsonl
"""

_MEDIA = r"""
for f in media/*.mp4; do
  seq=$((10#$(basename "$f" | cut -d- -f1)))
  want=$(sed -n 's/.*"plaintext_sha256":"\([0-9a-f]\{64\}\)".*/\1/p' "$work/$seq.payload")
  if [ -z "$want" ]; then
    file=$(sed -n 's/.*"file":"\([^"]*\)".*/\1/p' "$work/$seq.payload")
    want=$(sed -n 's/.*"sha256":"\([0-9a-f]\{64\}\)".*/\1/p' "$work/$seq.payload")
    have=$(sha256sum <"sealed/$file" | cut -d' ' -f1)
    [ "$have" = "$want" ] || fail "sealed/$file is not the file entry $seq sealed"
    echo "$f: recovered segment; sealed/$file matches entry $seq (see below)"
    continue
  fi
  have=$(sha256sum <"$f" | cut -d' ' -f1)
  [ "$have" = "$want" ] || fail "$f is not the plaintext entry $seq signed"
  echo "$f: sha256 matches entry $seq"
done
"""

_PROOFS = r"""
node() { { printf '\x01'; cat "$1" "$2"; } | openssl dgst -sha256 -binary; }
for p in proofs/*.tlog-proof; do
  seq=$(basename "$p" .tlog-proof)
  index=$(sed -n 's/^index //p' "$p")
  sed '1,/^$/d' "$p" >"$work/checkpoint"          # the checkpoint: after the blank line
  sed '/^$/,$d' "$work/checkpoint" >"$work/text"  # its signed text: before its blank line
  size=$(sed -n 2p "$work/text")
  sed -n 3p "$work/text" | base64 -d >"$work/root"
  sed -n '/^index /,/^$/p' "$p" | sed '1d;$d' >"$work/path"
  # RFC 9162 2.1.3.2: from the leaf hash up the path to the root.
  { printf '\x00'; cat "$work/$seq.payload"; } | openssl dgst -sha256 -binary >"$work/r"
  fn=$index sn=$((size - 1))
  while IFS= read -r h; do
    base64 -d <<<"$h" >"$work/p"
    if [ $((fn & 1)) = 1 ] || [ "$fn" = "$sn" ]; then
      node "$work/p" "$work/r" >"$work/n"
      while [ $((fn & 1)) = 0 ] && [ "$fn" != 0 ]; do fn=$((fn >> 1)) sn=$((sn >> 1)); done
    else
      node "$work/r" "$work/p" >"$work/n"
    fi
    mv "$work/n" "$work/r"
    fn=$((fn >> 1)) sn=$((sn >> 1))
  done <"$work/path"
  { [ "$sn" = 0 ] && cmp -s "$work/r" "$work/root"; } || fail "entry $seq: not in the log"
  # The log's signature (C2SP signed-note), by a dock's key or the archive's: 4-byte
  # key id, then Ed25519 over the text.
  origin=$(sed -n 1p "$work/text")
  sed -n "s|^— $origin ||p" "$work/checkpoint" | base64 -d | tail -c 64 >"$work/logsig"
  signed=
  for key in "$work"/log*.pem; do
    openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$work/text" \
      -sigfile "$work/logsig" >/dev/null 2>&1 && signed=1 && break
  done
  [ -n "$signed" ] || fail "entry $seq: checkpoint not signed by a dock or the archive"
  # The device's cosignature (C2SP tlog-cosignature): key id, 8-byte time, Ed25519 over
  # "cosignature/v1", "time <t>" and the text.
  sed -n "s|^— $WITNESS ||p" "$work/checkpoint" | base64 -d >"$work/cosig"
  t=$(od -An -tu8 -j4 -N8 --endian=big "$work/cosig" | tr -d ' ')
  tail -c 64 "$work/cosig" >"$work/cosig.ed25519"
  { printf 'cosignature/v1\ntime %s\n' "$t"; cat "$work/text"; } >"$work/cosigned"
  openssl pkeyutl -verify -pubin -inkey "$work/device.pem" -rawin -in "$work/cosigned" \
    -sigfile "$work/cosig.ed25519" >/dev/null || fail "entry $seq: not cosigned by the device"
  echo "entry $seq: leaf $index of $size in the device's log; log-signed, device-cosigned at $t"
done
echo "ALL CHECKS PASSED"
"""


def package_readme(trust: TrustFile, device: str, recording: int, entries: list[int],
                   media: list[str], recovered: list[str], witness: str,
                   log_keys: list[str]) -> str:
    """``log_keys``: the public keys (hex) that signed the proofs' checkpoints."""
    device_keys = trust.device_keys(device)
    device_key = trust.keys[device_keys[-1]].public
    recovered_text = ""
    if recovered:
        recovered_text = (
            "\n## Recovered segments\n\n"
            f"{', '.join(recovered)} were sealed after a power cut: the device could not know "
            "the plaintext's SHA-256, so it signed the SHA-256 of the sealed (encrypted) file. "
            "The sealed file is in `sealed/`; step 3 checks it against the signed hash. The "
            "plaintext in `media/` is what it decrypts to with the archive's secret key "
            "(custody-seg/1, docs/format.md): the custodian can show this in front of the "
            "court with `custody export` on the sealed file.\n")
    return f"""# Evidence package: recording {recording} of device {device}

Unit `{trust.unit}`. Entries {', '.join(map(str, entries))} of the device's ledger;
media: {', '.join(media) or 'none'}.

Each entry was signed by the device when it was made. Each is also shown to be
in the device's log kept by the archive (`proofs/`, C2SP tlog proofs), under a
checkpoint signed by the dock at docking **and cosigned by the device**: neither could
have changed the device's history afterwards without the other's signature
failing. Entries not exported are not needed to check these.

First compare `sha256sum trust.json` with the trust file's SHA-256 the unit
publishes: every key below comes from that file.

## With Custody

    custody verify .

prints `verdict: INTACT` when every signature, proof and media hash checks.

## By hand (openssl, sha256sum, base64, sed, od)

In this folder, with bash. Step 1: the keys, from `trust.json`: the device's
Ed25519 key (`devices` → `{device}` → its key id → `keys` → `public`) and the
keys that signed the checkpoints: a dock's (`docks` → the dock → its key ids) or
the archive's (`archive` → `keys`):

```bash
DEVICE_KEY={device_key}
LOG_KEYS="{' '.join(log_keys)}"
WITNESS={witness}
```
```bash{_SETUP}```

Step 2: each ledger entry's device signature (DSSE over its payload):

```bash{_ENTRIES}```

Step 3: each media file's SHA-256 against the one the device signed:

```bash{_MEDIA}```

Step 4: each entry's inclusion in the device's log, and the checkpoint's two
signatures:

```bash{_PROOFS}```
{recovered_text}
## What else is here

- `package.json`: who exported this and when, and the custodian's annotations
  (case, party) — records beside the evidence, not signed by the device.
- `audit-extract.jsonl`: the archive's audit records about this recording
  (who saw, annotated or exported it), lines of its hash-chained audit log.
"""
