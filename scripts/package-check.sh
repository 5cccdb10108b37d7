#!/usr/bin/env bash
# Every publishable crate of the workspace passes `cargo package`: its files are packed and the
# packed crate builds on its own, its workspace path dependencies replaced by the other packed
# crates (cargo >= 1.90 packs them together). Crates with `publish = false` (tests, examples)
# are left out. Run by scripts/test.sh; needs the crates.io index (cargo resolves each packed
# crate's dependencies as a user's build would).
#
# Honours CARGO_TARGET_DIR: the verification builds reuse its compiled dependencies.
# `--allow-dirty`: a check of what would be published, not a release (that is `cargo publish`
# from a clean checkout).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# A packed crate is built as a workspace of its own, without this workspace's [profile.dev]:
# the same debug setting keeps its dependencies' artifacts the ones the workspace built.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

# Verification unpacks each packed crate from a temporary local registry into
# $CARGO_HOME/registry/src/, and cargo 1.95 reuses a copy unpacked by an earlier run: the crates
# that depend on it would be checked against stale sources. Those copies are only an unpack
# cache (cargo unpacks again from the .crate), so ours go first.
registry_src="${CARGO_HOME:-$HOME/.cargo}/registry/src"
packages=()
while read -r name version; do
  packages+=(-p "$name")
  rm -rf "$registry_src"/*/"$name-$version"
done < <(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["publish"] is None:  # publish = false is [], a registry list is not ours
        print(package["name"], package["version"])
')
[[ ${#packages[@]} -gt 0 ]] || { echo "package-check: no publishable crate found" >&2; exit 1; }
echo "package-check: ${packages[*]}"
cargo package --allow-dirty "${packages[@]}" "$@"
