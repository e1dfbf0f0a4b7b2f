#!/usr/bin/env bash
# Prints the project's packages and the project packages each imports (tests
# left out), one layer a block, from those that import most down to those
# that import nothing of the project: every arrow points to a lower layer.
# docs/architecture.md holds its output between the "imports" markers;
# scripts/imports.sh -check fails when they differ, -write rewrites them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mod=$(go list -m)
declare -A deps layer
pkgs=()
while read -r p imps; do
  p=${p#"$mod"/}; [ "$p" = "$mod" ] && p=.
  [ "$p" = wire/fb ] && continue # generated code, imported only by wire's users
  pkgs+=("$p")
  d=""
  for i in $imps; do
    case $i in "$mod"/wire/fb) ;; "$mod"/*) d+="${i#"$mod"/} " ;; esac
  done
  deps[$p]=${d% }
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./...)
# A package's layer is one above the highest layer it imports.
changed=1
for p in "${pkgs[@]}"; do layer[$p]=0; done
while [ $changed = 1 ]; do
  changed=0
  for p in "${pkgs[@]}"; do
    for d in ${deps[$p]}; do
      if [ $(( ${layer[$d]} + 1 )) -gt "${layer[$p]}" ]; then layer[$p]=$(( ${layer[$d]} + 1 )); changed=1; fi
    done
  done
done
render() {
  echo '```'
  top=0
  for p in "${pkgs[@]}"; do [ "${layer[$p]}" -gt $top ] && top=${layer[$p]}; done
  for (( l = top; l >= 0; l-- )); do
    for p in $(for p in "${pkgs[@]}"; do [ "${layer[$p]}" = $l ] && echo "$p"; done | sort); do
      if [ -n "${deps[$p]}" ]; then printf '%-20s ─► %s\n' "$p" "${deps[$p]}"; else printf '%s\n' "$p"; fi
    done
    [ $l -gt 0 ] && echo
  done
  echo '```'
}
doc=docs/architecture.md
case "${1:-}" in
  -check|-write)
    tmp=$(mktemp)
    awk -v block="$(render)" '
      /<!-- imports -->/ { print; print block; skip = 1; next }
      /<!-- \/imports -->/ { skip = 0 }
      !skip { print }' "$doc" > "$tmp"
    if [ "$1" = -write ]; then mv "$tmp" "$doc"; exit 0; fi
    if ! cmp -s "$tmp" "$doc"; then
      diff "$doc" "$tmp" || true; rm -f "$tmp"
      echo "docs/architecture.md's import layers differ from the code: run scripts/imports.sh -write"; exit 1
    fi
    rm -f "$tmp" ;;
  *) render ;;
esac
