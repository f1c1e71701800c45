#!/usr/bin/env bash
# Builds the mvm test guest from Debian packages only:
#   vmlinuz            Debian cloud kernel bzImage (qemu -kernel)
#   vmlinux            the ELF inside it (what Firecracker boots; qemu boots it via PVH)
#   initramfs.cpio.gz  busybox-static + hack/guest/init + the virtio/vsock modules
#   rootfs.ext4        the same tree as an ext4 image (mkfs.ext4 -d; no root mount)
# Output: --out DIR, else $MVM_IMAGE_DIR, else /var/lib/mvm/images. Work is skipped when
# the inputs (package versions, this script, hack/guest/*) are unchanged; --force rebuilds.
# The last four lines of stdout are KEY=PATH for the files above. See docs/guest-image.md.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 [--out DIR] [--force] [--rootfs-mib N]
  --out DIR        output/cache directory (default \${MVM_IMAGE_DIR:-/var/lib/mvm/images})
  --force          rebuild even when the inputs are unchanged
  --rootfs-mib N   size of rootfs.ext4 in MiB (default 64)
env: MVM_KERNEL_PKG (default: what linux-image-cloud-amd64 depends on)
     SOURCE_DATE_EPOCH (default 1700000000) for archive timestamps
EOF
}

OUT="${MVM_IMAGE_DIR:-/var/lib/mvm/images}"
FORCE=0
ROOTFS_MIB=64
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --force) FORCE=1; shift ;;
    --rootfs-mib) ROOTFS_MIB="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-guest-image: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "$0")" && pwd)"
GUEST="$HERE/guest"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
export LC_ALL=C TZ=UTC
log() { echo "build-guest-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Modules the guest loads (dependencies are added automatically).
MODULES=(virtio_mmio virtio_blk virtio_console virtio_net vmw_vsock_virtio_transport button evdev)

# ------------------------------------------------------------------ host packages
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_pkgs=()
for p in busybox-static e2fsprogs cpio gzip lz4 zstd xz-utils binutils file apt; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update >&2
  $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2
fi
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing after installing busybox-static"

# ------------------------------------------------------------------ resolve the kernel
# One apt-cache call (each costs seconds where apt keeps no pkgcache.bin): the metapackage
# pins the real package, e.g. "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)".
resolve_kernel() {
  apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null | awk '
    /^Depends:/ { for (i = 2; i <= NF; i++) if ($i ~ /^linux-image-.*-cloud-amd64,?$/) {
      pkg = $i; sub(/,$/, "", pkg); ver = ""
      if ($(i+1) == "(=") { ver = $(i+2); sub(/\)$/, "", ver); sub(/\),$/, "", ver) }
      print pkg, ver; exit } }'
}
KPKG="${MVM_KERNEL_PKG:-}"
KVER_PKG=""
if [ -z "$KPKG" ]; then
  read -r KPKG KVER_PKG < <(resolve_kernel) || true
  if [ -z "$KPKG" ]; then
    log "linux-image-cloud-amd64 unknown to apt; running apt-get update"
    $SUDO apt-get update >&2
    read -r KPKG KVER_PKG < <(resolve_kernel) || true
  fi
fi
[ -n "$KPKG" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package"
if [ -z "$KVER_PKG" ]; then
  KVER_PKG="$(apt-cache show --no-all-versions "$KPKG" 2>/dev/null | awk '/^Version:/ {print $2; exit}')"
fi
[ -n "$KVER_PKG" ] || die "no candidate version for $KPKG"
BB_VER="$(dpkg-query -W -f='${Version}' busybox-static)"
E2_VER="$(dpkg-query -W -f='${Version}' e2fsprogs)"

# ------------------------------------------------------------------ cache key
KEY="$( {
  echo "kernel=$KPKG=$KVER_PKG busybox=$BB_VER e2fsprogs=$E2_VER"
  echo "modules=${MODULES[*]} rootfs_mib=$ROOTFS_MIB sde=$SOURCE_DATE_EPOCH"
  sha256sum <"$0"
  (cd "$GUEST" && find . -type f | sort | xargs sha256sum)
} | sha256sum | cut -c1-64)"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
exec 9>"$OUT/.lock"
flock 9   # one builder per cache dir; others wait and then find it cached

