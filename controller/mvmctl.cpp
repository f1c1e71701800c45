// mvmctl: the operator's command line. `validate` checks manifests offline with exactly the
// rules mvmd applies (same parser, schemas and cross-object checks); `get` and `describe` read
// a running mvmd's status API over its Unix socket, and `logs` prints an instance's serial
// console from it (docs/api.md).
//
// Exit codes: 0 ok; 1 invalid manifests, not found, or mvmd unreachable / answering an error
// (the message on stderr names the socket); 2 usage.

#include <httplib.h>
#include <json/writer.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "controller/api_json.h"
#include "controller/cli_format.h"
#include "manifests/loader.h"
#include "manifests/parser.h"

namespace {

namespace fs = std::filesystem;
using namespace mvm::manifests;

struct ValidateArgs {
  std::vector<std::string> paths;
  std::vector<std::string> image_roots = {"/var/lib/mvm/images"};
  std::string default_runtime = "firecracker";
  std::string output = "table";
};

// Prints rows as left-aligned columns separated by three spaces, like kubectl.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 3, ' ');
    }
    std::cout << line << '\n';
  }
}

int Validate(const ValidateArgs& args) {
  ParseOptions options;
  options.imageRoots.assign(args.image_roots.begin(), args.image_roots.end());
  auto runtime = ParseRuntime(args.default_runtime);
  if (!runtime) {
    std::cerr << "mvmctl: --default-runtime must be firecracker or qemu\n";
    return 2;
  }
  options.defaultRuntime = *runtime;

  std::vector<FileObjects> files;
  Diagnostics diagnostics;
  auto parse = [&](const std::string& name, const std::string& text, Format format) {
    ParseResult result = ParseManifest(name, text, format, options);
    files.push_back({name, std::move(result.objects)});
    diagnostics.insert(diagnostics.end(), result.diagnostics.begin(), result.diagnostics.end());
  };
  for (const auto& path : args.paths) {
    if (path == "-") {
      std::string text((std::istreambuf_iterator<char>(std::cin)),
                       std::istreambuf_iterator<char>());
      size_t first = text.find_first_not_of(" \t\r\n");
      bool json = first != std::string::npos && (text[first] == '{' || text[first] == '[');
      parse("<stdin>", text, json ? Format::kJson : Format::kYaml);
      continue;
    }
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      // A directory is read exactly as mvmd reads it.
      Loader loader({{path}, options});
      auto outcome = loader.LoadAll();
      for (const auto& [key, object] : outcome.state->objects) {
        files.push_back({object->source.file, {object}});
      }
      diagnostics.insert(diagnostics.end(), outcome.state->diagnostics.begin(),
                         outcome.state->diagnostics.end());
      continue;
    }
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
      diagnostics.push_back(
          {path, 0, 0, "", "", "cannot open: " + std::string(std::strerror(errno))});
      continue;
    }
    std::string text;
    char buffer[65536];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) text.append(buffer, n);
    std::fclose(f);
    parse(path, text, FormatForPath(path));
  }
  DesiredState state = Assemble(files, nullptr, diagnostics);
  SortDiagnostics(diagnostics);
  // The same diagnostic can surface twice when a directory is also given file by file.
  diagnostics.erase(std::unique(diagnostics.begin(), diagnostics.end()), diagnostics.end());

  for (const auto& d : diagnostics) std::cerr << d.ToString() << '\n';
  if (!diagnostics.empty()) {
    std::cerr << diagnostics.size() << (diagnostics.size() == 1 ? " error" : " errors") << '\n';
    return 1;
  }
  if (args.output == "json") {
    Json::Value list(Json::arrayValue);
    for (const auto& [key, object] : state.objects) {
      Json::Value item = object->manifest;
      item["status"]["specHash"] = object->specHash;
      item["status"]["source"] = object->source.file;
      list.append(item);
    }
    Json::StreamWriterBuilder builder;
    builder["indentation"] = "  ";
    std::cout << Json::writeString(builder, list) << '\n';
    return 0;
  }
  if (args.output == "name") {
    for (const auto& [key, object] : state.objects) std::cout << key.ToString() << '\n';
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"KIND", "TENANT", "NAME", "RUNTIME", "RUNNING", "WARM", "SLEEPING", "HASH", "SOURCE"}};
  for (const auto& [key, object] : state.objects) {
    const Object& o = *object;
    if (const PoolSpec* pool = o.pool()) {
      rows.push_back({"Pool", key.tenant, key.name, std::string(RuntimeName(pool->runtime)),
                      std::to_string(pool->replicas.running), std::to_string(pool->replicas.warm),
                      std::to_string(pool->replicas.sleeping), o.specHash, o.source.file});
    } else {
      rows.push_back({"Tenant", key.name, key.name, "-", "-", "-", "-", o.specHash, o.source.file});
    }
  }
  PrintTable(rows);
  std::cout << state.objects.size() << " objects valid\n";
  return 0;
}

