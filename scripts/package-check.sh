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

packages=()
while IFS= read -r name; do
  packages+=(-p "$name")
done < <(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["publish"] is None:  # publish = false is [], a registry list is not ours
        print(package["name"])
')
[[ ${#packages[@]} -gt 0 ]] || { echo "package-check: no publishable crate found" >&2; exit 1; }
echo "package-check: ${packages[*]}"
cargo package --allow-dirty "${packages[@]}" "$@"