print_paths() {
  echo "VMLINUZ=$OUT/vmlinuz"
  echo "VMLINUX=$OUT/vmlinux"
  echo "INITRAMFS=$OUT/initramfs.cpio.gz"
  echo "ROOTFS=$OUT/rootfs.ext4"
}
if [ "$FORCE" -eq 0 ] && [ -f "$OUT/.key" ] && [ "$(cat "$OUT/.key")" = "$KEY" ] \
  && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initramfs.cpio.gz" ] \
  && [ -s "$OUT/rootfs.ext4" ]; then
  log "up to date ($KPKG $KVER_PKG, busybox $BB_VER)"
  print_paths
  exit 0
fi

WORK="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"   # apt-get download drops privileges to _apt

# ------------------------------------------------------------------ kernel
log "downloading $KPKG $KVER_PKG"
(cd "$WORK" && apt-get download -q -o APT::Sandbox::User=root "$KPKG=$KVER_PKG" >&2)
DEB="$(ls "$WORK"/"$KPKG"_*.deb)"
dpkg-deb -x "$DEB" "$WORK/kpkg"
VMLINUZ_SRC="$(ls "$WORK"/kpkg/boot/vmlinuz-*)"
KREL="${VMLINUZ_SRC##*/vmlinuz-}"
KCONFIG="$WORK/kpkg/boot/config-$KREL"
MODDIR="$WORK/kpkg/lib/modules/$KREL"

# extract-vmlinux (linux/scripts/extract-vmlinux), reimplemented: find each known
# compression magic in the bzImage, decompress from there, keep the first valid ELF.
extract_vmlinux() {
  local img="$1" out="$2" magic cmd pos
  while read -r magic cmd; do
    command -v "${cmd%% *}" >/dev/null || continue
    while IFS=: read -r pos _; do
      tail -c "+$((pos + 1))" "$img" | $cmd >"$out" 2>/dev/null || true
      if readelf -h "$out" >/dev/null 2>&1; then
        log "vmlinux: ${cmd%% *} payload at offset $pos"
        return 0
      fi
    done < <(grep -obUaP "$magic" "$img" || true)
  done <<'EOF'
\x02\x21\x4c\x18 lz4 -dc
\x28\xb5\x2f\xfd zstd -dcq
\xfd\x37\x7a\x58\x5a\x00 xz -dcq
\x1f\x8b\x08 gzip -dcq
\x5d\x00\x00\x00 xz -dcq --format=lzma
BZh bzip2 -dcq
EOF
  return 1
}
extract_vmlinux "$VMLINUZ_SRC" "$WORK/vmlinux" || die "no ELF payload found in $VMLINUZ_SRC"
file -b "$WORK/vmlinux" | grep -q '^ELF 64-bit LSB executable, x86-64' \
  || die "vmlinux is not an x86-64 ELF executable: $(file -b "$WORK/vmlinux")"
cp "$VMLINUZ_SRC" "$WORK/vmlinuz"
cp "$KCONFIG" "$WORK/kernel.config"

# ------------------------------------------------------------------ guest tree
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,dev,etc/acpi/PWRF,lib/mvm/modules,mnt,newroot,proc,root,run,sys,tmp,usr,var}
ln -s bin "$ROOT/sbin"
ln -s ../bin "$ROOT/usr/bin"
ln -s ../bin "$ROOT/usr/sbin"
ln -s ../run "$ROOT/var/run"
ln -s ../tmp "$ROOT/var/tmp"
chmod 1777 "$ROOT/tmp"
chmod 700 "$ROOT/root"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for a in $("$BUSYBOX" --list | sort); do
  [ "$a" = busybox ] || ln -s busybox "$ROOT/bin/$a"
