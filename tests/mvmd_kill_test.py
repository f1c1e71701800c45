#!/usr/bin/env python3
"""mvmd_kill_test: kill -9 mvmd in the middle of churn; the restarted mvmd must converge with
nothing duplicated, lost, leaked or rebooted.

Runs tests/mvmd_fake.cpp (the real mvmd around the fake VMM, whose "host" is persisted in a
state file, as real VMM processes outlive mvmd) against a manifests directory of one tenant and
three pools, each driver call taking MVM_FAKE_LATENCY_MS so that churn takes seconds:

  1. start mvmd; wait (polling `mvmctl get pools -o json`) until churn is under way; check that
     `mvmctl get pools`, `get instances` and `describe pool` answer sanely while it runs;
  2. edit the pools (files renamed over, as a GitOps sync does); as soon as mvmd acts on the new
     counts, and while instances are still moving, kill -9 it;
  3. restart it on the same state directory and wait until every pool is Ready;
  4. assert: instances per pool == desired; the store's instances and the fake host's resources
     match one to one (no duplicate, lost or leaked instance); every Running/Warm instance has a
     VMM process with the pid the store records, paused exactly when Warm; and every VMM process
     alive at the kill that is still wanted has its pid (adopted, not rebooted).
  Steps 2-4 run twice: a scale-up, then a scale-down of two pools with a scale-up of the third.
  A third round kills mvmd exactly between a VMM's start on the host and mvmd recording it
  (replies held back by MVM_FAKE_REPLY_DELAY_MS): the restarted mvmd must adopt that VMM with
  the pid the host has.

Usage: mvmd_kill_test.py MVMD_FAKE MVMCTL   (ctest passes both; exit 0 = pass; with
MVM_TEST_KEEP=1 the directory with both mvmd logs is kept after a pass too)
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

LATENCY_MS = 40
TENANT = "acme"
# pool -> (running, warm): at the start, then one kill -9 round per edit: a scale-up, then a
# mix of scale-down (destroys interrupted) and scale-up.
BEFORE = {"web": (4, 2), "api": (5, 0), "batch": (3, 2)}
ROUNDS = [{"web": (6, 3), "api": (7, 0), "batch": (4, 3)},
          {"web": (3, 1), "api": (4, 0), "batch": (7, 3)}]


# An mvmd killed after a VMM was started but before the Start was recorded leaves the instance
# with no handle; the restarted mvmd must learn the live VMM's handle from the driver's probe
# (the store then records the host's pid), not record pid 0.


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def tenant_yaml():
    return ("apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: %s}\n"
            "spec: {quota: {}}\n" % TENANT)


def pool_yaml(name, running, warm):
    return ("apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: %s, tenant: %s}\n"
            "spec:\n  image: {kernel: vmlinux, rootfs: rootfs.ext4}\n"
            "  resources: {vcpus: 1, memoryMiB: 128, diskMiB: 64}\n"
            "  replicas: {running: %d, warm: %d}\n" % (name, TENANT, running, warm))


def replace_file(path, text):
    """Writes next to `path` under a hidden name, then renames over it (what git and GitOps
    tools do); the watcher only ever sees complete files."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def read_fake_state(path):
    """The fake host: {instance name: (prepared, process, paused, snapshot, pid)}."""
    out = {}
    with open(path) as f:
        header = f.readline().split()
        check(header[:2] == ["mvm-fake-vmm", "1"], "fake state header: %r" % header)
        for line in f:
            tenant, name, prepared, process, paused, snapshot, pid = line.split()
            check(tenant == TENANT, "fake state: unexpected tenant %s" % tenant)
            check(name not in out, "fake state: %s listed twice" % name)
            out[name] = (prepared == "1", process == "1", paused == "1", snapshot == "1", int(pid))
    return out


