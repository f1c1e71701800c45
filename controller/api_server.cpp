#include "controller/api_server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "controller/api_json.h"
#include "controller/console_file.h"

namespace mvm::controller {
namespace {

using Clock = std::chrono::steady_clock;

std::string Errno(int err) {
  return std::strerror(err);
}

enum class Resource { kTenants, kPools, kInstances };

std::optional<Resource> ParseResource(std::string_view name) {
  if (name == "tenants") return Resource::kTenants;
  if (name == "pools") return Resource::kPools;
  if (name == "instances") return Resource::kInstances;
  return std::nullopt;
}

// Objects of one resource, keyed "name" (tenants) or "tenant/name", in key order.
using Items = std::map<std::string, Json::Value>;

void Reply(httplib::Response& res, int status, const Json::Value& body) {
  res.status = status;
  res.set_content(api::WriteCompact(body) + "\n", "application/json");
}

void ReplyError(httplib::Response& res, int status, const std::string& message) {
  Json::Value body(Json::objectValue);
  body["error"] = message;
  Reply(res, status, body);
}

Json::Value EventsJson(const std::vector<Event>& events) {
  Json::Value out(Json::arrayValue);
  for (const auto& event : events) out.append(api::EncodeEvent(event));
  return out;
}

// The defaulted document of `object` as JSON (built on first use where the parser defers it).
const Json::Value& ManifestJson(const manifests::Object& object) {
  return object.manifest;
}

std::string WatchLine(const char* type, const Json::Value& object) {
  Json::Value line(Json::objectValue);
  line["type"] = type;
  line["object"] = object;
  return api::WriteCompact(line) + "\n";
}

constexpr size_t kConsoleDefaultBytes = size_t{1} << 20;
constexpr size_t kConsoleMaxBytes = size_t{16} << 20;
constexpr size_t kConsoleChunk = size_t{64} << 10;

// A non-negative integer query parameter: nullopt when absent, an Error naming it when malformed
// or outside [min, max].
Result<std::optional<size_t>> CountParam(const httplib::Request& req, const char* name, size_t min,
                                         size_t max) {
  if (!req.has_param(name)) return std::optional<size_t>();
  const std::string text = req.get_param_value(name);
  size_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return Error{std::string(name) + " must be an integer from " + std::to_string(min) + " to " +
                 std::to_string(max) + " (got \"" + text + "\")"};
  }
  return std::optional<size_t>(value);
}

// An instance's own directory (Controller's layout), or nothing when unknown.
std::optional<std::filesystem::path> InstanceDirOf(const Instance& instance,
                                                   const std::filesystem::path& instancesDir) {
  if (instancesDir.empty()) return std::nullopt;
  return instancesDir / instance.key.tenant / "pools" / instance.pool / "instances" /
         instance.key.name;
}

// Where an instance's serial console is: the file its driver record names ("console" in the
// handle data), else console.log in its instance directory, or nothing.
std::optional<std::filesystem::path> ConsolePath(const Instance& instance,
                                                 const std::filesystem::path& instancesDir) {
  Json::Value data;
  if (!instance.handle.data.empty() && api::ParseJson(instance.handle.data, data) &&
      data.isObject() && data["console"].isString() && !data["console"].asString().empty()) {
    return std::filesystem::path(data["console"].asString());
  }
  std::optional<std::filesystem::path> dir = InstanceDirOf(instance, instancesDir);
  if (!dir) return std::nullopt;
  return *dir / "console.log";
}

// The VMM's own counters, as the driver last summarised them in runtime/metrics-summary.json
// (the firecracker driver, on every probe: docs/firecracker.md), or null.
Json::Value VmmMetrics(const Instance& instance, const std::filesystem::path& instancesDir) {
  std::optional<std::filesystem::path> dir = InstanceDirOf(instance, instancesDir);
  if (!dir) return {};
  std::ifstream in(*dir / "runtime" / "metrics-summary.json", std::ios::binary);
  std::string text;
  char buf[4096];
  while (in && text.size() < 65536) {
    in.read(buf, sizeof buf);
    text.append(buf, static_cast<size_t>(in.gcount()));
  }
  Json::Value metrics;
  if (text.empty() || !api::ParseJson(text, metrics) || !metrics.isObject()) return {};
  return metrics;
}

// Connects to an existing socket file to learn whether a server still answers there.
// Returns ok when the path is free to bind (absent, or a stale socket that was removed).
Status ClaimSocketPath(const std::string& path) {
  if (path.empty()) return Error{"API socket path is empty"};
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return Error{"API socket path " + path + " is too long (" + std::to_string(path.size()) +
                 " bytes; a Unix socket path holds at most " +
                 std::to_string(sizeof(sockaddr_un::sun_path) - 1) + ")"};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return Error{"cannot stat API socket " + path + ": " + Errno(errno)};
    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) return Error{"cannot create directory for API socket " + path + ": " + ec.message()};
    return Status::Ok();
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Error{"API socket path " + path + " exists and is not a socket; not replacing it"};
  }
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) return Error{"cannot create a probe socket: " + Errno(errno)};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API takes sockaddr*
  int rc = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int err = rc == 0 ? 0 : errno;
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
    // EAGAIN: the listener's backlog is full, so it is alive too.
    return Error{"another server already answers on API socket " + path +
                 " (is another mvmd running?)"};
  }
  if (err != ECONNREFUSED) {
    return Error{"cannot probe existing API socket " + path + ": " + Errno(err)};
  }
  // Nobody listens: a crashed mvmd left it behind.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error{"cannot remove stale API socket " + path + ": " + Errno(errno)};
  }
  return Status::Ok();
}

}  // namespace

