#!/usr/bin/env python3
"""mvmd_firecracker_test: `mvmd --runtime firecracker` runs pools through the firecracker driver.

Runs the real mvmd with MVM_FC_BINARY pointing at tests/firecracker_double (the stand-in that
enforces Firecracker's API rules), a tenant and a pool of one running, one warm and one sleeping
instance, and a second pool that names `runtime: qemu` with MVM_QEMU_BINARY set to a path that
does not exist, so the router must fail that pool's instances with the reason. Checks:
  1. the firecracker pool converges: Running, Warm and Sleeping instances, each Running/Warm one
     with a live firecracker_double whose pid mvmd records, the Sleeping one with a snapshot;
  2. a pool with `snapshot: {base: true}` gets one base snapshot; its Sleeping instance holds a
     Diff of it (mem.diff, no full mem), its Running one a live VMM started from it;
  3. the qemu pool's instances carry the router's error naming the missing qemu;
  4. removing the pools destroys everything: no firecracker_double process, no instance dir,
     no base snapshot.
As root the doubles run confined (docs/security.md): each live one runs as an instance uid with
NoNewPrivs and no capabilities, in its own mount and pid namespaces and in its cgroup leaf, and
`mvmctl describe instance` shows its confinement with Firecracker's built-in seccomp filters;
after the removal no uid is leased and no cgroup is left.

Usage: mvmd_firecracker_test.py MVMD MVMCTL FIRECRACKER_DOUBLE (exit 0 = pass)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TestFailure("timed out after %ds waiting for %s" % (timeout, what))


def doubles(marker):
    """Live firecracker_double processes whose command line mentions `marker`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "firecracker_double" in cmd and marker in cmd and state != "Z":
            out.append(int(pid))
    return out


def status_field(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].split()
    return []


def check_confined(pid, name, mvmctl, socket, slice_dir):
    uids = status_field(pid, "Uid")
    check(uids and uids[0] != "0" and len(set(uids)) == 1,
          "%s: pid %d runs as uid %s, not an instance uid" % (name, pid, uids))
    check(status_field(pid, "NoNewPrivs") == ["1"], "%s: NoNewPrivs not set" % name)
    check(status_field(pid, "CapEff") == ["0000000000000000"], "%s: has capabilities" % name)
    for ns in ("mnt", "pid"):
        check(os.readlink("/proc/%d/ns/%s" % (pid, ns)) != os.readlink("/proc/self/ns/" + ns),
              "%s: shares mvmd's %s namespace" % (name, ns))
    procs = os.path.join(slice_dir, "acme", name, "cgroup.procs")
    with open(procs) as f:
        check(str(pid) in f.read().split(), "%s: pid %d not in %s" % (name, pid, procs))
    r = subprocess.run([mvmctl, "--socket", socket, "describe", "instance", "acme/" + name],
                       capture_output=True, text=True, timeout=10)
    check("firecracker built-in" in r.stdout and ("UID/GID:" in r.stdout),
          "%s: describe shows no confinement:\n%s" % (name, r.stdout))


