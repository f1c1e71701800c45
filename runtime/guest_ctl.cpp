#include "runtime/guest_ctl.h"

namespace mvm::runtime {

Result<GuestCtl> GuestCtl::Connect(const std::string& path, Clock::time_point deadline,
                                   const std::function<bool()>& keepTrying) {
  Result<UnixLineStream> stream = UnixLineStream::Connect(path, deadline, keepTrying);
  if (!stream.ok()) return Error{"control channel " + stream.error().message};
  return GuestCtl(std::move(*stream));
}

Result<std::string> GuestCtl::Request(std::string_view line, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string what = "guest control \"" + std::string(line.substr(0, line.find(' '))) + "\"";
  if (Status s = stream_.WriteAll(std::string(line) + "\n", deadline); !s.ok()) {
    return Error{what + ": " + s.error().message};
  }
  for (;;) {
    Result<std::string> reply = stream_.ReadLine(deadline);
    if (!reply.ok()) return Error{what + ": " + reply.error().message};
    const std::string& r = *reply;
    if (r == "ok") return std::string();
    if (r.rfind("ok ", 0) == 0) return r.substr(3);
    if (r == "err" || r.rfind("err ", 0) == 0) return Error{what + ": guest said " + r};
    // Unasked lines (READY after a reconnect race, EXIT/BYE) are not replies.
  }
}

}  // namespace mvm::runtime
