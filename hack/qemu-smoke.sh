#!/usr/bin/env bash
# Boots the mvm test guest once under qemu -M microvm and walks the lifecycle the qemu
# driver needs: boot -> READY on the control port, set a value in guest RAM, pause and
# resume over QMP, save to a file (migrate exec:) and end the process, restore in a new
# process (-incoming), check the value and that uptime went on, then stop cleanly.
# Exits 0 when every step passed, 1 otherwise. Prints one "step seconds" line per step.
#
# usage: hack/qemu-smoke.sh [--image-dir DIR] [--accel tcg|kvm] [--disk] [--keep]
#   --disk   boot the ext4 rootfs on a virtio-blk-device (root=/dev/vda) instead of
#            running from the initramfs (the initramfs is still needed: it loads modules)
#   --keep   keep the run directory (console logs, saved state)
#   --halt poweroff|reboot   how the guest ends itself (mvm.halt; default poweroff)
#   --stop ctl|powerdown     ask for the clean stop with "stop" on the control port
#                            (default) or with QMP system_powerdown (ACPI power button)
#   --kernel vmlinuz|vmlinux boot the bzImage (default) or the ELF (PVH entry)
#   --machine M              -M value (default microvm,x-option-roms=off,rtc=on)
# Needs: qemu-system-x86_64, python3; builds the image if missing (hack/build-guest-image.sh).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
IMG="${MVM_IMAGE_DIR:-/var/lib/mvm/images}"
ACCEL=tcg
DISK=0
KEEP=0
HALT=poweroff
STOP=ctl
KERNEL=vmlinuz
MACHINE=microvm,x-option-roms=off,rtc=on
while [ $# -gt 0 ]; do
  case "$1" in
    --image-dir) IMG="$2"; shift 2 ;;
    --accel) ACCEL="$2"; shift 2 ;;
    --disk) DISK=1; shift ;;
    --keep) KEEP=1; shift ;;
    --halt) HALT="$2"; shift 2 ;;
    --stop) STOP="$2"; shift 2 ;;
    --kernel) KERNEL="$2"; shift 2 ;;
    --machine) MACHINE="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "qemu-smoke: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ ! -s "$IMG/vmlinuz" ] || [ ! -s "$IMG/vmlinux" ] || [ ! -s "$IMG/initramfs.cpio.gz" ] || [ ! -s "$IMG/rootfs.ext4" ]; then
  "$HERE/build-guest-image.sh" --out "$IMG" >/dev/null
fi
RUN="$(mktemp -d /tmp/mvm-smoke.XXXXXX)"
if [ "$KEEP" -eq 0 ]; then trap 'rm -rf "$RUN"' EXIT; else echo "run dir: $RUN"; fi

python3 - "$IMG" "$RUN" "$ACCEL" "$DISK" "$HALT" "$STOP" "$KERNEL" "$MACHINE" <<'PY'
import base64, json, os, shutil, signal, socket, subprocess, sys, time

img, run, accel, disk, halt, stop, kernel, machine = sys.argv[1:4] + [sys.argv[4] == "1"] + sys.argv[5:9]
T = {}
fail = []

def host_tsc_khz():
    # TCG guests run on the host TSC; without this the guest cannot calibrate its
    # clock on microvm with ACPI and hangs (see docs/guest-image.md).
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return 2000000

def qemu_argv(tag, incoming=None):
    # the workload proves mvm.cmd and mvm.env arrived: it stores $MVM_SMOKE as key "env"
    workload = 'printf %s "$MVM_SMOKE" >/run/mvm/kv/env; echo workload started; exec sleep 2147483647'
    append = " ".join([
        "console=ttyS0", "panic=-1", "quiet",
        f"tsc_early_khz={host_tsc_khz()}", "tsc=reliable",
        "mvm.cmd=" + base64.b64encode(workload.encode()).decode(),
        "mvm.env=" + base64.b64encode(b"MVM_SMOKE=it's here\n").decode(), f"mvm.halt={halt}",
    ] + (["root=/dev/vda", "rw"] if disk else []))
    a = ["qemu-system-x86_64",
         "-M", machine,
         "-accel", accel, "-nodefaults", "-no-user-config", "-no-reboot",
         "-display", "none", "-m", "128", "-smp", "1",
         "-kernel", f"{img}/{kernel}", "-initrd", f"{img}/initramfs.cpio.gz",
         "-append", append,
         "-chardev", f"file,id=con,path={run}/console-{tag}.log", "-serial", "chardev:con",
         "-device", "virtio-serial-device,max_ports=2",
         "-chardev", f"socket,id=ctl,path={run}/ctl.sock,server=on,wait=off",
         "-device", "virtserialport,chardev=ctl,name=mvm.ctl",
         "-qmp", f"unix:{run}/qmp.sock,server=on,wait=off"]
    if disk:
        a += ["-drive", f"file={run}/rootfs.ext4,format=raw,if=none,id=root",
              "-device", "virtio-blk-device,drive=root"]
    if incoming:
        a += ["-incoming", incoming]
    return a

def connect(path, timeout=10):
    end = time.time() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > end:
                raise
            time.sleep(0.01)

