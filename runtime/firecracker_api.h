#pragma once
// FirecrackerApi: a client of Firecracker's REST API over its Unix socket (libcurl,
// CURLOPT_UNIX_SOCKET_PATH). The API is described by Firecracker's swagger file; this client
// only moves requests, the driver (firecracker_vmm.h) decides what to send.
//
// Promises:
//  - Every call has a deadline (`timeout`, connect included); a socket that accepts and never
//    answers costs at most that long and yields an Error saying so.
//  - One request at a time per socket path, across every FirecrackerApi object in the process
//    (Firecracker serves one connection at a time; a second concurrent request would queue
//    behind the first and break its deadline).
//  - A 2xx reply is success. Any other status is an Error whose message is Firecracker's own
//    `fault_message` when the body has one ("PUT /snapshot/create: 400: <fault_message>"), else
//    the status and the raw body.

#include <chrono>
#include <string>

#include "common/result.h"

namespace mvm::runtime {

struct FirecrackerReply {
  long status = 0;
  std::string body;
};

class FirecrackerApi {
 public:
  explicit FirecrackerApi(std::string socketPath,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(5000))
      : socket_(std::move(socketPath)), timeout_(timeout) {}

  // `body` empty: no body (GET). Error for transport failures, timeouts and non-2xx replies.
  Result<FirecrackerReply> Call(const std::string& method, const std::string& path,
                                const std::string& body) const;
  Result<FirecrackerReply> Call(const std::string& method, const std::string& path,
                                const std::string& body, std::chrono::milliseconds timeout) const;

  // GET / → the "state" field of InstanceInfo ("Not started", "Running", "Paused").
  Result<std::string> State() const;

  const std::string& socket() const { return socket_; }

 private:
  std::string socket_;
  std::chrono::milliseconds timeout_;
};

// The `fault_message` of a Firecracker error body, or "" when there is none.
std::string FaultMessage(const std::string& body);

}  // namespace mvm::runtime
