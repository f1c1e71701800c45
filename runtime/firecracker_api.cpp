#include "runtime/firecracker_api.h"

#include <curl/curl.h>

#include <map>
#include <memory>
#include <mutex>

#include "runtime/driver_util.h"

namespace mvm::runtime {
namespace {

// Firecracker takes one request at a time: a mutex per socket path, for the process's life
// (a few bytes per instance ever driven).
std::mutex& SocketMutex(const std::string& socket) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::unique_ptr<std::mutex>> registry;
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto& slot = registry[socket];
  if (!slot) slot = std::make_unique<std::mutex>();
  return *slot;
}

size_t Append(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

std::string FaultMessage(const std::string& body) {
  std::optional<Json::Value> json = ParseJsonObject(body);
  if (!json || !(*json)["fault_message"].isString()) return "";
  return (*json)["fault_message"].asString();
}

Result<FirecrackerReply> FirecrackerApi::Call(const std::string& method, const std::string& path,
                                              const std::string& body) const {
  return Call(method, path, body, timeout_);
}

Result<FirecrackerReply> FirecrackerApi::Call(const std::string& method, const std::string& path,
                                              const std::string& body,
                                              std::chrono::milliseconds timeout) const {
  const std::string what = method + " " + path;
  InitCurlOnce();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return Error{what + ": cannot initialise libcurl"};
  FirecrackerReply reply;
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto add_header = [&headers](const char* h) {
    headers.reset(curl_slist_append(headers.release(), h));
  };
  add_header("Accept: application/json");
  add_header("Expect:");  // never wait for 100-continue: Firecracker does not send it
  const std::string url = "http://localhost" + path;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
  if (!body.empty()) {
    add_header("Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  CURLcode rc;
  {
    std::lock_guard<std::mutex> lock(SocketMutex(socket_));
    rc = curl_easy_perform(c);
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return Error{what + ": no answer from the Firecracker API at " + socket_ + " within " +
                 std::to_string(timeout.count()) + " ms"};
  }
  if (rc != CURLE_OK) {
    return Error{what + ": Firecracker API at " + socket_ + ": " + curl_easy_strerror(rc)};
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  if (reply.status < 200 || reply.status > 299) {
    std::string fault = FaultMessage(reply.body);
    return Error{
        what + ": " + std::to_string(reply.status) + ": " +
        (fault.empty() ? (reply.body.empty() ? std::string("(no body)") : reply.body) : fault)};
  }
  return reply;
}

Result<std::string> FirecrackerApi::State() const {
  Result<FirecrackerReply> r = Call("GET", "/", "");
  if (!r.ok()) return r.error();
  std::optional<Json::Value> json = ParseJsonObject(r->body);
  if (!json || !(*json)["state"].isString()) {
    return Error{"GET /: no \"state\" in the reply: " + r->body};
  }
  return (*json)["state"].asString();
}

}  // namespace mvm::runtime