// --- get / describe: the status API client ------------------------------------------------

namespace api = mvm::controller::api;
namespace cli = mvm::controller::cli;
using mvm::controller::Instance;
using mvm::controller::PoolStatus;

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

enum class Resource { kTenants, kPools, kInstances };

// kubectl-style names and short forms.
std::optional<Resource> ParseResource(const std::string& name) {
  if (name == "tenants" || name == "tenant" || name == "tn") return Resource::kTenants;
  if (name == "pools" || name == "pool" || name == "po") return Resource::kPools;
  if (name == "instances" || name == "instance" || name == "inst" || name == "vm" ||
      name == "vms") {
    return Resource::kInstances;
  }
  return std::nullopt;
}

const char* Plural(Resource r) {
  return r == Resource::kTenants ? "tenants" : r == Resource::kPools ? "pools" : "instances";
}
const char* Singular(Resource r) {
  return r == Resource::kTenants ? "tenant" : r == Resource::kPools ? "pool" : "instance";
}

int64_t WallNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// An error to print (prefixed "mvmctl: ") and the exit code that goes with it.
struct Failure {
  std::string message;
  int code = kExitError;
};

struct Reply {
  int status = 0;
  Json::Value body;
};

std::string PercentEncode(const std::string& text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// Why connecting to the socket fails, in words (httplib reports only "Connection").
std::string ConnectError(const std::string& socket_path) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof addr.sun_path) return "socket path too long";
  mvm::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return std::strerror(errno);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API takes sockaddr*
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    return "connection dropped";
  }
  return std::strerror(errno);
}

class ApiClient {
 public:
  explicit ApiClient(std::string socket_path) : socket_(std::move(socket_path)) {}

  const std::string& socket() const { return socket_; }

  // GET `path`: the status and body as sent, or why mvmd could not be asked.
  mvm::Result<std::pair<int, std::string>> GetText(const std::string& path) const {
    httplib::Client client(socket_);
    client.set_address_family(AF_UNIX);
    client.set_connection_timeout(5);
    client.set_read_timeout(30);
    httplib::Result result = client.Get(path.c_str());
    if (!result) return Unreachable(result.error());
    return std::make_pair(result->status, std::move(result->body));
  }

  // GET `path`: the status and JSON body, or why mvmd could not be asked.
  mvm::Result<Reply> Get(const std::string& path) const {
    auto text = GetText(path);
    if (!text) return text.error();
    Reply reply;
    reply.status = text->first;
    std::string error;
    if (!api::ParseJson(text->second, reply.body, &error)) {
      return mvm::Error{"mvmd at " + socket_ + " answered " + path +
                        " with invalid JSON: " + error};
    }
    return reply;
  }

