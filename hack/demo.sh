#!/usr/bin/env bash
# The demo, from a fresh Debian machine: installs what it needs, builds mvm and the guest image,
# starts mvmd on a copy of examples/quickstart with the qemu driver (real guests, TCG), waits
# until the pool is Ready and shows the status dump. Then it removes the manifest, so mvmd
# prunes the pool and every VM is gone, and stops mvmd.
#   --keep   leave mvmd and its VMs running at the end (the script prints how to stop them)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1

bash hack/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target mvmd mvmctl
bash hack/build-guest-image.sh --out "$ROOT/build/images" | tail -n 4

DEMO=$(mktemp -d /tmp/mvm-demo.XXXXXX)
mkdir -p "$DEMO/manifests"
cp examples/quickstart/*.yaml "$DEMO/manifests/"
SOCK="$DEMO/api.sock"
MVMCTL=("$ROOT/build/controller/mvmctl" --socket "$SOCK")

echo
echo "\$ mvmctl validate examples/"
"$ROOT/build/controller/mvmctl" validate --image-root "$ROOT/build/images" examples/

echo
echo "starting mvmd (log: $DEMO/mvmd.log)"
"$ROOT/build/controller/mvmd" --manifests "$DEMO/manifests" --runtime qemu \
  --state-dir "$DEMO/state" --image-root "$ROOT/build/images" --socket "$SOCK" \
  --probe-period 5 >"$DEMO/mvmd.log" 2>&1 &
MVMD=$!
stop_mvmd() { kill -TERM "$MVMD" 2>/dev/null && wait "$MVMD" 2>/dev/null || true; }
trap 'stop_mvmd' EXIT

echo "waiting for pool demo/hello to be Ready (TCG boots take 5-20 s each)..."
ready=0
for _ in $(seq 1 300); do
  if ! kill -0 "$MVMD" 2>/dev/null; then
    echo "mvmd exited:"; tail -n 30 "$DEMO/mvmd.log"; exit 1
  fi
  if "${MVMCTL[@]}" get pools -o json 2>/dev/null | python3 -c '
import json, sys
pools = json.load(sys.stdin)
items = pools.get("items", pools) if isinstance(pools, dict) else pools
ok = any(c.get("type") == "Ready" and c.get("status") in (True, "True")
         for p in items for c in p.get("conditions", []))
sys.exit(0 if ok else 1)'; then
    ready=1
    break
  fi
  sleep 1
done

echo
echo "\$ mvmctl get pools,instances"
"${MVMCTL[@]}" get pools,instances -o wide || true
echo
echo "\$ mvmctl describe pool demo/hello"
"${MVMCTL[@]}" describe pool demo/hello || true
first=$("${MVMCTL[@]}" get instances -t demo 2>/dev/null | awk 'NR == 2 {print $1}')
if [ -n "$first" ]; then
  echo
  echo "\$ mvmctl logs demo/$first --tail 5"
  "${MVMCTL[@]}" logs "demo/$first" --tail 5 || true
fi
if [ "$ready" != 1 ]; then
  echo "the pool did not become Ready in time; mvmd log tail:"; tail -n 30 "$DEMO/mvmd.log"
  exit 1
fi

if [ "$KEEP" = 1 ]; then
  trap - EXIT
  echo
  echo "mvmd runs as pid $MVMD with its VMs. Status: ${MVMCTL[*]} get pools,instances"
  echo "To remove the fleet: rm $DEMO/manifests/*.yaml (mvmd prunes it), then kill $MVMD."
  exit 0
fi

echo
echo "removing the manifest: mvmd prunes the pool and destroys its VMs"
rm -f "$DEMO/manifests/"*.yaml
for _ in $(seq 1 120); do
  n=$("${MVMCTL[@]}" get instances -o json 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d.get("items", d) if isinstance(d, dict) else d))' ||
      echo "?")
  [ "$n" = 0 ] && break
  sleep 1
done
"${MVMCTL[@]}" get instances || true
stop_mvmd
trap - EXIT
echo "demo done: mvmd stopped, no VM left (state was in $DEMO)"
