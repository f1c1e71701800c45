#pragma once
// QmpClient: a small synchronous client for the QEMU Machine Protocol over a Unix socket.
//
// Promises:
//  - Connect reads the greeting and negotiates capabilities (`qmp_capabilities`) before it
//    returns, all within the deadline.
//  - Execute sends one command with a fresh "id", skips asynchronous event lines and replies to
//    other ids, and returns the reply's "return" value, or an Error carrying QEMU's error class
//    and description, or a timeout. Never blocks past its timeout.
//  - One command at a time (QEMU serves one QMP client per socket; callers connect per action and
//    drop the connection when done, which is what keeps the driver stateless).

#include <chrono>
#include <functional>
#include <string>

#include <json/value.h>

#include "common/result.h"
#include "runtime/unix_stream.h"

namespace mvm::runtime {

class QmpClient {
 public:
  static Result<QmpClient> Connect(const std::string& path, Clock::time_point deadline,
                                   const std::function<bool()>& keepTrying = {});

  Result<Json::Value> Execute(const std::string& command,
                              const Json::Value& arguments = Json::Value(),
                              std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // query-status's "status": "running", "paused", "inmigrate", "postmigrate", ...
  Result<std::string> QueryStatus(std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  explicit QmpClient(UnixLineStream stream) : stream_(std::move(stream)) {}
  UnixLineStream stream_;
  uint64_t next_id_ = 1;
};

}  // namespace mvm::runtime