  // Streams GET `path`, handing every piece of a 200 body to `on_data` until it returns false or
  // the stream ends; `read_timeout` bounds each wait for data. The error that ended it, if any;
  // nullopt when `on_data` stopped it or mvmd ended the stream cleanly (then `*ended` is true).
  std::optional<std::string> StreamRaw(const std::string& path, std::chrono::seconds read_timeout,
                                       const std::function<bool(const char*, size_t)>& on_data,
                                       bool* ended) const {
    httplib::Client client(socket_);
    client.set_address_family(AF_UNIX);
    client.set_connection_timeout(5);
    client.set_read_timeout(read_timeout.count());
    int status = 0;
    std::string error_body;
    bool stopped = false;
    httplib::Result result = client.Get(
        path.c_str(),
        [&](const httplib::Response& response) {
          status = response.status;
          return true;
        },
        [&](const char* data, size_t length) {
          if (status != 200) {
            error_body.append(data, length);
            return true;
          }
          stopped = !on_data(data, length);
          return !stopped;
        });
    *ended = false;
    if (stopped) return std::nullopt;
    if (status != 0 && status != 200) return ErrorText(status, error_body);
    if (!result) {
      if (status == 200) return "the stream from mvmd at " + socket_ + " broke";
      return Unreachable(result.error()).message;
    }
    *ended = true;
    return std::nullopt;
  }

  // Streams GET `path`, calling `on_line` for each non-empty line until it returns false or the
  // stream ends. Returns the error that ended it, if any.
  std::optional<std::string> Stream(const std::string& path,
                                    const std::function<bool(const std::string&)>& on_line) const {
    std::string pending;
    auto on_data = [&](const char* data, size_t length) {
      pending.append(data, length);
      size_t start = 0;
      for (size_t end; (end = pending.find('\n', start)) != std::string::npos; start = end + 1) {
        std::string line = pending.substr(start, end - start);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // heartbeat
        if (!on_line(line)) return false;
      }
      pending.erase(0, start);
      return true;
    };
    bool ended = false;
    // mvmd sends a heartbeat every 10 s on a quiet watch.
    auto error = StreamRaw(path, std::chrono::seconds(60), on_data, &ended);
    if (error || !ended) return error;
    return "mvmd at " + socket_ + " ended the watch (is it stopping?)";
  }

  // "not found" and friends, from an error reply's {"error": ...}.
  std::string ErrorText(int status, const std::string& body) const {
    Json::Value json;
    std::string message;
    if (api::ParseJson(body, json) && json.isObject() && json["error"].isString()) {
      message = json["error"].asString();
    } else {
      message = "HTTP " + std::to_string(status);
    }
    return message + " (mvmd at " + socket_ + ")";
  }

 private:
  mvm::Error Unreachable(httplib::Error error) const {
    std::string why =
        error == httplib::Error::Connection ? ConnectError(socket_) : httplib::to_string(error);
    return mvm::Error{"cannot talk to mvmd at " + socket_ + ": " + why +
                      " (is mvmd running? set --socket or MVM_SOCKET)"};
  }

  std::string socket_;
};

// Objects of one resource as the API returns them, with their decoded forms for tables.
struct Listing {
  Resource resource;
  std::vector<Json::Value> items;
};

std::string KeyOf(Resource resource, const Json::Value& item) {
  std::string name = item["name"].asString();
  return resource == Resource::kTenants ? name : item["tenant"].asString() + "/" + name;
}

// Does `item` answer to NAME (either "tenant/name" or a bare "name")?
bool Matches(Resource resource, const Json::Value& item, const std::string& name) {
  if (name.empty()) return true;
  if (name.find('/') != std::string::npos) return KeyOf(resource, item) == name;
  return item["name"].asString() == name;
}

std::variant<Listing, Failure> FetchList(const ApiClient& client, Resource resource,
                                         const std::string& tenant) {
  auto reply = client.Get(std::string("/v1/") + Plural(resource));
  if (!reply) return Failure{reply.error().message};
  if (reply->status != 200) {
    return Failure{client.ErrorText(reply->status, api::WriteCompact(reply->body))};
  }
  Listing listing{resource, {}};
  for (const auto& item : reply->body["items"]) {
    if (!tenant.empty()) {
      std::string owner =
          resource == Resource::kTenants ? item["name"].asString() : item["tenant"].asString();
      if (owner != tenant) continue;
    }
    listing.items.push_back(item);
  }
  return listing;
}