def main():
    mvmd, mvmctl, double = sys.argv[1:4]
    root = tempfile.mkdtemp(prefix="mvm-fcd-")
    run = tempfile.mkdtemp(prefix="mfd", dir="/tmp")
    manifests = os.path.join(root, "manifests")
    state = os.path.join(root, "state")
    images = os.path.join(state, "images")
    os.makedirs(manifests)
    os.makedirs(images)
    with open(os.path.join(images, "vmlinux"), "w") as f:
        f.write("kernel")
    with open(os.path.join(images, "rootfs.ext4"), "wb") as f:
        f.truncate(1 << 20)
    with open(os.path.join(manifests, "acme.yaml"), "w") as f:
        f.write("apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\n"
                "spec: {quota: {}}\n---\n"
                "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: web, tenant: acme}\n"
                "spec:\n  image: {kernel: vmlinux, rootfs: rootfs.ext4}\n"
                "  resources: {vcpus: 1, memoryMiB: 64}\n"
                "  replicas: {running: 1, warm: 1, sleeping: 1}\n"
                "  policy: {gracefulStopSeconds: 2}\n---\n"
                "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: base, tenant: acme}\n"
                "spec:\n  image: {kernel: vmlinux, rootfs: rootfs.ext4}\n"
                "  resources: {vcpus: 1, memoryMiB: 64}\n  snapshot: {base: true}\n"
                "  replicas: {running: 1, sleeping: 1}\n"
                "  policy: {gracefulStopSeconds: 2}\n---\n"
                "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: slow, tenant: acme}\n"
                "spec:\n  runtime: qemu\n  image: {kernel: vmlinux, rootfs: rootfs.ext4}\n"
                "  replicas: {running: 1}\n")
    socket = os.path.join(root, "api.sock")
    confined = os.geteuid() == 0
    slice_name = "mvm-fcd-%d.slice" % os.getpid()
    slice_dir = None
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            slice_dir = os.path.join(fields[4], slice_name)
            break
    confined = confined and slice_dir is not None
    uid_table = os.path.join(state, "jail", "uids")
    env = dict(os.environ, MVM_FC_JAIL_STATE_DIR=os.path.join(state, "jail"),
               MVM_FC_CGROUP_SLICE=slice_name, MVM_FC_BINARY=double, MVM_FC_RUNTIME_DIR=run,
               MVM_FC_BOOT_TIMEOUT="20", MVM_QEMU_BINARY="/nonexistent/qemu-system-x86_64")
    env.pop("MVM_FCDOUBLE_MODE", None)
    log_path = os.path.join(root, "mvmd.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([mvmd, "-m", manifests, "--state-dir", state, "--socket", socket,
                             "--runtime", "firecracker", "--debounce-ms", "20",
                             "--resync-period", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()

    def instances():
        if proc.poll() is not None:
            with open(log_path) as f:
                raise TestFailure("mvmd exited with %d:\n%s" % (proc.returncode, f.read()))
        r = subprocess.run([mvmctl, "--socket", socket, "get", "instances", "-o", "json"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout)["items"] if r.returncode == 0 else None

    ok = False
    try:
        def converged():
            items = instances()
            if not items:
                return None
            web = [i for i in items if i["pool"] == "web"]
            states = sorted(i["state"] for i in web if i["state"] == i["target"])
            return web if states == ["Running", "Sleeping", "Warm"] else None
        web = wait_for("pool web Running+Warm+Sleeping", converged, 90)
        instance_root = os.path.join(state, "tenants/acme/pools/web/instances")
        for i in web:
            if i["state"] in ("Running", "Warm"):
                pid = i["vmm"]["pid"]
                check(pid in doubles(run), "%s: recorded pid %d is not a live firecracker_double"
                      % (i["name"], pid))
                if confined:
                    check_confined(pid, i["name"], mvmctl, socket, slice_dir)
            else:
                snap = os.path.join(instance_root, i["name"], "snapshots")
                check(os.path.exists(os.path.join(snap, "vmstate")) and
                      os.path.exists(os.path.join(snap, "mem")),
                      "%s: Sleeping without a snapshot in %s" % (i["name"], snap))

        def base_converged():
            items = instances() or []
            pool = [i for i in items if i["pool"] == "base" and i["state"] == i["target"]]
            return pool if sorted(i["state"] for i in pool) == ["Running", "Sleeping"] else None
        based = wait_for("pool base Running+Sleeping", base_converged, 90)
        base_pool = os.path.join(state, "tenants/acme/pools/base")
        keys = [k for k in os.listdir(os.path.join(base_pool, "fc-base")) if k != "lock"]
        check(len(keys) == 1, "expected one base snapshot, found %s" % keys)
        for i in based:
            snap = os.path.join(base_pool, "instances", i["name"], "snapshots")
            with open(os.path.join(snap, "base-key")) as f:
                check(f.read().strip() == keys[0], "%s does not name the base" % i["name"])
            if i["state"] == "Sleeping":
                check(os.path.exists(os.path.join(snap, "mem.diff")) and
                      not os.path.exists(os.path.join(snap, "mem")),
                      "%s: Sleeping without a Diff of the base in %s" % (i["name"], snap))
        check(len(doubles(run)) == 3, "expected 3 live VMMs, found %s" % doubles(run))

        def slow_failed():
            items = instances() or []
            return [i for i in items if i["pool"] == "slow" and
                    "asks for runtime qemu, which this mvmd cannot run" in i["lastError"]]
        wait_for("the qemu pool's instance to carry the router's error", slow_failed, 30)

        os.rename(os.path.join(manifests, "acme.yaml"), os.path.join(root, "acme.yaml.off"))
        # Removing every pool at once is held back as a suspected accident: confirm it.
        wait_for("the held-back removal", lambda: "holding back" in open(log_path).read(), 20)
        proc.send_signal(signal.SIGUSR1)
        wait_for("every instance destroyed", lambda: instances() == [], 60)
        check(doubles(run) == [], "VMMs left after destroy: %s" % doubles(run))
        left = os.listdir(instance_root) if os.path.isdir(instance_root) else []
        check(left == [], "instance directories left: %s" % left)
        bases = os.path.join(state, "tenants/acme/pools/base/fc-base")
        left = [k for k in os.listdir(bases) if k != "lock"] if os.path.isdir(bases) else []
        check(left == [], "base snapshots left: %s" % left)
        if confined:
            leased = open(uid_table).read().strip() if os.path.exists(uid_table) else ""
            check(leased == "", "uids still leased after destroy: %s" % leased)
            tenants = [d for d in os.listdir(slice_dir)
                       if os.path.isdir(os.path.join(slice_dir, d))]
            check(tenants == [], "cgroups left in %s: %s" % (slice_dir, tenants))
        print("mvmd_firecracker_test: VMMs ran %s" % ("confined" if confined else "unconfined"))
        ok = True
    except TestFailure as e:
        print("FAIL:", e)
        with open(log_path) as f:
            print(f.read()[-6000:])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        for pid in doubles(run):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run, ignore_errors=True)
        if slice_dir and os.path.isdir(slice_dir):
            for d in os.listdir(slice_dir):
                leaf_parent = os.path.join(slice_dir, d)
                if os.path.isdir(leaf_parent):
                    for leaf in os.listdir(leaf_parent):
                        if os.path.isdir(os.path.join(leaf_parent, leaf)):
                            with open(os.path.join(leaf_parent, leaf, "cgroup.kill"), "w") as f:
                                f.write("1")
                            time.sleep(0.2)
                            os.rmdir(os.path.join(leaf_parent, leaf))
                    os.rmdir(leaf_parent)
            os.rmdir(slice_dir)
        if ok:
            shutil.rmtree(root, ignore_errors=True)
    print("mvmd_firecracker_test: %s" % ("OK" if ok else "FAILED (kept %s)" % root))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