class Mvmd:
    def __init__(self, binary, mvmctl, root):
        self.binary = binary
        self.mvmctl = mvmctl
        self.root = root
        self.socket = os.path.join(root, "api.sock")
        self.fake_state = os.path.join(root, "fake.state")
        self.proc = None
        self.starts = 0

    def start(self, latency_ms=LATENCY_MS, reply_delay_ms=0):
        self.starts += 1
        log = open(os.path.join(self.root, "mvmd-%d.log" % self.starts), "w")
        env = dict(os.environ, MVM_FAKE_STATE=self.fake_state,
                   MVM_FAKE_LATENCY_MS=str(latency_ms),
                   MVM_FAKE_REPLY_DELAY_MS=str(reply_delay_ms))
        self.proc = subprocess.Popen(
            [self.binary, "-m", os.path.join(self.root, "manifests"),
             "--state-dir", os.path.join(self.root, "state"), "--socket", self.socket,
             "--workers", "2", "--debounce-ms", "20", "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def log(self, n=None):
        with open(os.path.join(self.root, "mvmd-%d.log" % (n or self.starts))) as f:
            return f.read()

    def ctl(self, *args, expect_ok=True):
        r = subprocess.run([self.mvmctl, "--socket", self.socket] + list(args),
                           capture_output=True, text=True, timeout=10)
        if expect_ok:
            check(r.returncode == 0, "mvmctl %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                                  r.stderr.strip()))
        return r

    def get(self, resource):
        """Items of `mvmctl get RESOURCE -o json`, or None while mvmd does not answer."""
        if self.proc.poll() is not None:
            raise TestFailure("mvmd exited with %d:\n%s" % (self.proc.returncode, self.log()))
        r = self.ctl("get", resource, "-o", "json", expect_ok=False)
        if r.returncode != 0:
            return None
        doc = json.loads(r.stdout)
        check(doc.get("kind") == "List", "get %s -o json: not a List" % resource)
        return doc["items"]

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise TestFailure("mvmd did not stop on SIGTERM")
        return self.proc.returncode if self.proc else 0


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TestFailure("timed out after %ds waiting for %s" % (timeout, what))


def moving(instances):
    return [i for i in instances if i["state"] != i["target"] or i.get("pending")]


def check_cli_while_running(mvmd):
    pools = mvmd.ctl("get", "pools").stdout
    header = pools.splitlines()[0].split()
    check(header == ["NAME", "TENANT", "RUNNING", "WARM", "SLEEPING", "READY", "AGE"],
          "get pools header: %r" % header)
    for pool in BEFORE:
        check(any(line.split()[:2] == [pool, TENANT] for line in pools.splitlines()[1:]),
              "get pools: no row for %s:\n%s" % (pool, pools))
    instances = mvmd.ctl("get", "instances").stdout.splitlines()
    header = instances[0].split()
    check(header == ["NAME", "POOL", "STATE", "TARGET", "AGE"], "get instances header: %r" % header)
    check(len(instances) > 1, "get instances: no rows")
    for line in instances[1:]:
        fields = line.split()
        check(len(fields) == 5 and fields[1] in BEFORE and fields[0].startswith(fields[1] + "-"),
              "get instances row: %r" % line)
    wide = mvmd.ctl("get", "instances", "-o", "wide").stdout.splitlines()[0].split()
    check("PID" in wide, "get instances -o wide has no PID column: %r" % wide)
    describe = mvmd.ctl("describe", "pool", "web", "-t", TENANT).stdout
    for needle in ("Name:", "web", "Tenant:", TENANT, "Running", "Warm", "Ready"):
        check(needle in describe, "describe pool web: no %r in:\n%s" % (needle, describe))


def verify(mvmd, want, host_at_kill):
    """Waits for convergence on `want`, then checks counts, store vs host, and adoption."""

    def converged():
        pools = mvmd.get("pools")
        items = mvmd.get("instances")
        if pools is None or items is None or moving(items):
            return None
        for p in pools:
            ready = [c for c in p["conditions"] if c["type"] == "Ready"]
            if not ready or ready[0]["status"] != "True":
                return None
        return pools, items

    wait_for("convergence after the restart", converged, 40)
    time.sleep(0.3)  # a reconcile about to start would show now
    pools, items = wait_for("convergence after the restart", converged, 10)
    check_cli_while_running(mvmd)

    # Counts per pool.
    by_pool = {}
    for i in items:
        by_pool.setdefault(i["pool"], []).append(i)
    for name, (running, warm) in want.items():
        states = sorted(i["state"] for i in by_pool.get(name, []))
        check(states == sorted(["Running"] * running + ["Warm"] * warm),
              "pool %s: want %d Running + %d Warm, have %s" % (name, running, warm, states))
    check(sorted(by_pool) == sorted(want), "unexpected pools: %s" % sorted(by_pool))
    for p in pools:
        r, w = want[p["name"]]
        check(p["desired"]["running"] == r and p["desired"]["warm"] == w and
              p["current"]["running"] == r and p["current"]["warm"] == w,
              "pool status %s: desired %s current %s" % (p["name"], p["desired"], p["current"]))

    # No duplicate, lost or leaked instance: store and host match one to one.
    host = read_fake_state(mvmd.fake_state)
    names = [i["name"] for i in items]
    check(len(names) == len(set(names)), "duplicate instance names: %s" % names)
    check(set(host) == set(names),
          "store and host differ: only in the store %s, only on the host (leaked) %s"
          % (sorted(set(names) - set(host)), sorted(set(host) - set(names))))
    for i in items:
        prepared, process, paused, snapshot, pid = host[i["name"]]
        check(prepared and process and not snapshot,
              "%s is %s but the host holds %s" % (i["name"], i["state"], host[i["name"]]))
        check(paused == (i["state"] == "Warm"),
              "%s is %s but its VMM paused=%s" % (i["name"], i["state"], paused))
        check(i["vmm"]["pid"] == pid,
              "%s: store records pid %s, host has pid %d" % (i["name"], i["vmm"]["pid"], pid))

    # Adopted, not rebooted: every VMM process alive at the kill, and still wanted, kept its pid.
    adopted = 0
    for name, (_, process, _, _, pid) in host_at_kill.items():
        if not process or name not in host:
            continue  # scaled away since: destroyed, checked above
        check(host[name][1] and host[name][4] == pid,
              "%s: VMM pid %d at the kill, now %s (rebooted)" % (name, pid, host[name]))
        adopted += 1
    check(adopted > 0, "no VMM process alive at the kill survived: nothing was adopted")
    check("adopted" in mvmd.log(), "the restarted mvmd logged no adoption")
    return len(items), adopted


def interrupted_start_round(mvmd, manifests, current):
    """The kill lands, deterministically, after the host started a VMM and before mvmd recorded
    the Start: each driver call's reply is held back (MVM_FAKE_REPLY_DELAY_MS) and mvmd is
    killed as soon as the new VMM process is on the host."""
    check(mvmd.stop() == 0, "mvmd did not stop cleanly on SIGTERM")
    mvmd.start(latency_ms=0, reply_delay_ms=1500)
    wait_for("mvmd to answer", lambda: mvmd.get("instances"), 20)
    before = read_fake_state(mvmd.fake_state)
    want = dict(current)
    running, warm = want["web"]
    want["web"] = (running + 1, warm)
    replace_file(os.path.join(manifests, "web.yaml"), pool_yaml("web", running + 1, warm))

    def new_vmm_on_host():
        host = read_fake_state(mvmd.fake_state)
        fresh = [n for n, r in host.items() if r[1] and n not in before]
        return fresh or None

    fresh = wait_for("the new VMM to start on the host", new_vmm_on_host, 20)
    mvmd.kill9()
    host_at_kill = read_fake_state(mvmd.fake_state)
    print("round 3: killed mvmd right after the host started %s (Start not recorded yet)"
          % ", ".join(fresh))
    mvmd.start()
    instances, adopted = verify(mvmd, want, host_at_kill)
    print("round 3: converged: %d instances; %d VMMs adopted with their pids" % (instances, adopted))


def run(mvmd_binary, mvmctl, root):
    manifests = os.path.join(root, "manifests")
    os.makedirs(manifests)
    replace_file(os.path.join(manifests, "tenant.yaml"), tenant_yaml())
    for name, (running, warm) in BEFORE.items():
        replace_file(os.path.join(manifests, name + ".yaml"), pool_yaml(name, running, warm))

    mvmd = Mvmd(mvmd_binary, mvmctl, root)
    mvmd.start()
    try:
        # Churn under way: some instances booted, others still on their way.
        def churning():
            items = mvmd.get("instances")
            if not items:
                return None
            settled = [i for i in items if not moving([i]) and i["state"] in ("Running", "Warm")]
            return items if settled and moving(items) else None

        wait_for("churn to start", churning, 20)
        check_cli_while_running(mvmd)

        for round_number, want in enumerate(ROUNDS, 1):
            # Edit, then kill -9 once mvmd acts on the new counts and instances are moving.
            for name, (running, warm) in want.items():
                replace_file(os.path.join(manifests, name + ".yaml"),
                             pool_yaml(name, running, warm))

            def acting_on_new_counts():
                pools = mvmd.get("pools")
                if not pools:
                    return None
                desired = {p["name"]: p["desired"] for p in pools}
                if any(desired.get(n, {}).get("running") != r or
                       desired.get(n, {}).get("warm") != w for n, (r, w) in want.items()):
                    return None
                items = mvmd.get("instances")
                return items if items and len(moving(items)) >= 3 else None

            at_kill = wait_for("mvmd to act on the edit", acting_on_new_counts, 20)
            mvmd.kill9()
            host_at_kill = read_fake_state(mvmd.fake_state)
            print("round %d: killed mvmd with %d instances recorded (%d moving), %d VMM processes"
                  " on the host" % (round_number, len(at_kill), len(moving(at_kill)),
                                    sum(1 for r in host_at_kill.values() if r[1])))
            mvmd.start()
            instances, adopted = verify(mvmd, want, host_at_kill)
            print("round %d: converged: %d instances in %d pools; %d VMMs adopted with their pids;"
                  " host and store match one to one" % (round_number, instances, len(want),
                                                         adopted))

        interrupted_start_round(mvmd, manifests, ROUNDS[-1])

        code = mvmd.stop()
        check(code == 0, "mvmd exited %s on SIGTERM" % code)
    finally:
        if mvmd.proc and mvmd.proc.poll() is None:
            mvmd.proc.kill()
            mvmd.proc.wait()


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="mvmd-kill-test-")
    try:
        run(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), root)
    except TestFailure as e:
        print("FAIL: %s\n(logs kept in %s)" % (e, root), file=sys.stderr)
        logs = sorted((f for f in os.listdir(root) if f.startswith("mvmd-")),
                      key=lambda f: int(f[5:-4]))
        for name in logs[-2:]:  # the run killed last and the one after it
            with open(os.path.join(root, name)) as f:
                tail = f.read().splitlines()[-30:]
            print("--- %s (tail) ---\n%s" % (name, "\n".join(tail)), file=sys.stderr)
        return 1
    if os.environ.get("MVM_TEST_KEEP"):
        print("logs and state kept in %s" % root)
    else:
        subprocess.run(["rm", "-rf", root], check=False)
    print("PASS in %.1f s" % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