// Resolves NAME ("tenant/name", or "name" when only one tenant has it) to the API key.
std::variant<std::string, Failure> Resolve(const ApiClient& client, Resource resource,
                                           const std::string& name, const std::string& tenant) {
  if (resource == Resource::kTenants || name.find('/') != std::string::npos) {
    if (resource != Resource::kTenants && !tenant.empty() &&
        name.substr(0, name.find('/')) != tenant) {
      return Failure{"--tenant " + tenant + " disagrees with " + name, kExitUsage};
    }
    return name;
  }
  auto listed = FetchList(client, resource, tenant);
  if (auto* failure = std::get_if<Failure>(&listed)) return *failure;
  std::vector<std::string> keys;
  for (const auto& item : std::get<Listing>(listed).items) {
    if (Matches(resource, item, name)) keys.push_back(KeyOf(resource, item));
  }
  if (keys.empty()) {
    return Failure{std::string(Singular(resource)) + " " + name + " not found (mvmd at " +
                   client.socket() + ")"};
  }
  if (keys.size() > 1) {
    std::string list;
    for (const auto& key : keys) list += (list.empty() ? "" : ", ") + key;
    return Failure{std::string(Singular(resource)) + " name " + name + " is ambiguous: " + list +
                   "; give TENANT/NAME"};
  }
  return keys.front();
}

std::string DetailPath(Resource resource, const std::string& key) {
  std::string path = std::string("/v1/") + Plural(resource) + "/";
  size_t slash = key.find('/');
  if (slash == std::string::npos) return path + PercentEncode(key);
  return path + PercentEncode(key.substr(0, slash)) + "/" + PercentEncode(key.substr(slash + 1));
}

std::variant<Json::Value, Failure> FetchDetail(const ApiClient& client, Resource resource,
                                               const std::string& key) {
  auto reply = client.Get(DetailPath(resource, key));
  if (!reply) return Failure{reply.error().message};
  if (reply->status != 200) {
    return Failure{client.ErrorText(reply->status, api::WriteCompact(reply->body))};
  }
  return reply->body;
}

cli::Row RowOf(Resource resource, const Json::Value& item, int64_t now, bool wide,
               const std::string& prefix) {
  switch (resource) {
    case Resource::kTenants:
      return cli::TenantRow(api::DecodeTenant(item), now, wide, prefix);
    case Resource::kPools:
      return cli::PoolRow(api::DecodePoolStatus(item), now, wide, prefix);
    case Resource::kInstances:
      return cli::InstanceRow(api::DecodeInstance(item), now, wide, prefix);
  }
  return {};
}

cli::Row HeaderOf(Resource resource, bool wide) {
  switch (resource) {
    case Resource::kTenants:
      return cli::TenantHeader(wide);
    case Resource::kPools:
      return cli::PoolHeader(wide);
    case Resource::kInstances:
      return cli::InstanceHeader(wide);
  }
  return {};
}

struct GetArgs {
  std::string resources;
  std::string name;
  std::string output;
  std::string tenant;
  bool watch = false;
  bool watch_events = false;
};

int Fail(const Failure& failure) {
  std::cerr << "mvmctl: " << failure.message << '\n';
  return failure.code;
}