class ApiServer::Impl {
 public:
  Impl(const StatusView& view, ApiServerOptions options)
      : view_(view), options_(std::move(options)) {}
  ~Impl() { Stop(); }

  Status Start();
  void Stop();
  const std::string& socketPath() const { return options_.socketPath; }

 private:
  // The state of one open watch; it lives as long as the response that streams it.
  struct Watch {
    Impl* server;
    Resource resource;
    bool started = false;
    uint64_t seq = 0;
    Items sent;  // what the client has been told, to diff against
    Clock::time_point lastWrite;
    ~Watch() { server->watches_.fetch_sub(1); }
  };

  // The state of one followed console; like a Watch, it holds a watch slot while it lives.
  struct ConsoleStream {
    Impl* server;
    InstanceKey key;
    ConsoleFile file;
    std::string initial;  // the tail sent first
    bool started = false;
    bool ended = false;  // the instance is gone: send what is left, then end
    uint64_t seq = 0;
    ~ConsoleStream() { server->watches_.fetch_sub(1); }
  };

  Status FixSocketFile();
  void StopLocked();
  void Route();
  Items List(Resource resource) const;
  Json::Value ListJson(Resource resource, const char* kind) const;
  void GetTenant(const std::string& name, httplib::Response& res) const;
  void GetPool(const std::string& tenant, const std::string& name, httplib::Response& res) const;
  void GetInstance(const std::string& tenant, const std::string& name,
                   httplib::Response& res) const;
  std::optional<Instance> FindInstance(const InstanceKey& key) const;
  void GetConsole(const httplib::Request& req, httplib::Response& res);
  bool ConsoleStep(ConsoleStream& stream, httplib::DataSink& sink);
  void StartWatch(const httplib::Request& req, httplib::Response& res);
  bool WatchStep(Watch& watch, httplib::DataSink& sink);
  bool WatchStepOrError(Watch& watch, httplib::DataSink& sink);

  const StatusView& view_;
  const ApiServerOptions options_;
  httplib::Server server_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> listenReturned_{false};
  std::atomic<int> watches_{0};

  std::mutex mu_;  // guards the fields below and serialises Start/Stop
  bool started_ = false;
  bool stopped_ = false;
  dev_t socketDev_ = 0;
  ino_t socketIno_ = 0;
};