done
install -m 0755 "$GUEST/init" "$ROOT/init"
install -m 0755 "$GUEST/acpi-power-button" "$ROOT/etc/acpi/PWRF/00000080"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$ROOT/etc/group"
printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"
printf 'ID=mvm-guest\nNAME="mvm test guest"\nBUILD_ID=%s\n' "${KEY:0:12}" >"$ROOT/etc/os-release"
cat >"$ROOT/etc/mvm-image" <<EOF
kernel_package=$KPKG
kernel_version=$KVER_PKG
kernel_release=$KREL
busybox_static=$BB_VER
build_key=$KEY
EOF
# /dev/console so the kernel can give init its stdio before devtmpfs is mounted.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || log "warning: cannot mknod /dev/console"

# Modules: resolve dependencies from each .ko's .modinfo "depends=" and write them in
# load order (dependencies first). Built-in modules (modules.builtin) are skipped.
declare -A KO_PATH=() SEEN=()
while IFS= read -r f; do
  n="${f##*/}"; n="${n%.ko}"; KO_PATH[${n//-/_}]="$f"
done < <(find "$MODDIR/kernel" -name '*.ko' | sort)
ORDER=()
add_module() {
  local m="${1//-/_}" dep deps
  [ -n "${SEEN[$m]:-}" ] && return 0
  SEEN[$m]=1
  if [ -z "${KO_PATH[$m]:-}" ]; then
    grep -q "/$m.ko\$" "$MODDIR/modules.builtin" && return 0
    die "kernel module $m not found in $KPKG"
  fi
  deps="$(readelf -p .modinfo "${KO_PATH[$m]}" | sed -n 's/.*depends=//p')"
  for dep in ${deps//,/ }; do add_module "$dep"; done
  ORDER+=("$m")
}
for m in "${MODULES[@]}"; do add_module "$m"; done
for m in "${ORDER[@]}"; do
  cp "${KO_PATH[$m]}" "$ROOT/lib/mvm/modules/$m.ko"
  echo "$m" >>"$ROOT/lib/mvm/modules/load.order"
done
log "modules: ${ORDER[*]}"

find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# ------------------------------------------------------------------ initramfs
(cd "$ROOT" && find . -mindepth 1 | sort \
  | cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$WORK/initramfs.cpio.gz"

# ------------------------------------------------------------------ ext4 rootfs
UUID="$(echo "$KEY" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')"
truncate -s "${ROOTFS_MIB}M" "$WORK/rootfs.ext4"
export E2FSPROGS_FAKE_TIME="$SOURCE_DATE_EPOCH"
mkfs.ext4 -q -F -L mvm-root -U "$UUID" -E "root_owner=0:0,hash_seed=$UUID" \
  -d "$ROOT" "$WORK/rootfs.ext4" >&2
# mke2fs 1.47.0 -d stamps ctime/atime with the wall clock; pin them for reproducibility.
{
  for p in / /lost+found $(cd "$ROOT" && find . -mindepth 1 | sort | sed 's|^\.||'); do
    echo "sif $p ctime @$SOURCE_DATE_EPOCH"
    echo "sif $p atime @$SOURCE_DATE_EPOCH"
  done
  echo "sif /lost+found mtime @$SOURCE_DATE_EPOCH"
} >"$WORK/debugfs.cmds"
debugfs -w -f "$WORK/debugfs.cmds" "$WORK/rootfs.ext4" >/dev/null 2>"$WORK/debugfs.log" \
  || { cat "$WORK/debugfs.log" >&2; die "debugfs failed"; }
unset E2FSPROGS_FAKE_TIME

# ------------------------------------------------------------------ publish
rm -f "$OUT/.key"
for f in vmlinuz vmlinux initramfs.cpio.gz rootfs.ext4 kernel.config; do
  mv -f "$WORK/$f" "$OUT/$f"
done
cp "$ROOT/etc/mvm-image" "$OUT/image.txt"
echo "$KEY" >"$OUT/.key.new" && mv -f "$OUT/.key.new" "$OUT/.key"
log "built $KPKG $KVER_PKG ($KREL) with busybox $BB_VER in $OUT"
print_paths