int Watch(const ApiClient& client, Resource resource, const GetArgs& args) {
  bool wide = args.output == "wide";
  bool table = args.output.empty() || wide;
  std::vector<Json::Value> initial;
  bool synced = false;
  std::vector<size_t> widths;
  auto header = [&] {
    cli::Row row = HeaderOf(resource, wide);
    if (args.watch_events) row.insert(row.begin(), "EVENT");
    return row;
  };
  auto row = [&](const std::string& type, const Json::Value& object) {
    cli::Row r = RowOf(resource, object, WallNowMs(), wide, "");
    if (args.watch_events) r.insert(r.begin(), type);
    return r;
  };
  auto on_line = [&](const std::string& line) {
    Json::Value event;
    if (!api::ParseJson(line, event) || !event.isObject()) return true;
    std::string type = event["type"].asString();
    const Json::Value& object = event["object"];
    if (type == "ERROR") {
      std::cerr << "mvmctl: mvmd reported: " << object["error"].asString() << '\n';
      return false;
    }
    if (type == "BOOKMARK") {
      if (!synced && table) {
        cli::Table t = {header()};
        for (const auto& item : initial) t.push_back(row("ADDED", item));
        widths = cli::ColumnWidths(t);
        if (args.watch_events) widths[0] = std::max<size_t>(widths[0], 8);  // "MODIFIED"
        for (const auto& r : t) std::cout << cli::FormatRow(r, widths);
      }
      synced = true;
      std::cout.flush();
      return true;
    }
    if (!object.isObject() || !Matches(resource, object, args.name)) return true;
    if (!args.tenant.empty()) {
      std::string owner =
          resource == Resource::kTenants ? object["name"].asString() : object["tenant"].asString();
      if (owner != args.tenant) return true;
    }
    if (args.output == "json") {
      std::cout << api::WriteCompact(event) << '\n';
    } else if (args.output == "yaml") {
      std::cout << "---\n" << cli::ToYaml(event);
    } else if (!synced) {
      initial.push_back(object);
    } else {
      std::cout << cli::FormatRow(row(type, object), widths);
    }
    std::cout.flush();
    return true;
  };
  auto error = client.Stream(std::string("/v1/watch?resource=") + Plural(resource), on_line);
  if (error) {
    std::cerr << "mvmctl: " << *error << '\n';
    return kExitError;
  }
  return kExitOk;
}

int Get(const ApiClient& client, const GetArgs& args) {
  std::vector<Resource> resources;
  std::stringstream list(args.resources);
  for (std::string part; std::getline(list, part, ',');) {
    auto resource = ParseResource(part);
    if (!resource) {
      std::cerr << "mvmctl: unknown resource type \"" << part
                << "\" (want tenants, pools or instances)\n";
      return kExitUsage;
    }
    if (std::find(resources.begin(), resources.end(), *resource) == resources.end()) {
      resources.push_back(*resource);
    }
  }
  if (resources.empty()) {
    std::cerr << "mvmctl: name a resource type: tenants, pools or instances\n";
    return kExitUsage;
  }
  if (resources.size() > 1 && (!args.name.empty() || args.watch)) {
    std::cerr << "mvmctl: " << (args.watch ? "--watch" : "a NAME")
              << " needs a single resource type\n";
    return kExitUsage;
  }
  if (args.watch) return Watch(client, resources.front(), args);

  bool wide = args.output == "wide";
  int64_t now = WallNowMs();
  std::vector<Listing> listings;
  for (Resource resource : resources) {
    if (!args.name.empty()) {
      auto key = Resolve(client, resource, args.name, args.tenant);
      if (auto* failure = std::get_if<Failure>(&key)) return Fail(*failure);
      auto detail = FetchDetail(client, resource, std::get<std::string>(key));
      if (auto* failure = std::get_if<Failure>(&detail)) return Fail(*failure);
      listings.push_back({resource, {std::get<Json::Value>(detail)}});
      continue;
    }
    auto listed = FetchList(client, resource, args.tenant);
    if (auto* failure = std::get_if<Failure>(&listed)) return Fail(*failure);
    listings.push_back(std::move(std::get<Listing>(listed)));
  }

  if (args.output == "json" || args.output == "yaml") {
    Json::Value out;
    if (!args.name.empty()) {
      out = listings.front().items.front();
    } else {
      out["kind"] = "List";
      out["items"] = Json::Value(Json::arrayValue);
      for (const auto& listing : listings) {
        for (const auto& item : listing.items) out["items"].append(item);
      }
    }
    std::cout << (args.output == "json" ? api::WritePretty(out) + "\n" : cli::ToYaml(out));
    return kExitOk;
  }
  bool printed = false;
  for (const auto& listing : listings) {
    if (listing.items.empty()) continue;
    std::string prefix = resources.size() > 1 ? std::string(Singular(listing.resource)) + "/" : "";
    cli::Table table = {HeaderOf(listing.resource, wide)};
    for (const auto& item : listing.items) {
      table.push_back(RowOf(listing.resource, item, now, wide, prefix));
    }
    if (printed) std::cout << '\n';
    std::cout << cli::RenderTable(table);
    printed = true;
  }
  if (!printed) std::cerr << "No resources found.\n";
  return kExitOk;
}

