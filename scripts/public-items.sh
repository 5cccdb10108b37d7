#!/usr/bin/env bash
# Counts a crate's public API from its rustdoc output (stable rustdoc, this crate only):
#   items    every public item reachable from the crate root, once, at the path rustdoc
#            documents it under (all.html), by kind; modules counted apart;
#   re-exports  extra paths to an item already documented elsewhere (`pub use` entries rustdoc
#            lists instead of inlining), i.e. the same item reachable twice;
#   methods  inherent methods and associated consts of the crate's public types (trait
#            implementations not counted).
# One number to compare before and after an API change: `items + re-exports`.
#
#   scripts/public-items.sh kinesis-kcl            # summary
#   scripts/public-items.sh kinesis-kcl --list     # and every path
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
crate="${1:?usage: scripts/public-items.sh CRATE [--list]}"
list="${2:-}"
cargo doc --quiet -p "$crate" --no-deps
# rustdoc names the folder after the library, which may differ from the package (kinesis-kcl's
# library is kcl).
lib="$(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["name"] == sys.argv[1]:
        print(next(t["name"] for t in package["targets"] if "lib" in t["kind"]))
' "$crate")"
doc="${CARGO_TARGET_DIR:-$REPO/target}/doc/$lib"
python3 - "$doc" "$list" <<'EOF'
import collections, os, re, sys

doc, listing = sys.argv[1], sys.argv[2] == "--list"
items = [h for h in re.findall(r'<li><a href="([^"#][^"]*)"', open(os.path.join(doc, "all.html")).read())]

# Walk the module tree from the root page so pages left over from older builds (modules made
# private since) are not counted.
modules, reexports, todo = [], [], [""]
while todo:
    module = todo.pop()
    page = open(os.path.join(doc, module, "index.html")).read()
    if module:
        modules.append(module.rstrip("/"))
    for name in re.findall(r'<dt id="reexport\.([^"]+)"', page):
        reexports.append(module + name)
    for href in re.findall(r'<a class="mod" href="([^"]+)/index.html"', page):
        todo.append(module + href + "/")

methods = []
for item in items:
    page = open(os.path.join(doc, item)).read()
    inherent = re.split(r'id="(?:trait-implementations|synthetic-implementations|blanket-implementations)"', page)[0]
    for kind, name in re.findall(r'id="(method|associatedconstant)\.([^"]+)"', inherent):
        methods.append(f"{item}::{name}")

kinds = collections.Counter(os.path.basename(i).split(".")[0] for i in items)
print(f"items: {len(items)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")
print(f"modules: {len(modules)}")
print(f"re-exports (second paths): {len(reexports)}")
print(f"items + re-exports: {len(items) + len(reexports)}")
print(f"methods and associated consts of public types: {len(methods)}")
if listing:
    for i in items:
        print("item", i)
    for m in modules:
        print("module", m)
    for r in reexports:
        print("reexport", r)
    for m in methods:
        print("method", m)
EOF