Status ApiServer::Impl::Start() {
  std::lock_guard lock(mu_);
  if (started_) return Error{"API server already started on " + options_.socketPath};
  const std::string& path = options_.socketPath;
  if (Status claimed = ClaimSocketPath(path); !claimed) return claimed;

  // Watches hold a thread each for their lifetime; the cap on watches keeps `requestThreads`
  // free for everything else. httplib takes ownership of the queue it is handed.
  size_t threads = static_cast<size_t>(std::max(1, options_.requestThreads)) +
                   static_cast<size_t>(std::max(0, options_.maxWatches));
  server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_.set_address_family(AF_UNIX);
  server_.set_keep_alive_timeout(std::max<time_t>(1, options_.keepAliveTimeout.count()));
  Route();

  // For AF_UNIX the "host" is the socket path and the port is ignored.
  errno = 0;
  if (!server_.bind_to_port(path, 80)) {
    return Error{"cannot bind API socket " + path + (errno ? ": " + Errno(errno) : "")};
  }
  thread_ = std::thread([this] {
    server_.listen_after_bind();
    listenReturned_ = true;
  });
  // httplib's stop() is a no-op until the accept loop runs: wait for it, so that stopping
  // right after this cannot leave the loop running forever.
  while (!server_.is_running() && !listenReturned_) std::this_thread::yield();
  started_ = true;

  // The kernel queues connections from bind on, so the window before chmod is the same
  // whether or not the accept loop runs yet; the socket's directory is the real fence.
  Status fixed = FixSocketFile();
  if (!fixed) {
    StopLocked();
    ::unlink(path.c_str());
  }
  return fixed;
}

Status ApiServer::Impl::FixSocketFile() {
  const std::string& path = options_.socketPath;
  if (::chmod(path.c_str(), options_.socketMode) != 0) {
    return Error{"cannot chmod API socket " + path + ": " + Errno(errno)};
  }
  if (options_.socketGroup &&
      ::chown(path.c_str(), static_cast<uid_t>(-1), *options_.socketGroup) != 0) {
    return Error{"cannot chown API socket " + path + " to group " +
                 std::to_string(*options_.socketGroup) + ": " + Errno(errno)};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return Error{"cannot stat API socket " + path + ": " + Errno(errno)};
  }
  socketDev_ = st.st_dev;
  socketIno_ = st.st_ino;
  return Status::Ok();
}

void ApiServer::Impl::Stop() {
  std::lock_guard lock(mu_);
  StopLocked();
}

void ApiServer::Impl::StopLocked() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_ = true;  // watches see this within watchPoll and end their streams
  server_.stop();
  if (thread_.joinable()) thread_.join();
  // Remove the socket only if it is still ours: a newer mvmd may have replaced it.
  struct stat st {};
  const std::string& path = options_.socketPath;
  if (socketIno_ != 0 && ::lstat(path.c_str(), &st) == 0 && st.st_dev == socketDev_ &&
      st.st_ino == socketIno_) {
    ::unlink(path.c_str());
  }
}

void ApiServer::Impl::Route() {
  server_.Get("/v1/healthz", [this](const httplib::Request&, httplib::Response& res) {
    Json::Value body(Json::objectValue);
    body["status"] = "ok";
    body["changeSeq"] = static_cast<Json::UInt64>(view_.ChangeSeq());
    auto desired = view_.Desired();
    body["desiredRevision"] = static_cast<Json::UInt64>(desired ? desired->revision : 0);
    body["warnings"] = static_cast<Json::UInt64>(view_.Warnings().size());
    Reply(res, 200, body);
  });
  server_.Get("/v1/tenants", [this](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, ListJson(Resource::kTenants, "TenantList"));
  });
  server_.Get(R"(/v1/tenants/([^/]+))",
              [this](const httplib::Request& req, httplib::Response& res) {
                GetTenant(req.matches[1], res);
              });
  server_.Get("/v1/pools", [this](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, ListJson(Resource::kPools, "PoolList"));
  });
  server_.Get(R"(/v1/pools/([^/]+)/([^/]+))",
              [this](const httplib::Request& req, httplib::Response& res) {
                GetPool(req.matches[1], req.matches[2], res);
              });
  server_.Get("/v1/instances", [this](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, ListJson(Resource::kInstances, "InstanceList"));
  });
  server_.Get(R"(/v1/instances/([^/]+)/([^/]+))",
              [this](const httplib::Request& req, httplib::Response& res) {
                GetInstance(req.matches[1], req.matches[2], res);
              });
  server_.Get(
      R"(/v1/instances/([^/]+)/([^/]+)/console)",
      [this](const httplib::Request& req, httplib::Response& res) { GetConsole(req, res); });
  server_.Get("/v1/warnings", [this](const httplib::Request&, httplib::Response& res) {
    Json::Value body(Json::objectValue);
    body["items"] = Json::Value(Json::arrayValue);
    for (const auto& warning : view_.Warnings()) body["items"].append(warning);
    Reply(res, 200, body);
  });
  server_.Get("/v1/watch", [this](const httplib::Request& req, httplib::Response& res) {
    StartWatch(req, res);
  });

  // The API is read-only: any other method is refused, whatever the path.
  auto refuse = [](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Allow", "GET");
    ReplyError(res, 405, "method " + req.method + " not allowed: the status API is read-only");
  };
  server_.Post(".*", refuse);
  server_.Put(".*", refuse);
  server_.Patch(".*", refuse);
  server_.Delete(".*", refuse);

  // Runs for every status >= 400; handlers that already wrote a JSON error keep it.
  server_.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 404) {
          ReplyError(res, 404, "no such endpoint: " + req.method + " " + req.path);
        } else {
          ReplyError(res, res.status, "bad request");
        }
        return httplib::Server::HandlerResponse::Handled;
      }));
  server_.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        ReplyError(res, 500, "internal error: " + what);
      });
}