int Describe(const ApiClient& client, const std::string& kind, const std::string& name,
             const std::string& tenant) {
  auto resource = ParseResource(kind);
  if (!resource) {
    std::cerr << "mvmctl: cannot describe \"" << kind << "\" (want pool, instance or tenant)\n";
    return kExitUsage;
  }
  auto key = Resolve(client, *resource, name, tenant);
  if (auto* failure = std::get_if<Failure>(&key)) return Fail(*failure);
  auto detail = FetchDetail(client, *resource, std::get<std::string>(key));
  if (auto* failure = std::get_if<Failure>(&detail)) return Fail(*failure);
  const Json::Value& json = std::get<Json::Value>(detail);
  int64_t now = WallNowMs();
  switch (*resource) {
    case Resource::kPools:
      std::cout << cli::DescribePool(api::DecodePoolDetail(json), now);
      break;
    case Resource::kInstances:
      std::cout << cli::DescribeInstance(api::DecodeInstanceDetail(json), now);
      break;
    case Resource::kTenants:
      std::cout << cli::DescribeTenant(api::DecodeTenantDetail(json), now);
      break;
  }
  return kExitOk;
}

struct LogsArgs {
  std::string name;
  std::string tenant;
  int64_t tail = -1;        // lines; -1: everything within the byte limit
  int64_t limit_bytes = 0;  // 0: mvmd's default (1 MiB)
  bool follow = false;
};

// Prints an instance's serial console; with --follow, then what the guest writes until the
// instance is gone or mvmd stops (exit 0), or the stream breaks (exit 1).
int Logs(const ApiClient& client, const LogsArgs& args) {
  auto key = Resolve(client, Resource::kInstances, args.name, args.tenant);
  if (auto* failure = std::get_if<Failure>(&key)) return Fail(*failure);
  std::string path = DetailPath(Resource::kInstances, std::get<std::string>(key)) + "/console";
  std::string query;
  if (args.tail >= 0) query += "&tailLines=" + std::to_string(args.tail);
  if (args.limit_bytes > 0) query += "&limitBytes=" + std::to_string(args.limit_bytes);
  if (args.follow) query += "&follow=true";
  if (!query.empty()) path += "?" + query.substr(1);
  if (!args.follow) {
    auto reply = client.GetText(path);
    if (!reply) return Fail({reply.error().message});
    if (reply->first != 200) return Fail({client.ErrorText(reply->first, reply->second)});
    std::cout << reply->second << std::flush;
    return kExitOk;
  }
  auto on_data = [](const char* data, size_t length) {
    std::cout.write(data, static_cast<std::streamsize>(length));
    std::cout.flush();
    return static_cast<bool>(std::cout);
  };
  bool ended = false;
  // A console may stay quiet for days; a read wait longer than this overflows httplib's poll().
  auto error = client.StreamRaw(path, std::chrono::hours(24 * 24), on_data, &ended);
  if (error) return Fail({*error});
  return kExitOk;
}

