#!/usr/bin/env bash
# Fails, listing the files, when any tracked C++ file differs from clang-format's output.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.h' '*.cpp' 2>/dev/null || true)
if [ "${#files[@]}" -eq 0 ]; then
  mapfile -t files < <(find . -path ./build\* -prune -o \( -name '*.h' -o -name '*.cpp' \) -print)
fi
bad=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  if ! clang-format --style=file "$f" | cmp -s - "$f"; then bad+=("$f"); fi
done
if [ "${#bad[@]}" -gt 0 ]; then
  echo "not clang-formatted (run: clang-format -i FILE):"; printf '  %s\n' "${bad[@]}"; exit 1
fi
echo "format: ${#files[@]} files clean"
