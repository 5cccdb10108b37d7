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
packed=()
while read -r name version; do
  packages+=(-p "$name")
  packed+=("$name-$version")
  rm -rf "$registry_src"/*/"$name-$version"
done < <(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["publish"] is None:  # publish = false is [], a registry list is not ours
        print(package["name"], package["version"])
')
[[ ${#packages[@]} -gt 0 ]] || { echo "package-check: no publishable crate found" >&2; exit 1; }

# Cargo takes a registry crate for immutable: a packed crate of ours compiled by an earlier run
# (same name and version, other sources) would be reused, and the crates that depend on it
# checked against stale code. Its build outputs are found by their dep-info files, which name
# the unpacked sources, and forgotten. The workspace's own builds of the same crates are kept.
deps_dir="${CARGO_TARGET_DIR:-$REPO/target}/debug/deps"
if [[ -d "$deps_dir" ]]; then
  python3 - "$deps_dir" "${packed[@]}" <<'PY'
import glob, os, re, shutil, sys
deps, packed = sys.argv[1], sys.argv[2:]
stale = set()
for depinfo in glob.glob(os.path.join(deps, "*.d")):
    with open(depinfo, errors="replace") as f:
        text = f.read()
    if any(re.search(r"registry/src/[^/]+/" + re.escape(p) + "/", text) for p in packed):
        stale.add(os.path.basename(depinfo)[:-2].rsplit("-", 1)[1])
for suffix in stale:
    for path in glob.glob(os.path.join(deps, "*-" + suffix + "*")) + glob.glob(
        os.path.join(deps, "..", ".fingerprint", "*-" + suffix)
    ):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
print(f"package-check: forgot {len(stale)} earlier build(s) of packed crates")
PY
fi
echo "package-check: ${packages[*]}"
cargo package --allow-dirty "${packages[@]}" "$@"