std::string DefaultSocket() {
  const char* env = std::getenv("MVM_SOCKET");
  return env && *env ? env : "/run/mvm/api.sock";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mvmctl: inspect and validate mvm microVM fleets"};
  app.require_subcommand(1);
  app.fallthrough();  // --socket may come after the subcommand too

  std::string socket_path = DefaultSocket();
  app.add_option("--socket", socket_path, "mvmd's API socket (env MVM_SOCKET)")
      ->capture_default_str();

  ValidateArgs validate;
  CLI::App* cmd = app.add_subcommand("validate",
                                     "Check manifests with mvmd's own rules; exit 1 "
                                     "and list every error when any is invalid");
  cmd->add_option("-f,--filename", validate.paths, "File, directory or - for stdin (repeatable)");
  cmd->add_option("paths", validate.paths, "More files or directories");
  // One directory per occurrence: a vector option would otherwise swallow the paths after it.
  cmd->add_option("--image-root", validate.image_roots,
                  "Directory image paths must stay inside (repeatable)")
      ->allow_extra_args(false)
      ->capture_default_str();
  cmd->add_option("--default-runtime", validate.default_runtime,
                  "Runtime for pools that name none (firecracker|qemu)")
      ->capture_default_str();
  cmd->add_option("-o,--output", validate.output, "table, json or name")
      ->check(CLI::IsMember({"table", "json", "name"}))
      ->capture_default_str();
  cmd->callback([&] {
    if (validate.paths.empty()) throw CLI::ValidationError("validate", "give at least one -f PATH");
  });

  GetArgs get;
  CLI::App* get_cmd = app.add_subcommand(
      "get", "List tenants, pools or instances from mvmd (e.g. get pools,instances)");
  get_cmd->add_option("resource", get.resources, "tenants|pools|instances, comma-separated")
      ->required();
  get_cmd->add_option("name", get.name, "NAME or TENANT/NAME");
  get_cmd->add_option("-o,--output", get.output, "wide, json or yaml (default: table)")
      ->check(CLI::IsMember({"", "wide", "json", "yaml"}));
  get_cmd->add_option("-t,--tenant", get.tenant, "Only objects of this tenant");
  get_cmd->add_flag("-w,--watch", get.watch, "Print the table, then a row per change");
  get_cmd->add_flag("--output-watch-events", get.watch_events,
                    "With --watch: add an EVENT column (ADDED, MODIFIED, DELETED)");

  std::string describe_kind, describe_name, describe_tenant;
  CLI::App* describe_cmd =
      app.add_subcommand("describe", "Show one pool, instance or tenant in detail, with events");
  describe_cmd->add_option("kind", describe_kind, "pool|instance|tenant")->required();
  describe_cmd->add_option("name", describe_name, "NAME or TENANT/NAME")->required();
  describe_cmd->add_option("-t,--tenant", describe_tenant, "Tenant of NAME");

  LogsArgs logs;
  CLI::App* logs_cmd = app.add_subcommand("logs", "Print an instance's serial console");
  logs_cmd->add_option("name", logs.name, "NAME or TENANT/NAME of the instance")->required();
  logs_cmd->add_option("-t,--tenant", logs.tenant, "Tenant of NAME");
  logs_cmd->add_option("--tail", logs.tail, "Only the last N lines (default: all)")
      ->check(CLI::NonNegativeNumber);
  logs_cmd
      ->add_option("--limit-bytes", logs.limit_bytes,
                   "Only the last N bytes (default 1 MiB, at most 16 MiB)")
      ->check(CLI::Range(int64_t{1}, int64_t{16} << 20));
  logs_cmd->add_flag("-f,--follow", logs.follow,
                     "Then print what the guest writes, until the instance is gone");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);  // prints help or the error
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (cmd->parsed()) return Validate(validate);
  ApiClient client(socket_path);
  if (get_cmd->parsed()) return Get(client, get);
  if (describe_cmd->parsed())
    return Describe(client, describe_kind, describe_name, describe_tenant);
  if (logs_cmd->parsed()) return Logs(client, logs);
  return kExitOk;
}
