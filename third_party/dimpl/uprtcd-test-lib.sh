#!/usr/bin/env bash
# Runs this copy's unit tests (`cargo test --lib`) without its integration-test
# dev-dependencies (vendored OpenSSL, wolfSSL), which the unit tests do not use:
# the crate is copied to a scratch directory whose Cargo.toml lacks them, with the
# uprtcd workspace's lock file and dev profile, so that built dependencies are reused.
# Usage: third_party/dimpl/uprtcd-test-lib.sh [test name filter]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r "$here/src" "$scratch/"
cp "$root/Cargo.lock" "$scratch/"
python3 - "$here/Cargo.toml" "$scratch/Cargo.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
# Drop the dev-dependencies only the integration tests use (OpenSSL, wolfSSL, …) and the
# integration-test targets, and the rust-crypto provider's crates (not in our lock file; uprtcd uses aws-lc-rs).
def drop_table(header):
    global text
    text = re.sub(r'\n\[' + re.escape(header) + r'\]\n(?:[^\[\n][^\n]*\n?)*', '\n', text)
for dev in ['openssl', 'env_logger', 'bytes', 'libc']:
    drop_table('dev-dependencies.' + dev)
drop_table('target."cfg(not(windows))".dev-dependencies.wolfssl')
text = re.sub(r'\n\[\[test\]\]\n(?:[^\[\n][^\n]*\n?)*', '\n', text)
text = re.sub(r'\nrust-crypto = \[[^\]]*\]\n', '\nrust-crypto = []\n', text)
for dep in ["aes-gcm", "chacha20poly1305", "chacha20", "p256", "p384", "x25519-dalek",
            "sha2", "hmac", "hkdf", "ecdsa"]:
    drop_table('dependencies.' + dep)
text += '''
[workspace]

[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 2
debug = false
'''
open(sys.argv[2], 'w').write(text)
PY
cd "$scratch"
cargo test --lib --offline -- "$@"