Items ApiServer::Impl::List(Resource resource) const {
  Items items;
  switch (resource) {
    case Resource::kTenants: {
      auto desired = view_.Desired();
      for (const auto& tenant : view_.Tenants()) {
        manifests::TenantQuota quota;
        if (desired) {
          if (const auto* object = desired->Find(manifests::ObjectKey::TenantKey(tenant.name))) {
            if (const auto* spec = object->tenant()) quota = spec->quota;
          }
        }
        items[tenant.name] = api::EncodeTenantStatus(tenant, quota);
      }
      break;
    }
    case Resource::kPools:
      for (const auto& pool : view_.Pools()) {
        items[pool.tenant + "/" + pool.name] = api::EncodePoolStatus(pool);
      }
      break;
    case Resource::kInstances:
      for (const auto& instance : view_.Instances()) {
        items[instance.key.ToString()] = api::EncodeInstance(instance);
      }
      break;
  }
  return items;
}

Json::Value ApiServer::Impl::ListJson(Resource resource, const char* kind) const {
  Json::Value body(Json::objectValue);
  body["kind"] = kind;
  // Read before the items: the items are at least as new as this number.
  body["changeSeq"] = static_cast<Json::UInt64>(view_.ChangeSeq());
  Json::Value& list = body["items"] = Json::Value(Json::arrayValue);
  for (auto& [key, item] : List(resource)) list.append(std::move(item));
  return body;
}

void ApiServer::Impl::GetTenant(const std::string& name, httplib::Response& res) const {
  Items items = List(Resource::kTenants);
  auto it = items.find(name);
  if (it == items.end()) return ReplyError(res, 404, "tenant " + name + " not found");
  Json::Value body = it->second;
  auto desired = view_.Desired();
  const manifests::Object* object =
      desired ? desired->Find(manifests::ObjectKey::TenantKey(name)) : nullptr;
  body["manifest"] = object ? ManifestJson(*object) : Json::Value();
  body["source"] = object ? api::EncodeSource(object->source) : Json::Value();
  body["events"] = EventsJson(view_.Events("Tenant", name));
  Reply(res, 200, body);
}

void ApiServer::Impl::GetPool(const std::string& tenant, const std::string& name,
                              httplib::Response& res) const {
  std::string key = tenant + "/" + name;
  for (const auto& pool : view_.Pools()) {
    if (pool.tenant != tenant || pool.name != name) continue;
    Json::Value body = api::EncodePoolStatus(pool);
    auto desired = view_.Desired();
    const manifests::Object* object =
        desired ? desired->Find(manifests::ObjectKey::PoolKey(tenant, name)) : nullptr;
    body["manifest"] = object ? ManifestJson(*object) : Json::Value();
    body["source"] = object ? api::EncodeSource(object->source) : Json::Value();
    body["events"] = EventsJson(view_.Events("Pool", key));
    return Reply(res, 200, body);
  }
  ReplyError(res, 404, "pool " + key + " not found");
}