class Lines:
    def __init__(self, sock):
        self.s, self.buf = sock, b""
    def readline(self, timeout):
        self.s.settimeout(timeout)
        while b"\n" not in self.buf:
            d = self.s.recv(4096)
            if not d:
                raise EOFError("socket closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().rstrip("\r")
    def send(self, text):
        self.s.sendall(text.encode() + b"\n")

class QMP(Lines):
    def __init__(self, path):
        super().__init__(connect(path))
        json.loads(self.readline(10))  # greeting
        self.cmd("qmp_capabilities")
    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.send(json.dumps(msg))
        while True:
            r = json.loads(self.readline(60))
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']}")
            return r["return"]

class Ctl(Lines):
    def request(self, line, timeout=30):
        self.send(line)
        r = self.readline(timeout)
        if not r.startswith("ok"):
            raise RuntimeError(f"{line!r} -> {r!r}")
        return r[3:]

def step(name, t0):
    T[name] = time.monotonic() - t0
    print(f"{name:<22} {T[name]:.3f}s", flush=True)

def check(cond, what):
    if not cond:
        fail.append(what)
        print(f"FAIL: {what}", flush=True)

if disk:
    shutil.copy(f"{img}/rootfs.ext4", f"{run}/rootfs.ext4")  # never boot the shared copy rw
procs = []
try:
    # ---- boot
    t0 = time.monotonic()
    p = subprocess.Popen(qemu_argv("boot"), stdin=subprocess.DEVNULL)
    procs.append(p)
    qmp = QMP(f"{run}/qmp.sock")
    ctl = Ctl(connect(f"{run}/ctl.sock"))
    ready = ctl.readline(120)
    step("boot-to-ready", t0)
    check(ready.startswith("READY "), f"first line is READY (got {ready!r})")
    boot_id = ready.split()[1]
    ctl.request("set smoke 42-" + boot_id[:8])
    up0 = float(ctl.request("uptime")); wall0 = time.monotonic()
    check(ctl.request("status").startswith("running"), "workload running")
    for _ in range(50):  # the workload writes it right after it starts
        try:
            env = ctl.request("get env")
            break
        except RuntimeError as e:
            env = str(e)
            time.sleep(0.1)
    check(env == "it's here", f"workload saw mvm.env (got {env!r})")

    # ---- pause / resume
    t0 = time.monotonic(); qmp.cmd("stop"); step("qmp-stop", t0)
    t0 = time.monotonic(); st = qmp.cmd("query-status"); step("qmp-query-status", t0)
    check(st["status"] == "paused", f"paused (got {st})")
    t0 = time.monotonic(); qmp.cmd("cont"); step("qmp-cont", t0)
    check(qmp.cmd("query-status")["status"] == "running", "running after cont")
    t0 = time.monotonic(); ctl.request("ping"); step("ctl-ping-after-cont", t0)

    # ---- save (paused) and end the process
    qmp.cmd("stop")
    t0 = time.monotonic()
    qmp.cmd("migrate", uri=f"exec:cat > {run}/state.bin")
    while True:
        m = qmp.cmd("query-migrate")
        if m.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.01)
    step("save", t0)
    check(m["status"] == "completed", f"migrate completed (got {m.get('status')})")
    print(f"state file: {os.path.getsize(run + '/state.bin')} bytes", flush=True)
    ctl.s.close(); qmp.s.close()
    p.kill(); p.wait()
    os.unlink(f"{run}/qmp.sock"); os.unlink(f"{run}/ctl.sock")
    time.sleep(1.0)  # time passes while "sleeping"

    # ---- restore in a new process
    t0 = time.monotonic()
    p = subprocess.Popen(qemu_argv("restore", incoming=f"exec:cat {run}/state.bin"),
                         stdin=subprocess.DEVNULL)
    procs.append(p)
    qmp = QMP(f"{run}/qmp.sock")
    while qmp.cmd("query-status")["status"] == "inmigrate":
        time.sleep(0.01)
    step("restore-loaded", t0)
    st = qmp.cmd("query-status")["status"]
    check(st == "paused", f"restored VM waits for cont (status {st})")
    qmp.cmd("cont")
    ctl = Ctl(connect(f"{run}/ctl.sock"))
    val = ctl.request("get smoke")
    step("restore-to-ctl-reply", t0)
    check(val == "42-" + boot_id[:8], f"value survived save/restore (got {val!r})")
    check(ctl.request("ping") == "pong " + boot_id, "same boot id after restore")
    up1 = float(ctl.request("uptime"))
    check(up1 >= up0, f"uptime went on ({up0} -> {up1})")
    print(f"guest uptime before save {up0:.2f}s, after restore {up1:.2f}s "
          f"(host time between: {time.monotonic() - wall0:.2f}s)", flush=True)

    # ---- clean stop
    t0 = time.monotonic()
    if stop == "powerdown":
        qmp.cmd("system_powerdown")
    else:
        check(ctl.request("stop") == "stopping", "stop accepted")
    tail = []
    try:
        while True:
            tail.append(ctl.readline(30))
    except (EOFError, OSError):
        pass
    try:
        rc = p.wait(60)
    except subprocess.TimeoutExpired:
        rc = "still running after 60s: " + str(qmp.cmd("query-status"))
    step("stop-to-exit", t0)
    check(rc == 0, f"qemu exit status 0 (got {rc})")
    check("BYE" in tail, f"guest said BYE (got {tail})")
except Exception as e:  # noqa: BLE001
    fail.append(repr(e))
    print(f"FAIL: {e!r}", flush=True)
finally:
    for p in procs:
        if p.poll() is None:
            p.kill(); p.wait()

if fail:
    print("qemu-smoke: FAILED:", "; ".join(fail))
    for f in sorted(os.listdir(run)):
        if f.startswith("console-"):
            print(f"--- {f} (tail)")
            print("".join(open(f"{run}/{f}", errors="replace").readlines()[-15:]))
    sys.exit(1)
print("qemu-smoke: OK")
PY
