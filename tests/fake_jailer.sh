#!/usr/bin/env bash
# fake_jailer: stands in for Firecracker's `jailer` in tests (never in the product). It checks
# and records its command line (one line per call, words %q-quoted, in $MVM_FAKE_JAILER_LOG),
# builds the jailer's layout (<chroot-base>/<exec name>/<id>/root with the exec file in it),
# writes the pid file the real jailer writes (<root>/<exec name>.pid), and execs the exec file
# with MVM_FCDOUBLE_ROOT=<root>, so that tests/firecracker_double resolves the paths it is given
# inside the "chroot" the way a jailed Firecracker would. --daemonize sends stdio to /dev/null
# as the real one does. It does not chroot, change uid or create cgroups.
set -euo pipefail
if [ -n "${MVM_FAKE_JAILER_LOG:-}" ]; then
  printf '%q ' "$0" "$@" >>"$MVM_FAKE_JAILER_LOG"
  printf '\n' >>"$MVM_FAKE_JAILER_LOG"
fi
die() { echo "fake_jailer: $*" >&2; exit 1; }
id="" exec_file="" uid="" gid="" base="/srv/jailer" daemonize=0 cgv=1
while [ $# -gt 0 ]; do
  case "$1" in
    --id) id=$2; shift 2 ;;
    --exec-file) exec_file=$2; shift 2 ;;
    --uid) uid=$2; shift 2 ;;
    --gid) gid=$2; shift 2 ;;
    --chroot-base-dir) base=$2; shift 2 ;;
    --cgroup-version) cgv=$2; shift 2 ;;
    --cgroup) [[ $2 =~ ^[a-z]+\.[a-z_.]+=.+$ ]] || die "bad --cgroup $2"; shift 2 ;;
    --parent-cgroup|--netns) shift 2 ;;
    --resource-limit) [[ $2 =~ ^(fsize|no-file)=[0-9]+$ ]] || die "bad --resource-limit $2"; shift 2 ;;
    --daemonize) daemonize=1; shift ;;
    --new-pid-ns) shift ;;
    --) shift; break ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ $id =~ ^[a-zA-Z0-9-]{1,64}$ ]] || die "invalid --id '$id'"
[[ $uid =~ ^[0-9]+$ && $gid =~ ^[0-9]+$ ]] || die "--uid and --gid are required"
[ "$cgv" = 2 ] || die "expected --cgroup-version 2"
name=$(basename "$exec_file")
[[ $name == *firecracker* ]] || die "exec file name must contain 'firecracker'"
root="$base/$name/$id/root"
mkdir -p "$root"
ln -f "$exec_file" "$root/$name" 2>/dev/null || cp "$exec_file" "$root/$name"
echo $$ >"$root/$name.pid"
if [ "$daemonize" = 1 ]; then exec </dev/null >/dev/null 2>&1; fi
MVM_FCDOUBLE_ROOT="$root" exec "$exec_file" --id "$id" "$@"