std::optional<Instance> ApiServer::Impl::FindInstance(const InstanceKey& key) const {
  std::vector<Instance> all = view_.Instances();
  auto it = std::find_if(all.begin(), all.end(), [&](const Instance& i) { return i.key == key; });
  if (it == all.end()) return std::nullopt;
  return std::move(*it);
}

void ApiServer::Impl::GetInstance(const std::string& tenant, const std::string& name,
                                  httplib::Response& res) const {
  InstanceKey key{tenant, name};
  std::optional<Instance> instance = FindInstance(key);
  if (!instance) return ReplyError(res, 404, "instance " + key.ToString() + " not found");
  Json::Value body = api::EncodeInstance(*instance);
  if (Json::Value metrics = VmmMetrics(*instance, options_.instancesDir); !metrics.isNull()) {
    body["vmm"]["metrics"] = std::move(metrics);
  }
  body["events"] = EventsJson(view_.Events("Instance", key.ToString()));
  Reply(res, 200, body);
}

void ApiServer::Impl::GetConsole(const httplib::Request& req, httplib::Response& res) {
  InstanceKey key{req.matches[1], req.matches[2]};
  auto tail_lines = CountParam(req, "tailLines", 0, SIZE_MAX);
  if (!tail_lines.ok()) return ReplyError(res, 400, tail_lines.error().message);
  auto limit = CountParam(req, "limitBytes", 1, kConsoleMaxBytes);
  if (!limit.ok()) return ReplyError(res, 400, limit.error().message);
  const std::string follow_text = req.get_param_value("follow");
  if (follow_text != "" && follow_text != "true" && follow_text != "false") {
    return ReplyError(res, 400, "follow must be true or false (got \"" + follow_text + "\")");
  }
  const bool follow = follow_text == "true";

  // Read before looking the instance up: its removal after this moves the number (see Watch).
  const uint64_t seq = view_.ChangeSeq();
  std::optional<Instance> instance = FindInstance(key);
  if (!instance) return ReplyError(res, 404, "instance " + key.ToString() + " not found");
  std::optional<std::filesystem::path> path = ConsolePath(*instance, options_.instancesDir);
  if (!path) {
    return ReplyError(res, 404, "instance " + key.ToString() + " has no console file");
  }
  Result<ConsoleFile> file = ConsoleFile::Open(*path);
  if (!file.ok()) {
    return ReplyError(res, 404,
                      "instance " + key.ToString() + " has no console yet (state " +
                          std::string(StateName(instance->state)) +
                          "; its VMM writes one when it boots): " + file.error().message);
  }
  std::string text = file->Tail(limit->value_or(kConsoleDefaultBytes), *tail_lines);
  res.set_header("Cache-Control", "no-store");
  if (!follow) {
    res.status = 200;
    res.set_content(text, "text/plain; charset=utf-8");
    return;
  }
  if (watches_.fetch_add(1) >= options_.maxWatches) {
    watches_.fetch_sub(1);
    return ReplyError(res, 503,
                      "too many open watches and followed consoles (at most " +
                          std::to_string(options_.maxWatches) + ")");
  }
  // From here the stream owns the slot taken above (see Watch).
  auto stream = std::make_shared<ConsoleStream>(this, key, std::move(*file), std::move(text));
  stream->seq = seq;
  res.set_chunked_content_provider("text/plain; charset=utf-8",
                                   [this, stream](size_t, httplib::DataSink& sink) {
                                     try {
                                       return ConsoleStep(*stream, sink);
                                     } catch (const std::exception&) {
                                       // Not into httplib's thread; a text stream has no room for
                                       // an error object.
                                       sink.done();
                                       return true;
                                     }
                                   });
}

// Called by httplib in a loop, like WatchStep: one write per call, or the end of the stream.
bool ApiServer::Impl::ConsoleStep(ConsoleStream& stream, httplib::DataSink& sink) {
  if (!stream.started) {
    stream.started = true;
    if (!stream.initial.empty()) {
      std::string initial = std::move(stream.initial);
      return sink.write(initial.data(), initial.size());
    }
  }
  while (!stopping_) {
    std::string more = stream.file.ReadAppended(kConsoleChunk);
    if (!more.empty()) return sink.write(more.data(), more.size());
    if (stream.ended) break;
    // Sleeps up to watchPoll; a change may be the instance's removal.
    uint64_t seq = view_.WaitForChange(stream.seq, options_.watchPoll);
    if (seq != stream.seq) {
      stream.seq = seq;
      stream.ended = !FindInstance(stream.key).has_value();
    }
  }
  sink.done();
  return true;
}

