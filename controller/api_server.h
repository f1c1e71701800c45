#pragma once
// ApiServer: mvmd's local, read-only status API — HTTP/1.1 over a Unix socket (docs/api.md).
//
// Promises:
//  - Reads only from the StatusView it is given; never changes controller state.
//  - Start() either serves on `socketPath` (mode `socketMode`, default 0660) or returns an Error
//    naming the path. A socket left by a crashed mvmd (nobody accepts on it) is replaced; a
//    socket a live server answers on, or a path that is not a socket, is left alone and Start()
//    fails.
//  - Consoles (GET /v1/instances/{t}/{n}/console) are read from the file the driver writes, with
//    bounded answers (the last `limitBytes`, at most 16 MiB); a followed console is a stream that
//    takes a watch slot and ends when its instance is gone or the server stops.
//  - Watches (GET /v1/watch) send every current object, then only what changed, and never poll
//    busily: they sleep in StatusView::WaitForChange. At most `maxWatches` run at once; more
//    are answered 503 so plain requests always find a free thread.
//  - Stop() (and the destructor) returns within about `watchPoll` + `keepAliveTimeout`, open
//    watches and idle keep-alive connections included; open watches end with a clean chunked
//    terminator. (A client stalled half-way through sending a request can hold it up to
//    httplib's 5 s read timeout.) It removes the socket file unless another process has since
//    replaced it.
//  - Thread-safe: Stop() may be called from any thread, more than once.
//
// Not promised: authentication beyond file permissions (whoever can connect can read all
// status), and exclusion of two mvmd racing to start at the same instant (mvmd's state
// directory lock is what keeps a second mvmd out).

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"
#include "controller/status.h"

namespace mvm::controller {

struct ApiServerOptions {
  std::string socketPath = "/run/mvm/api.sock";
  mode_t socketMode = 0660;                         // 0600 to allow only mvmd's user
  std::optional<gid_t> socketGroup;                 // chown the socket to this group (e.g. "mvm")
  int maxWatches = 32;                              // concurrent GET /v1/watch streams
  int requestThreads = 8;                           // threads for everything else
  std::chrono::milliseconds watchPoll{100};         // bounds how long Stop() waits for a watch
  std::chrono::milliseconds watchHeartbeat{10000};  // blank line on an idle watch
  std::chrono::seconds keepAliveTimeout{1};         // idle keep-alive connections; bounds Stop()
  // Where instance directories are (Controller::Options::instancesDir): an instance whose driver
  // record names no console file has it at <instancesDir>/<t>/pools/<p>/instances/<n>/console.log.
  // Empty: only consoles named in driver records are served.
  std::filesystem::path instancesDir;
};

class ApiServer {
 public:
  ApiServer(const StatusView& view, ApiServerOptions options);
  ~ApiServer();  // Stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds the socket and serves on background threads. Fails when already started.
  Status Start();
  // Ends every connection and watch, joins the threads and removes the socket file.
  void Stop();

  const std::string& socketPath() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mvm::controller
