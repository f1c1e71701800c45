#pragma once
// Seccomp profiles for VMM processes, built with libseccomp and exported as a BPF program that
// runtime/jail.h installs last before exec. docs/security.md says how the lists were derived.
//
// Promises:
//  - `baseline`: everything is allowed except the calls a VMM never needs and an attacker wants
//    for escaping or for reaching the host kernel's rarer surfaces (mount, ptrace, bpf, module
//    and kexec loading, namespaces, keyrings, perf, userfaultfd, ...).
//  - `strict`: only the calls QEMU (and the /bin/sh, cat and mv its exec: migration runs) made
//    in a traced boot, pause, resume, snapshot and restore, plus the error and exit paths;
//    socket() and socketpair() only for the address families it was seen to use (AF_UNIX).
//  - Either way a forbidden call kills the whole process (SECCOMP_RET_KILL_PROCESS), and so does
//    any call from a foreign architecture (32-bit int 0x80, x32).
//  - FindSeccompKill reads the kernel's audit record of such a kill (type=1326 in the kernel
//    log) for a pid and names the call; the kernel writes that record only while auditing is
//    enabled (audit=1 or a running auditd), so nullopt means "not known", not "no violation".

#include <linux/filter.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace mvm::runtime {

enum class SeccompProfile { kBaseline, kStrict };

std::optional<SeccompProfile> ParseSeccompProfile(std::string_view name);
std::string_view SeccompProfileName(SeccompProfile profile);

// The syscall names each profile lists: denied by baseline, allowed by strict (socket and
// socketpair are not listed: strict allows them for StrictSocketFamilies only).
const std::vector<std::string>& BaselineDenied();
const std::vector<std::string>& StrictAllowed();
const std::vector<int>& StrictSocketFamilies();

// The profile as a BPF program. `extraAllowed`: more calls for `strict` (e.g. a driver's own
// needs); Error naming a call libseccomp does not know.
Result<std::vector<struct sock_filter>> BuildSeccompFilter(
    SeccompProfile profile, const std::vector<std::string>& extraAllowed = {});

// The name of syscall `nr` on this architecture ("nr 999" when unknown).
std::string SyscallName(int nr);

// The syscall seccomp killed `pid` for, from the kernel log; nullopt when the log has no record.
std::optional<std::string> FindSeccompKill(int64_t pid);

}  // namespace mvm::runtime