void ApiServer::Impl::StartWatch(const httplib::Request& req, httplib::Response& res) {
  auto resource = ParseResource(req.get_param_value("resource"));
  if (!resource) {
    return ReplyError(res, 400, "watch needs ?resource=pools, instances or tenants");
  }
  if (watches_.fetch_add(1) >= options_.maxWatches) {
    watches_.fetch_sub(1);
    return ReplyError(
        res, 503, "too many open watches (at most " + std::to_string(options_.maxWatches) + ")");
  }
  // From here the Watch owns the slot taken above and gives it back when the response (and
  // with it the provider holding the Watch) is destroyed, however the stream ends.
  auto watch = std::make_shared<Watch>();
  watch->server = this;
  watch->resource = *resource;
  res.set_header("Cache-Control", "no-store");
  res.set_chunked_content_provider(
      "application/x-ndjson",
      [this, watch](size_t, httplib::DataSink& sink) { return WatchStepOrError(*watch, sink); });
}

bool ApiServer::Impl::WatchStepOrError(Watch& watch, httplib::DataSink& sink) {
  try {
    return WatchStep(watch, sink);
  } catch (const std::exception& e) {
    // An exception must not escape into httplib's worker thread: end the stream with a reason.
    Json::Value error(Json::objectValue);
    error["error"] = std::string("internal error: ") + e.what();
    std::string line = WatchLine("ERROR", error);
    sink.write(line.data(), line.size());
    sink.done();
    return true;
  }
}

// Called by httplib in a loop until it returns false (drop the connection) or calls done().
// Each call writes one batch: the initial list, a diff, or a heartbeat.
bool ApiServer::Impl::WatchStep(Watch& watch, httplib::DataSink& sink) {
  if (!watch.started) {
    watch.started = true;
    watch.seq = view_.ChangeSeq();  // before listing: a change after this is seen as a change
    watch.sent = List(watch.resource);
    std::string out;
    for (const auto& [key, object] : watch.sent) out += WatchLine("ADDED", object);
    Json::Value bookmark(Json::objectValue);
    bookmark["changeSeq"] = static_cast<Json::UInt64>(watch.seq);
    out += WatchLine("BOOKMARK", bookmark);
    watch.lastWrite = Clock::now();
    return sink.write(out.data(), out.size());
  }
  while (!stopping_) {
    uint64_t seq = view_.WaitForChange(watch.seq, options_.watchPoll);
    // cppcheck-suppress oppositeInnerCondition ; Stop() sets it from another thread meanwhile
    if (stopping_) break;
    if (seq != watch.seq) {
      watch.seq = seq;
      Items now = List(watch.resource);
      std::string out;
      for (const auto& [key, object] : now) {
        auto old = watch.sent.find(key);
        if (old == watch.sent.end()) {
          out += WatchLine("ADDED", object);
        } else if (old->second != object) {
          out += WatchLine("MODIFIED", object);
        }
      }
      for (const auto& [key, object] : watch.sent) {
        if (!now.count(key)) out += WatchLine("DELETED", object);
      }
      watch.sent = std::move(now);
      if (!out.empty()) {
        watch.lastWrite = Clock::now();
        return sink.write(out.data(), out.size());
      }
    }
    if (Clock::now() - watch.lastWrite >= options_.watchHeartbeat) {
      // A write is the only way to notice a client that went away while nothing changed.
      watch.lastWrite = Clock::now();
      return sink.write("\n", 1);
    }
  }
  sink.done();  // server stopping: end the chunked stream cleanly
  return true;
}

ApiServer::ApiServer(const StatusView& view, ApiServerOptions options)
    : impl_(std::make_unique<Impl>(view, std::move(options))) {}
ApiServer::~ApiServer() = default;
Status ApiServer::Start() {
  return impl_->Start();
}
void ApiServer::Stop() {
  impl_->Stop();
}
const std::string& ApiServer::socketPath() const {
  return impl_->socketPath();
}

}  // namespace mvm::controller
