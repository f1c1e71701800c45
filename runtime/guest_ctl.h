#pragma once
// GuestCtl: the host end of the guest's `mvm.ctl` virtio-serial control channel
// (docs/guest-image.md, "Control channel"): READY on boot, then one reply line per request.
//
// Promises:
//  - Request sends one line and returns the reply's text after "ok " (or "" for a bare "ok"),
//    or an Error with the guest's "err ..." reply, or a timeout. The guest polls for a host every
//    0.2 s, so the first reply after a (re)connect may take that long.
//  - ReadLine is for lines the guest sends unasked: "READY <boot-id>", "EXIT <rc>", "BYE".

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "runtime/unix_stream.h"

namespace mvm::runtime {

class GuestCtl {
 public:
  static Result<GuestCtl> Connect(const std::string& path, Clock::time_point deadline,
                                  const std::function<bool()>& keepTrying = {});

  Result<std::string> Request(std::string_view line,
                              std::chrono::milliseconds timeout = std::chrono::seconds(10));
  Result<std::string> ReadLine(Clock::time_point deadline) { return stream_.ReadLine(deadline); }
  bool closed() const { return stream_.closed(); }
  bool timedOut() const { return stream_.timedOut(); }

 private:
  explicit GuestCtl(UnixLineStream stream) : stream_(std::move(stream)) {}
  UnixLineStream stream_;
};

}  // namespace mvm::runtime
