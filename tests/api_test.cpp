// Tests of mvmd's status API (controller/api_server.h) over a real Unix socket, its JSON codec
// (api_json.h) and mvmctl's formatting (cli_format.h).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "controller/api_json.h"
#include "controller/api_server.h"
#include "controller/cli_format.h"
#include "tests/test_util.h"

namespace mvm::controller {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kNow = 1'700'000'000'000;  // a fixed "now" for formatting tests

// --- A StatusView whose content the test changes --------------------------------------------

struct Content {
  std::shared_ptr<const manifests::DesiredState> desired;
  std::vector<TenantStatus> tenants;
  std::vector<PoolStatus> pools;
  std::vector<Instance> instances;
  std::vector<Event> events;
  std::vector<std::string> warnings;
};

class FakeStatus final : public StatusView {
 public:
  explicit FakeStatus(Content content) : content_(std::move(content)) {}

  // Changes the content and bumps ChangeSeq, waking watchers.
  void Update(const std::function<void(Content&)>& change) {
    {
      std::lock_guard lock(mu_);
      change(content_);
      ++seq_;
    }
    cv_.notify_all();
  }

  std::shared_ptr<const manifests::DesiredState> Desired() const override {
    std::lock_guard lock(mu_);
    return content_.desired;
  }
  std::vector<TenantStatus> Tenants() const override {
    std::lock_guard lock(mu_);
    return content_.tenants;
  }
  std::vector<PoolStatus> Pools() const override {
    std::lock_guard lock(mu_);
    return content_.pools;
  }
  std::vector<Instance> Instances() const override {
    std::lock_guard lock(mu_);
    return content_.instances;
  }
  std::vector<Event> Events(const std::string& kind, const std::string& key) const override {
    std::lock_guard lock(mu_);
    std::vector<Event> out;
    for (const auto& e : content_.events) {
      if (e.objectKind == kind && e.objectKey == key) out.push_back(e);
    }
    return out;
  }
  std::vector<std::string> Warnings() const override {
    std::lock_guard lock(mu_);
    return content_.warnings;
  }
  uint64_t ChangeSeq() const override {
    std::lock_guard lock(mu_);
    return seq_;
  }
  uint64_t WaitForChange(uint64_t after, std::chrono::milliseconds timeout) const override {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return seq_ > after; });
    return seq_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Content content_;
  uint64_t seq_ = 1;
};

// --- Fixtures ------------------------------------------------------------------------------

manifests::PoolSpec WorkersSpec() {
  manifests::PoolSpec spec;
  spec.runtime = manifests::Runtime::kQemu;
  spec.image = {"/img/vmlinux", "/img/rootfs.ext4", std::nullopt, "console=ttyS0"};
  spec.cmd = {"/app/bin/worker", "--queue", "jobs now"};
  spec.env = {{"QUEUE", "jobs"}};
  spec.resources = {2, 512, 2048, {}};
  spec.replicas = {3, 2, 1};
  spec.policy.minRunningSeconds = 60;
  spec.policy.idleToWarmSeconds = 300;
  return spec;
}

std::shared_ptr<const manifests::DesiredState> MakeDesired() {
  auto state = std::make_shared<manifests::DesiredState>();
  state->revision = 7;

  auto tenant = std::make_shared<manifests::Object>();
  tenant->key = manifests::ObjectKey::TenantKey("acme");
  manifests::TenantSpec tenant_spec;
  tenant_spec.quota.vcpus = 16;
  tenant_spec.quota.memoryMiB = 8192;
  tenant_spec.quota.running = 20;
  tenant_spec.subnet = "10.240.1.0/24";
  tenant->spec = tenant_spec;
  Json::Value tenant_manifest;
  tenant_manifest["apiVersion"] = "mvm.dev/v1alpha1";
  tenant_manifest["kind"] = "Tenant";
  tenant_manifest["metadata"]["name"] = "acme";
  tenant_manifest["spec"]["quota"]["vcpus"] = 16;
  tenant_manifest["spec"]["network"]["subnet"] = "10.240.1.0/24";
  tenant->manifest = manifests::Manifest(tenant_manifest);
  tenant->source = {"/etc/mvm/manifests.d/acme.yaml", 1, 1};
  tenant->specHash = "1111111111111111";
  state->objects[tenant->key] = tenant;

  auto pool = std::make_shared<manifests::Object>();
  pool->key = manifests::ObjectKey::PoolKey("acme", "workers");
  pool->spec = WorkersSpec();
  Json::Value pool_manifest;
  pool_manifest["apiVersion"] = "mvm.dev/v1alpha1";
  pool_manifest["kind"] = "Pool";
  pool_manifest["metadata"]["name"] = "workers";
  pool_manifest["metadata"]["tenant"] = "acme";
  pool_manifest["metadata"]["labels"]["team"] = "web";
  pool_manifest["spec"] = api::EncodePoolSpec(WorkersSpec());
  pool->manifest = manifests::Manifest(pool_manifest);
  pool->source = {"/etc/mvm/manifests.d/acme.yaml", 12, 1};
  pool->specHash = "0a1b2c3d4e5f6789";
  pool->generation = 3;
  state->objects[pool->key] = pool;
  return state;
}

PoolStatus MakePool(const std::string& tenant, const std::string& name) {
  PoolStatus p;
  p.tenant = tenant;
  p.name = name;
  p.generation = 3;
  p.observedGeneration = 2;
  p.specHash = "0a1b2c3d4e5f6789";
  p.desired = {3, 2, 1};
  p.current = {2, 2, 0};
  p.ready = 4;
  p.instances = 5;
  p.conditions = {{"Ready", false, "Scaling", "2 of 3 running", 2, kNow - 60'000},
                  {"Progressing", true, "Starting", "starting workers-x1", 3, kNow - 5'000}};
  p.firstSeenMs = kNow - 192'000;
  return p;
}

Instance MakeInstance(const std::string& tenant, const std::string& pool, const std::string& name,
                      InstanceState state) {
  Instance i;
  i.key = {tenant, name};
  i.pool = pool;
  i.state = state;
  i.target = InstanceState::kRunning;
  i.specHash = "0a1b2c3d4e5f6789";
  i.generation = 3;
  i.spec = std::make_shared<const manifests::PoolSpec>(WorkersSpec());
  i.handle = {4242, 987654, "/var/lib/mvm/run/qmp.sock", "{\"private\":true}"};
  i.createdAtMs = kNow - 45'000;
  i.stateSinceMs = kNow - 30'000;
  i.updatedAtMs = kNow - 1'000;
  return i;
}

Content MakeContent() {
  Content c;
  c.desired = MakeDesired();
  TenantStatus acme;
  acme.name = "acme";
  acme.usage = {4, 1024, 4096, 2, 2, 0};
  acme.pools = 1;
  acme.instances = 4;
  acme.firstSeenMs = kNow - 2 * 86'400'000LL;
  c.tenants = {acme};
  // Deliberately out of key order: the API sorts.
  c.pools = {MakePool("beta", "web"), MakePool("acme", "workers")};
  c.instances = {MakeInstance("acme", "workers", "workers-b2", InstanceState::kWarm),
                 MakeInstance("acme", "workers", "workers-a1", InstanceState::kRunning)};
  c.events = {
      {"Pool", "acme/workers", EventType::kNormal, "Scaled", "running 1 -> 2", "pool-reconciler",
       kNow - 600'000, kNow - 120'000, 3},
      {"Pool", "beta/web", EventType::kNormal, "Other", "not acme", "pool-reconciler", kNow, kNow,
       1},
      {"Instance", "acme/workers-a1", EventType::kWarning, "StartFailed", "no kvm",
       "instance-reconciler", kNow - 30'000, kNow - 30'000, 1},
      {"Tenant", "acme", EventType::kWarning, "QuotaExceeded", "vcpus 16/16", "pool-reconciler",
       kNow - 5'000, kNow - 5'000, 1},
  };
  c.warnings = {"manifests.d/bad.yaml:3:1: Pool acme/x: spec.replicas.warm: must be >= 0",
                "cgroup controller cpu unavailable"};
  return c;
}

// --- HTTP over the socket ------------------------------------------------------------------

struct HttpReply {
  int status = 0;
  Json::Value body;
  std::string contentType;
};

struct TextReply {
  int status = 0;
  std::string body;
  std::string contentType;
};

TextReply GetText(const std::string& socket, const std::string& path, const char* method = "GET") {
  httplib::Client client(socket);
  client.set_address_family(AF_UNIX);
  client.set_read_timeout(10);
  httplib::Result result =
      std::string(method) == "POST" ? client.Post(path.c_str()) : client.Get(path.c_str());
  if (!result) {
    ADD_FAILURE() << "request " << path << " failed: " << httplib::to_string(result.error());
    return {};
  }
  return {result->status, result->body, result->get_header_value("Content-Type")};
}

HttpReply Get(const std::string& socket, const std::string& path, const char* method = "GET") {
  TextReply text = GetText(socket, path, method);
  HttpReply reply;
  reply.status = text.status;
  reply.contentType = text.contentType;
  if (text.status == 0) return reply;
  std::string error;
  EXPECT_TRUE(api::ParseJson(text.body, reply.body, &error)) << text.body << error;
  return reply;
}

// Lines of a watch stream, read on a background thread.
class WatchStream {
 public:
  WatchStream(const std::string& socket, const std::string& path) : client_(socket) {
    client_.set_address_family(AF_UNIX);
    client_.set_read_timeout(30);
    thread_ = std::thread([this, path] {
      std::string pending;
      client_.Get(
          path.c_str(),
          [&](const httplib::Response& response) {
            std::lock_guard lock(mu_);
            status_ = response.status;
            return true;
          },
          [&](const char* data, size_t length) {
            pending.append(data, length);
            for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
              std::lock_guard lock(mu_);
              lines_.push_back(pending.substr(0, nl));
              pending.erase(0, nl + 1);
              cv_.notify_all();
            }
            return true;
          });
      std::lock_guard lock(mu_);
      ended_ = true;
      cv_.notify_all();
    });
  }
  // Drops the connection, as a client that goes away does.
  ~WatchStream() {
    client_.stop();
    thread_.join();
  }

  // The next line as sent (without its newline), or nullopt when none arrives within `timeout`.
  std::optional<std::string> NextLine(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (!lines_.empty()) {
        std::string line = std::move(lines_.front());
        lines_.pop_front();
        return line;
      }
      if (ended_ || cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
        if (lines_.empty()) return std::nullopt;
      }
    }
  }
  // The next non-blank line as JSON, or nullopt when none arrives within `timeout`.
  std::optional<Json::Value> Next(std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      std::optional<std::string> line = NextLine(std::max(left, 0ms));
      if (!line) return std::nullopt;
      if (line->empty()) continue;  // heartbeat
      Json::Value json;
      EXPECT_TRUE(api::ParseJson(*line, json)) << *line;
      return json;
    }
  }
  // True once the stream has ended, waiting at most `timeout`.
  bool WaitEnded(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return ended_; });
  }
  int status() {
    std::lock_guard lock(mu_);
    return status_;
  }

 private:
  httplib::Client client_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> lines_;
  int status_ = 0;
  bool ended_ = false;
  std::thread thread_;
};

// JSON values compare by text: a parsed 2 is an int where the encoder wrote an unsigned 2.
std::string Text(const Json::Value& value) {
  return api::WriteCompact(value);
}

class ApiTest : public ::testing::Test {
 protected:
  ApiTest() : status_(MakeContent()) {}

  ApiServerOptions Options() {
    ApiServerOptions options;
    options.socketPath = (dir_ / "api.sock").string();
    options.watchPoll = 20ms;
    return options;
  }
  void StartServer(ApiServerOptions options) {
    server_ = std::make_unique<ApiServer>(status_, std::move(options));
    Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started.error().message;
  }
  void StartServer() { StartServer(Options()); }
  std::string socket() const { return (dir_ / "api.sock").string(); }

  testing::TempDir dir_{"mvm-api"};
  FakeStatus status_;
  std::unique_ptr<ApiServer> server_;
};

// A socket file nobody listens on, as a crashed mvmd leaves behind.
void MakeStaleSocket(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  ASSERT_TRUE(fd.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno);
  // Closing without unlink leaves the file behind.
}

// --- Endpoints -----------------------------------------------------------------------------

TEST_F(ApiTest, Healthz_ReportsChangeSeqRevisionAndWarningCount) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.contentType, "application/json");
  EXPECT_EQ(r.body["status"], "ok");
  EXPECT_EQ(r.body["changeSeq"].asUInt64(), 1u);
  EXPECT_EQ(r.body["desiredRevision"].asUInt64(), 7u);
  EXPECT_EQ(r.body["warnings"].asUInt64(), 2u);
}

TEST_F(ApiTest, Tenants_ListCarriesUsageAndOnlyTheQuotaTheManifestSets) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/tenants");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["kind"], "TenantList");
  ASSERT_EQ(r.body["items"].size(), 1u);
  const Json::Value& t = r.body["items"][0];
  EXPECT_EQ(t["kind"], "Tenant");
  EXPECT_EQ(t["name"], "acme");
  EXPECT_EQ(t["usage"]["vcpus"].asInt(), 4);
  EXPECT_EQ(t["usage"]["memoryMiB"].asInt(), 1024);
  EXPECT_EQ(t["usage"]["running"].asInt(), 2);
  EXPECT_EQ(t["pools"].asInt(), 1);
  EXPECT_EQ(t["instances"].asInt(), 4);
  EXPECT_EQ(t["quota"]["vcpus"].asInt(), 16);
  EXPECT_EQ(t["quota"]["memoryMiB"].asInt(), 8192);
  EXPECT_EQ(t["quota"]["running"].asInt(), 20);
  EXPECT_FALSE(t["quota"].isMember("warm"));  // unlimited: absent
  EXPECT_EQ(t["firstSeenMs"].asInt64(), kNow - 2 * 86'400'000LL);
}

TEST_F(ApiTest, Tenant_DetailAddsManifestSourceAndTenantEvents) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/tenants/acme");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["name"], "acme");
  EXPECT_EQ(r.body["manifest"]["spec"]["network"]["subnet"], "10.240.1.0/24");
  EXPECT_EQ(r.body["source"]["file"], "/etc/mvm/manifests.d/acme.yaml");
  ASSERT_EQ(r.body["events"].size(), 1u);
  EXPECT_EQ(r.body["events"][0]["reason"], "QuotaExceeded");
  EXPECT_EQ(Get(socket(), "/v1/tenants/nope").status, 404);
}

TEST_F(ApiTest, Pools_ListIsSortedByKeyWithEveryStatusField) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/pools");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["kind"], "PoolList");
  ASSERT_EQ(r.body["items"].size(), 2u);
  EXPECT_EQ(r.body["items"][0]["tenant"], "acme");
  EXPECT_EQ(r.body["items"][1]["tenant"], "beta");
  const Json::Value& p = r.body["items"][0];
  EXPECT_EQ(Text(p), Text(api::EncodePoolStatus(MakePool("acme", "workers"))));
  // Spot-check the wire names so a rename cannot slip through the round trip above.
  EXPECT_EQ(p["kind"], "Pool");
  EXPECT_EQ(p["observedGeneration"].asUInt64(), 2u);
  EXPECT_EQ(p["desired"]["warm"].asInt(), 2);
  EXPECT_EQ(p["current"]["running"].asInt(), 2);
  EXPECT_EQ(p["ready"].asInt(), 4);
  EXPECT_EQ(p["pruning"], false);
  ASSERT_EQ(p["conditions"].size(), 2u);
  EXPECT_EQ(p["conditions"][0]["type"], "Ready");
  EXPECT_EQ(p["conditions"][0]["status"], "False");
  EXPECT_EQ(p["conditions"][0]["observedGeneration"].asUInt64(), 2u);
  EXPECT_EQ(p["conditions"][1]["status"], "True");
}

TEST_F(ApiTest, Pool_DetailAddsDefaultedManifestAndOnlyItsOwnEvents) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/pools/acme/workers");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["name"], "workers");
  EXPECT_EQ(r.body["conditions"].size(), 2u);
  EXPECT_EQ(Text(r.body["manifest"]),
            Text(status_.Desired()
                     ->objects.at(manifests::ObjectKey::PoolKey("acme", "workers"))
                     ->manifest));
  EXPECT_EQ(r.body["source"]["line"].asInt(), 12);
  ASSERT_EQ(r.body["events"].size(), 1u);
  const Json::Value& e = r.body["events"][0];
  EXPECT_EQ(e["objectKind"], "Pool");
  EXPECT_EQ(e["objectKey"], "acme/workers");
  EXPECT_EQ(e["type"], "Normal");
  EXPECT_EQ(e["reason"], "Scaled");
  EXPECT_EQ(e["from"], "pool-reconciler");
  EXPECT_EQ(e["count"].asInt(), 3);
  EXPECT_EQ(e["firstMs"].asInt64(), kNow - 600'000);
  EXPECT_EQ(e["lastMs"].asInt64(), kNow - 120'000);

  // A pool that left the manifests (beta/web is not in Desired()) has a null manifest.
  HttpReply beta = Get(socket(), "/v1/pools/beta/web");
  ASSERT_EQ(beta.status, 200);
  EXPECT_TRUE(beta.body["manifest"].isNull());
  EXPECT_TRUE(beta.body["source"].isNull());
}

TEST_F(ApiTest, Instances_ListAndDetailCarryStateHandleAndSpecButNotDriverData) {
  StartServer();
  HttpReply list = Get(socket(), "/v1/instances");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body["kind"], "InstanceList");
  ASSERT_EQ(list.body["items"].size(), 2u);
  EXPECT_EQ(list.body["items"][0]["name"], "workers-a1");
  EXPECT_EQ(list.body["items"][1]["name"], "workers-b2");
  EXPECT_EQ(list.body["items"][1]["state"], "Warm");

  HttpReply r = Get(socket(), "/v1/instances/acme/workers-a1");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["kind"], "Instance");
  EXPECT_EQ(r.body["tenant"], "acme");
  EXPECT_EQ(r.body["pool"], "workers");
  EXPECT_EQ(r.body["state"], "Running");
  EXPECT_EQ(r.body["target"], "Running");
  EXPECT_EQ(r.body["vmm"]["pid"].asInt(), 4242);
  EXPECT_EQ(r.body["vmm"]["socket"], "/var/lib/mvm/run/qmp.sock");
  EXPECT_FALSE(r.body["vmm"].isMember("data"));
  EXPECT_TRUE(r.body["pending"].isNull());
  EXPECT_EQ(r.body["spec"]["runtime"], "qemu");
  EXPECT_EQ(r.body["spec"]["resources"]["memoryMiB"].asInt(), 512);
  ASSERT_EQ(r.body["events"].size(), 1u);
  EXPECT_EQ(r.body["events"][0]["type"], "Warning");
  EXPECT_EQ(r.body["events"][0]["reason"], "StartFailed");
  EXPECT_EQ(Get(socket(), "/v1/instances/acme/nope").status, 404);
}

TEST_F(ApiTest, Warnings_ListsEveryLine) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/warnings");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body["items"].size(), 2u);
  EXPECT_EQ(r.body["items"][1], "cgroup controller cpu unavailable");
}

TEST_F(ApiTest, UnknownPathsAndObjectsAre404WithJsonError) {
  StartServer();
  for (const char* path : {"/", "/v1", "/v2/pools", "/v1/pools/acme", "/v1/pools/acme/w/x"}) {
    HttpReply r = Get(socket(), path);
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_TRUE(r.body["error"].isString()) << path;
  }
  HttpReply missing = Get(socket(), "/v1/pools/acme/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body["error"], "pool acme/nope not found");
}

TEST_F(ApiTest, WritesAreRefusedWith405) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/pools", "POST");
  EXPECT_EQ(r.status, 405);
  EXPECT_TRUE(r.body["error"].isString());
}

// --- The socket file -----------------------------------------------------------------------

TEST_F(ApiTest, Socket_HasMode0660ByDefault) {
  StartServer();
  struct stat st {};
  ASSERT_EQ(::stat(socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

TEST_F(ApiTest, Socket_ModeAndGroupAreConfigurable) {
  ApiServerOptions options = Options();
  options.socketMode = 0600;
  options.socketGroup = ::getgid();
  StartServer(options);
  struct stat st {};
  ASSERT_EQ(::stat(socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_gid, ::getgid());
}

TEST_F(ApiTest, Socket_IsRemovedOnStop) {
  StartServer();
  server_->Stop();
  EXPECT_FALSE(std::filesystem::exists(socket()));
  server_->Stop();  // twice is fine
}

TEST_F(ApiTest, Socket_StaleOneFromACrashedServerIsReplaced) {
  MakeStaleSocket(socket());
  ASSERT_TRUE(std::filesystem::is_socket(socket()));
  StartServer();
  EXPECT_EQ(Get(socket(), "/v1/healthz").status, 200);
}

TEST_F(ApiTest, Socket_LiveServerIsNotReplaced) {
  StartServer();
  ApiServer second(status_, Options());
  Status started = second.Start();
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.error().message.find(socket()), std::string::npos) << started.error().message;
  EXPECT_NE(started.error().message.find("another server"), std::string::npos);
  second.Stop();  // a server that never started must not remove the live one's socket
  EXPECT_EQ(Get(socket(), "/v1/healthz").status, 200);
}

TEST_F(ApiTest, Socket_PathThatIsNotASocketIsLeftAlone) {
  testing::WriteFile(socket(), "precious");
  ApiServer server(status_, Options());
  Status started = server.Start();
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.error().message.find("not a socket"), std::string::npos);
  EXPECT_TRUE(std::filesystem::is_regular_file(socket()));
}

TEST_F(ApiTest, Socket_ParentDirectoryIsCreated) {
  ApiServerOptions options = Options();
  options.socketPath = (dir_ / "run" / "mvm" / "api.sock").string();
  StartServer(options);
  EXPECT_EQ(Get(options.socketPath, "/v1/healthz").status, 200);
}

// --- Watch ---------------------------------------------------------------------------------

TEST_F(ApiTest, Watch_SendsInitialListThenExactlyTheChangedObjects) {
  StartServer();
  WatchStream watch(socket(), "/v1/watch?resource=pools");
  auto first = watch.Next();
  auto second = watch.Next();
  auto bookmark = watch.Next();
  ASSERT_TRUE(first && second && bookmark);
  EXPECT_EQ(watch.status(), 200);
  EXPECT_EQ((*first)["type"], "ADDED");
  EXPECT_EQ(Text((*first)["object"]), Text(api::EncodePoolStatus(MakePool("acme", "workers"))));
  EXPECT_EQ((*second)["type"], "ADDED");
  EXPECT_EQ((*second)["object"]["tenant"], "beta");
  EXPECT_EQ((*bookmark)["type"], "BOOKMARK");
  EXPECT_EQ((*bookmark)["object"]["changeSeq"].asUInt64(), 1u);

  // A change elsewhere (an instance) sends nothing on a pools watch; the next pool change is
  // the next line.
  status_.Update([](Content& c) { c.instances.pop_back(); });
  status_.Update([](Content& c) { c.pools[0].current.running = 3; });  // beta/web
  auto modified = watch.Next();
  ASSERT_TRUE(modified);
  EXPECT_EQ((*modified)["type"], "MODIFIED");
  EXPECT_EQ((*modified)["object"]["tenant"], "beta");
  EXPECT_EQ((*modified)["object"]["current"]["running"].asInt(), 3);

  // Deleting acme/workers and adding gamma/api: one line each, nothing for beta/web.
  status_.Update([](Content& c) {
    c.pools.erase(c.pools.begin() + 1);
    c.pools.push_back(MakePool("gamma", "api"));
  });
  auto added = watch.Next();
  auto deleted = watch.Next();
  ASSERT_TRUE(added && deleted);
  EXPECT_EQ((*added)["type"], "ADDED");
  EXPECT_EQ((*added)["object"]["tenant"], "gamma");
  EXPECT_EQ((*deleted)["type"], "DELETED");
  EXPECT_EQ((*deleted)["object"]["tenant"], "acme");
  EXPECT_EQ((*deleted)["object"]["name"], "workers");
  EXPECT_FALSE(watch.Next(200ms)) << "nothing else changed";
}

TEST_F(ApiTest, Watch_InstancesAndTenantsStreamToo) {
  StartServer();
  WatchStream instances(socket(), "/v1/watch?resource=instances");
  WatchStream tenants(socket(), "/v1/watch?resource=tenants");
  for (int i = 0; i < 2; ++i) ASSERT_EQ((*instances.Next())["type"], "ADDED");
  ASSERT_EQ((*instances.Next())["type"], "BOOKMARK");
  ASSERT_EQ((*tenants.Next())["object"]["quota"]["vcpus"].asInt(), 16);
  ASSERT_EQ((*tenants.Next())["type"], "BOOKMARK");

  status_.Update([](Content& c) { c.instances[0].state = InstanceState::kSleeping; });
  auto changed = instances.Next();
  ASSERT_TRUE(changed);
  EXPECT_EQ((*changed)["type"], "MODIFIED");
  EXPECT_EQ((*changed)["object"]["name"], "workers-b2");
  EXPECT_EQ((*changed)["object"]["state"], "Sleeping");
  EXPECT_FALSE(tenants.Next(200ms));
}

TEST_F(ApiTest, Watch_StopWithAnOpenWatchReturnsPromptlyAndEndsTheStream) {
  StartServer();
  WatchStream watch(socket(), "/v1/watch?resource=pools");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(watch.Next());
  auto started = std::chrono::steady_clock::now();
  auto stopped = std::async(std::launch::async, [&] { server_->Stop(); });
  ASSERT_EQ(stopped.wait_for(5s), std::future_status::ready) << "Stop() hangs on an open watch";
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  EXPECT_TRUE(watch.WaitEnded(5s));
  EXPECT_FALSE(std::filesystem::exists(socket()));
}

TEST_F(ApiTest, Stop_WithAnIdleConnectionReturnsWithinTheKeepAliveTimeout) {
  StartServer();
  UniqueFd idle(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket().c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::connect(idle.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(Get(socket(), "/v1/healthz").status, 200);  // the idle one has its thread by now
  auto started = std::chrono::steady_clock::now();
  auto stopped = std::async(std::launch::async, [&] { server_->Stop(); });
  ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);  // keepAliveTimeout is 1 s
}

TEST_F(ApiTest, Watch_AreCappedAndAClosedWatchFreesItsSlot) {
  ApiServerOptions options = Options();
  options.maxWatches = 1;
  options.watchHeartbeat = 50ms;  // how the server notices a client that left
  StartServer(options);
  auto first = std::make_unique<WatchStream>(socket(), "/v1/watch?resource=pools");
  ASSERT_TRUE(first->Next());

  HttpReply refused = Get(socket(), "/v1/watch?resource=pools");
  EXPECT_EQ(refused.status, 503);
  EXPECT_TRUE(refused.body["error"].isString());
  EXPECT_EQ(Get(socket(), "/v1/healthz").status, 200) << "plain requests still served";

  first.reset();  // the client drops the connection
  auto deadline = std::chrono::steady_clock::now() + 10s;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    WatchStream again(socket(), "/v1/watch?resource=pools");
    if (again.Next(2s) && (status = again.status()) == 200) break;
    std::this_thread::sleep_for(20ms);  // retry pacing, not an assertion
  }
  EXPECT_EQ(status, 200) << "the slot of the closed watch was never freed";
}

TEST_F(ApiTest, Watch_UnknownResourceIs400) {
  StartServer();
  HttpReply r = Get(socket(), "/v1/watch?resource=bananas");
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(r.body["error"].isString());
  EXPECT_EQ(Get(socket(), "/v1/watch").status, 400);
}

// --- Consoles ------------------------------------------------------------------------------

class ConsoleTest : public ApiTest {
 protected:
  ApiServerOptions Options() {
    ApiServerOptions options = ApiTest::Options();
    options.instancesDir = dir_ / "tenants";
    return options;
  }
  // Where the server looks for workers-a1's console (its handle data names none).
  std::filesystem::path A1Console() const {
    return dir_ / "tenants/acme/pools/workers/instances/workers-a1/console.log";
  }
  void Append(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << text;
    ASSERT_TRUE(out.good()) << path;
  }
};

// The firecracker driver summarises the VMM's metrics file into runtime/metrics-summary.json on
// every probe; describe instance shows it, and shows nothing when there is none.
TEST_F(ConsoleTest, Instance_CarriesTheVmmMetricsTheDriverSummarised) {
  StartServer(Options());
  const std::string path = "/v1/instances/acme/workers-a1";
  HttpReply none = Get(socket(), path);
  ASSERT_EQ(none.status, 200);
  EXPECT_FALSE(none.body["vmm"].isMember("metrics"));
  testing::WriteFile(dir_ /
                         "tenants/acme/pools/workers/instances/workers-a1/runtime/"
                         "metrics-summary.json",
                     R"({"utcTimestampMs":1700000000000,"vcpuExits":42,"blockReadBytes":4096,)"
                     R"("blockWriteBytes":512,"netRxBytes":0,"netTxBytes":0,"apiRequests":9,)"
                     R"("vmmPanics":0,"flushes":3})");
  HttpReply r = Get(socket(), path);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["vmm"]["metrics"]["vcpuExits"].asUInt64(), 42u);
  api::InstanceDetail detail;
  detail.instance = api::DecodeInstance(r.body);
  std::string page = cli::DescribeInstance(detail, kNow);
  for (const char* line : {"VMM Metrics:\n", "  vCPU Exits:     42\n",
                           "  Block R/W:      4096 / 512 B\n", "  API Requests:   9\n"}) {
    EXPECT_NE(page.find(line), std::string::npos) << "missing: " << line << "in:\n" << page;
  }
}

TEST_F(ConsoleTest, Console_ServesTheInstanceDirectoryFileCutToTailLinesAndLimitBytes) {
  StartServer(Options());
  std::string all;
  for (int i = 1; i <= 10; ++i) all += "line " + std::to_string(i) + "\n";
  testing::WriteFile(A1Console(), all);
  const std::string base = "/v1/instances/acme/workers-a1/console";

  TextReply whole = GetText(socket(), base);
  ASSERT_EQ(whole.status, 200) << whole.body;
  EXPECT_EQ(whole.body, all);
  EXPECT_EQ(whole.contentType, "text/plain; charset=utf-8");
  EXPECT_EQ(GetText(socket(), base + "?tailLines=3").body, "line 8\nline 9\nline 10\n");
  EXPECT_EQ(GetText(socket(), base + "?tailLines=0").body, "");
  EXPECT_EQ(GetText(socket(), base + "?tailLines=99").body, all);
  // The last 10 bytes are "9\nline 10\n": the cut line "9" is dropped.
  EXPECT_EQ(GetText(socket(), base + "?limitBytes=10").body, "line 10\n");
  EXPECT_EQ(GetText(socket(), base + "?limitBytes=4").body, " 10\n") << "a lone partial line stays";

  // A last line without its newline is a line.
  Append(A1Console(), "booting");
  EXPECT_EQ(GetText(socket(), base + "?tailLines=2").body, "line 10\nbooting");
}

TEST_F(ConsoleTest, Console_TheFileNamedInTheDriverRecordWins) {
  const std::filesystem::path elsewhere = dir_ / "elsewhere/console.txt";
  testing::WriteFile(elsewhere, "from the driver record\n");
  testing::WriteFile(A1Console(), "from the instance directory\n");
  status_.Update([&](Content& c) {
    for (auto& i : c.instances) {
      if (i.key.name == "workers-a1") {
        i.handle.data = "{\"pid\":4242,\"console\":\"" + elsewhere.string() + "\"}";
      }
    }
  });
  StartServer(Options());
  EXPECT_EQ(GetText(socket(), "/v1/instances/acme/workers-a1/console").body,
            "from the driver record\n");
}

TEST_F(ConsoleTest, Console_UnknownInstanceNoConsoleYetAndBadQueriesAreJsonErrors) {
  StartServer(Options());
  HttpReply unknown = Get(socket(), "/v1/instances/acme/nope/console");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.body["error"], "instance acme/nope not found");

  HttpReply not_yet = Get(socket(), "/v1/instances/acme/workers-b2/console");
  EXPECT_EQ(not_yet.status, 404);
  const std::string message = not_yet.body["error"].asString();
  EXPECT_THAT(message, ::testing::HasSubstr("instance acme/workers-b2 has no console yet"));
  EXPECT_THAT(message, ::testing::HasSubstr("state Warm"));
  EXPECT_THAT(message, ::testing::HasSubstr("workers-b2/console.log does not exist"));

  testing::WriteFile(A1Console(), "x\n");
  for (const char* query : {"?tailLines=-1", "?tailLines=ten", "?limitBytes=0",
                            "?limitBytes=99999999999", "?follow=yes"}) {
    HttpReply bad = Get(socket(), std::string("/v1/instances/acme/workers-a1/console") + query);
    EXPECT_EQ(bad.status, 400) << query;
    EXPECT_TRUE(bad.body["error"].isString()) << query;
  }
}

TEST_F(ConsoleTest, Console_ServedWithoutInstancesDirOnlyFromDriverRecords) {
  StartServer(ApiTest::Options());  // no instancesDir
  testing::WriteFile(A1Console(), "x\n");
  HttpReply r = Get(socket(), "/v1/instances/acme/workers-a1/console");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body["error"], "instance acme/workers-a1 has no console file");
}

TEST_F(ConsoleTest, Console_FollowStreamsAppendsAcrossRotationAndEndsWhenTheInstanceIsGone) {
  StartServer(Options());
  testing::WriteFile(A1Console(), "old 1\nold 2\n");
  WatchStream follow(socket(), "/v1/instances/acme/workers-a1/console?follow=true&tailLines=1");
  EXPECT_EQ(follow.NextLine(), "old 2");
  EXPECT_EQ(follow.status(), 200);

  Append(A1Console(), "old 3\n");
  EXPECT_EQ(follow.NextLine(), "old 3");

  // A start rotates the log: the last words of the old file come first, then the new boot.
  Append(A1Console(), "old last\n");
  std::filesystem::rename(A1Console(), A1Console().string() + ".1");
  testing::WriteFile(A1Console(), "new boot\n");
  EXPECT_EQ(follow.NextLine(), "old last");
  EXPECT_EQ(follow.NextLine(), "new boot");
  Append(A1Console(), "new 2\n");
  EXPECT_EQ(follow.NextLine(), "new 2");
  EXPECT_FALSE(follow.WaitEnded(100ms)) << "a quiet console keeps the stream open";

  // Destroyed: the record is gone, and so is the stream.
  status_.Update([](Content& c) {
    std::erase_if(c.instances, [](const Instance& i) { return i.key.name == "workers-a1"; });
  });
  EXPECT_TRUE(follow.WaitEnded(5s));
  EXPECT_EQ(follow.NextLine(100ms), std::nullopt);
}

TEST_F(ConsoleTest, Console_FollowTakesAWatchSlotAndEndsWhenTheServerStops) {
  ApiServerOptions options = Options();
  options.maxWatches = 1;
  StartServer(options);
  testing::WriteFile(A1Console(), "hello\n");
  WatchStream follow(socket(), "/v1/instances/acme/workers-a1/console?follow=true");
  EXPECT_EQ(follow.NextLine(), "hello");
  EXPECT_EQ(Get(socket(), "/v1/watch?resource=pools").status, 503);
  auto t0 = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_TRUE(follow.WaitEnded(5s));
}

// --- JSON codec ----------------------------------------------------------------------------

TEST(ApiJson, Instance_CarriesTheConfinementAndTheSeccompProfile) {
  Instance in = MakeInstance("acme", "workers", "workers-a1", InstanceState::kRunning);
  in.handle.data = R"({"qmp":"/run/q.sock","confinement":{"uid":200001,"seccomp":"strict"}})";
  auto spec = std::make_shared<manifests::PoolSpec>(*in.spec);
  spec->security.seccomp = "strict";
  spec->snapshot.base = true;
  in.spec = spec;
  Json::Value json = api::EncodeInstance(in);
  EXPECT_EQ(json["vmm"]["confinement"]["uid"].asUInt(), 200001u);
  EXPECT_FALSE(json["vmm"].isMember("qmp")) << "the rest of the driver's data stays private";
  Instance out = api::DecodeInstance(json);
  EXPECT_EQ(out.handle.data, R"({"confinement":{"seccomp":"strict","uid":200001}})");
  ASSERT_TRUE(out.spec);
  EXPECT_EQ(out.spec->security.seccomp, "strict");
  EXPECT_TRUE(out.spec->snapshot.base);
  EXPECT_NE(cli::DescribeInstance({out, {}}, kNow).find("  Snapshot:       pool base"),
            std::string::npos);
  EXPECT_NE(cli::DescribeInstance({out, {}}, kNow).find("  UID/GID:        200001/"),
            std::string::npos);
}

TEST(ApiJson, Instance_RoundTripsEveryFieldButDriverData) {
  Instance in = MakeInstance("acme", "workers", "workers-a1", InstanceState::kWarm);
  in.target = InstanceState::kSleeping;
  in.failures = 2;
  in.lastError = "snapshot: disk full";
  in.failed = true;
  in.pending = Action::kSleep;
  Instance out = api::DecodeInstance(api::EncodeInstance(in));
  EXPECT_EQ(out.key, in.key);
  EXPECT_EQ(out.pool, in.pool);
  EXPECT_EQ(out.state, in.state);
  EXPECT_EQ(out.target, in.target);
  EXPECT_EQ(out.specHash, in.specHash);
  EXPECT_EQ(out.generation, in.generation);
  EXPECT_EQ(out.handle.pid, in.handle.pid);
  EXPECT_EQ(out.handle.startTime, in.handle.startTime);
  EXPECT_EQ(out.handle.socket, in.handle.socket);
  EXPECT_EQ(out.handle.data, "");
  EXPECT_EQ(out.createdAtMs, in.createdAtMs);
  EXPECT_EQ(out.stateSinceMs, in.stateSinceMs);
  EXPECT_EQ(out.updatedAtMs, in.updatedAtMs);
  EXPECT_EQ(out.failures, 2);
  EXPECT_EQ(out.lastError, in.lastError);
  EXPECT_TRUE(out.failed);
  EXPECT_EQ(out.pending, Action::kSleep);
  ASSERT_TRUE(out.spec);
  EXPECT_EQ(api::EncodePoolSpec(*out.spec), api::EncodePoolSpec(*in.spec));
}

TEST(ApiJson, PoolStatusTenantAndEvent_RoundTrip) {
  PoolStatus pool = MakePool("acme", "workers");
  pool.pruning = true;
  EXPECT_EQ(api::EncodePoolStatus(api::DecodePoolStatus(api::EncodePoolStatus(pool))),
            api::EncodePoolStatus(pool));
  Content c = MakeContent();
  manifests::TenantQuota quota;
  quota.warm = 3;
  Json::Value tenant = api::EncodeTenantStatus(c.tenants[0], quota);
  api::TenantInfo decoded = api::DecodeTenant(tenant);
  EXPECT_EQ(api::EncodeTenantStatus(decoded.status, decoded.quota), tenant);
  EXPECT_EQ(decoded.quota.warm, 3);
  EXPECT_FALSE(decoded.quota.vcpus);
  for (const auto& event : c.events) {
    EXPECT_EQ(api::EncodeEvent(api::DecodeEvent(api::EncodeEvent(event))), api::EncodeEvent(event));
  }
}

TEST(ApiJson, DecodersTolerateMissingAndMistypedFields) {
  Json::Value junk;
  junk["name"] = 5;
  junk["conditions"] = "nope";
  PoolStatus pool = api::DecodePoolStatus(junk);
  EXPECT_EQ(pool.name, "");
  EXPECT_TRUE(pool.conditions.empty());
  Instance instance = api::DecodeInstance(Json::Value("a string"));
  EXPECT_EQ(instance.key.name, "");
  EXPECT_FALSE(instance.spec);
}

// --- mvmctl formatting ---------------------------------------------------------------------

TEST(CliFormat, Age_FollowsKubectlHumanDuration) {
  struct Case {
    int64_t agoMs;
    const char* want;
  };
  const int64_t s = 1000, m = 60 * s, h = 60 * m, d = 24 * h;
  for (const Case& c : std::vector<Case>{{0, "0s"},
                                         {999, "0s"},
                                         {45 * s, "45s"},
                                         {119 * s, "119s"},
                                         {2 * m, "2m"},
                                         {3 * m + 12 * s, "3m12s"},
                                         {9 * m + 59 * s, "9m59s"},
                                         {15 * m + 30 * s, "15m"},
                                         {179 * m, "179m"},
                                         {3 * h, "3h"},
                                         {5 * h, "5h"},
                                         {7 * h + 30 * m, "7h30m"},
                                         {47 * h, "47h"},
                                         {2 * d, "2d"},
                                         {3 * d + 4 * h, "3d4h"},
                                         {400 * d, "400d"},
                                         {2 * 365 * d + 10 * d, "2y10d"},
                                         {9 * 365 * d, "9y"},
                                         {-1500, "0s"},
                                         {-3 * s, "<invalid>"}}) {
    EXPECT_EQ(cli::FormatAge(kNow - c.agoMs, kNow), c.want) << c.agoMs;
  }
  EXPECT_EQ(cli::FormatAge(0, kNow), "<unknown>");
}

TEST(CliFormat, EventAge_ShowsRepeatsLikeKubectlDescribe) {
  Event once{"Pool", "a/b", EventType::kNormal, "R", "m", "x", kNow - 90'000, kNow - 90'000, 1};
  EXPECT_EQ(cli::FormatEventAge(once, kNow), "90s");
  Event repeated{"Pool", "a/b",          EventType::kNormal, "R", "m",
                 "x",    kNow - 600'000, kNow - 120'000,     3};
  EXPECT_EQ(cli::FormatEventAge(repeated, kNow), "2m (x3 over 10m)");
}

TEST(CliFormat, MiB_UsesTheLargestWholeUnit) {
  EXPECT_EQ(cli::FormatMiB(512), "512Mi");
  EXPECT_EQ(cli::FormatMiB(8192), "8Gi");
  EXPECT_EQ(cli::FormatMiB(1536), "1536Mi");
  EXPECT_EQ(cli::FormatMiB(0), "0Mi");
  EXPECT_EQ(cli::FormatMiB(2 * 1024 * 1024), "2Ti");
}

TEST(CliFormat, PoolsTable_ShowsCurrentOverDesired) {
  PoolStatus web = MakePool("beta", "web");
  web.current = {3, 2, 1};
  web.ready = 6;
  web.firstSeenMs = kNow - 5 * 3'600'000LL;
  std::string table =
      cli::RenderTable(cli::PoolsTable({MakePool("acme", "workers"), web}, kNow, false));
  EXPECT_EQ(table,
            "NAME      TENANT   RUNNING   WARM   SLEEPING   READY   AGE\n"
            "workers   acme     2/3       2/2    0/1        4/6     3m12s\n"
            "web       beta     3/3       2/2    1/1        6/6     5h\n");
}

TEST(CliFormat, PoolsTable_WideAddsGenerationsSpecAndTrueConditions) {
  PoolStatus pool = MakePool("acme", "workers");
  pool.pruning = true;
  std::string table = cli::RenderTable(cli::PoolsTable({pool}, kNow, true, "pool/"));
  EXPECT_EQ(table,
            "NAME           TENANT   RUNNING   WARM   SLEEPING   READY   AGE     INSTANCES   "
            "GENERATION   OBSERVED   SPEC               CONDITIONS\n"
            "pool/workers   acme     2/3       2/2    0/1        4/6     3m12s   5           "
            "3            2          0a1b2c3d4e5f6789   Progressing,Pruning\n");
}

TEST(CliFormat, InstancesTable_NarrowAndWide) {
  Instance running = MakeInstance("acme", "workers", "workers-a1", InstanceState::kRunning);
  Instance failed = MakeInstance("acme", "workers", "workers-b2", InstanceState::kReady);
  failed.failed = true;
  failed.failures = 5;
  failed.lastError = "start: no\nkvm";
  failed.handle = {};
  failed.createdAtMs = kNow - 2 * 86'400'000LL;
  EXPECT_EQ(cli::RenderTable(cli::InstancesTable({running, failed}, kNow, false)),
            "NAME         POOL      STATE     TARGET    AGE\n"
            "workers-a1   workers   Running   Running   45s\n"
            "workers-b2   workers   Failed    Running   2d\n");
  EXPECT_EQ(
      cli::RenderTable(cli::InstancesTable({running, failed}, kNow, true)),
      "NAME         POOL      STATE     TARGET    AGE   TENANT   PID      FAILURES   SPEC     "
      "          LAST-ERROR\n"
      "workers-a1   workers   Running   Running   45s   acme     4242     0          "
      "0a1b2c3d4e5f6789   <none>\n"
      "workers-b2   workers   Failed    Running   2d    acme     <none>   5          "
      "0a1b2c3d4e5f6789   start: no kvm\n");
}

TEST(CliFormat, TenantsTable_ShowsUsageOverQuotaWhereLimited) {
  Content c = MakeContent();
  api::TenantInfo acme{c.tenants[0], {}};
  acme.quota.vcpus = 16;
  acme.quota.memoryMiB = 8192;
  acme.quota.running = 20;
  EXPECT_EQ(cli::RenderTable(cli::TenantsTable({acme}, kNow, true)),
            "NAME   POOLS   INSTANCES   RUNNING   WARM   SLEEPING   VCPUS   MEMORY    AGE   DISK\n"
            "acme   1       4           2/20      2      0          4/16    1Gi/8Gi   2d    4Gi\n");
}

TEST(CliFormat, FormatRow_KeepsWatchRowsAlignedWithTheTable) {
  cli::Table table = {{"NAME", "AGE"}, {"a", "1s"}};
  std::vector<size_t> widths = cli::ColumnWidths(table);
  EXPECT_EQ(cli::FormatRow({"b", "2s"}, widths), "b      2s\n");
  EXPECT_EQ(cli::FormatRow({"longer-name", "3s"}, widths), "longer-name   3s\n");
  EXPECT_EQ(widths[0], 11u);
}

TEST(CliFormat, DescribePool_ShowsSpecStatusConditionsAndEvents) {
  api::PoolDetail detail;
  detail.status = MakePool("acme", "workers");
  detail.manifest =
      MakeDesired()->objects.at(manifests::ObjectKey::PoolKey("acme", "workers"))->manifest;
  detail.source = {"/etc/mvm/manifests.d/acme.yaml", 12, 1};
  detail.events = {
      {"Pool", "acme/workers", EventType::kWarning, "QuotaExceeded", "vcpus 16/16",
       "pool-reconciler", kNow - 30'000, kNow - 30'000, 1},
      {"Pool", "acme/workers", EventType::kNormal, "Scaled", "running 1 -> 2", "pool-reconciler",
       kNow - 600'000, kNow - 120'000, 3},
  };
  EXPECT_EQ(cli::DescribePool(detail, kNow),
            "Name:             workers\n"
            "Tenant:           acme\n"
            "Kind:             Pool\n"
            "Labels:           team=web\n"
            "Source:           /etc/mvm/manifests.d/acme.yaml:12:1\n"
            "Created:          2023-11-14T22:10:08Z (3m12s)\n"
            "Generation:       3 (observed 2)\n"
            "Spec Hash:        0a1b2c3d4e5f6789\n"
            "Pruning:          false\n"
            "Spec:\n"
            "  Runtime:        qemu\n"
            "  Kernel:         /img/vmlinux\n"
            "  Rootfs:         /img/rootfs.ext4\n"
            "  Initrd:         <none>\n"
            "  Boot Args:      console=ttyS0\n"
            "  Command:        /app/bin/worker --queue 'jobs now'\n"
            "  Env:            QUEUE=jobs\n"
            "  Resources:      2 vCPUs, 512Mi memory, 2Gi disk\n"
            "  Lifecycle:      service\n"
            "  Seccomp:        baseline\n"
            "  Replicas:       running=3 warm=2 sleeping=1\n"
            "  Policy:         minRunning=60s minWarm=0s\n"
            "                  idleToWarm=300s warmToSleep=never\n"
            "                  drainTimeout=30s gracefulStop=15s\n"
            "Status:\n"
            "  Running:        2/3\n"
            "  Warm:           2/2\n"
            "  Sleeping:       0/1\n"
            "  Ready:          4/6\n"
            "  Instances:      5\n"
            "Conditions:\n"
            "  TYPE          STATUS   REASON     MESSAGE               OBSERVED-GENERATION\n"
            "  Ready         False    Scaling    2 of 3 running        2\n"
            "  Progressing   True     Starting   starting workers-x1   3\n"
            "Events:\n"
            "  TYPE      REASON          AGE                FROM              MESSAGE\n"
            "  Normal    Scaled          2m (x3 over 10m)   pool-reconciler   running 1 -> 2\n"
            "  Warning   QuotaExceeded   30s                pool-reconciler   vcpus 16/16\n");
}

TEST(CliFormat, DescribePool_WithoutManifestOrEventsSaysNone) {
  api::PoolDetail detail;
  detail.status = MakePool("beta", "web");
  detail.status.pruning = true;
  detail.status.conditions.clear();
  std::string page = cli::DescribePool(detail, kNow);
  EXPECT_NE(page.find("Pruning:          true (left the manifests; draining)\n"),
            std::string::npos);
  EXPECT_NE(page.find("Spec:             <none> (not in the manifests)\n"), std::string::npos);
  EXPECT_NE(page.find("Conditions:       <none>\n"), std::string::npos);
  EXPECT_NE(page.find("Events:           <none>\n"), std::string::npos) << page;
}

TEST(CliFormat, DescribeInstance_ShowsStateVmmAndEvents) {
  api::InstanceDetail detail;
  detail.instance = MakeInstance("acme", "workers", "workers-a1", InstanceState::kWarm);
  detail.instance.pending = Action::kSleep;
  detail.events = {{"Instance", "acme/workers-a1", EventType::kNormal, "Paused", "vCPUs paused",
                    "instance-reconciler", kNow - 30'000, kNow - 30'000, 1}};
  std::string page = cli::DescribeInstance(detail, kNow);
  for (const char* line :
       {"Name:             workers-a1\n", "Tenant:           acme\n", "Pool:             workers\n",
        "State:            Warm (for 30s)\n", "Target:           Running\n",
        "Pending:          sleep\n", "Last Error:       <none>\n", "VMM:\n  PID:            4242\n",
        "  Socket:         /var/lib/mvm/run/qmp.sock\n", "  Runtime:        qemu\n",
        "  Normal   Paused   30s   instance-reconciler   vCPUs paused\n"}) {
    EXPECT_NE(page.find(line), std::string::npos) << "missing: " << line << "in:\n" << page;
  }
}

TEST(CliFormat, DescribeInstance_ShowsTheConfinementInForce) {
  api::InstanceDetail detail;
  detail.instance = MakeInstance("acme", "workers", "workers-a1", InstanceState::kRunning);
  detail.instance.handle.data =
      R"({"pid":4242,"confinement":{"uid":200007,"gid":200007,"seccomp":"strict",)"
      R"("cgroup":"/sys/fs/cgroup/mvm.slice/acme/workers-a1","cgroupLimits":["workers-a1/)"
      R"(pids.max=1024"],"cgroupMissing":["cpu","memory"],"namespaces":["mnt","pid","net"],)"
      R"("root":"pivot_root into a read-only tmpfs","capabilities":"none"}})";
  std::string page = cli::DescribeInstance(detail, kNow);
  for (const char* line :
       {"Confinement:\n  UID/GID:        200007/200007\n",
        "  Cgroup:         /sys/fs/cgroup/mvm.slice/acme/workers-a1\n",
        "  Limits:         workers-a1/pids.max=1024\n",
        "  Not Enforced:   cpu, memory (controller missing)\n", "  Seccomp:        strict\n",
        "  Namespaces:     mnt, pid, net\n", "  Capabilities:   none\n"}) {
    EXPECT_NE(page.find(line), std::string::npos) << "missing: " << line << "in:\n" << page;
  }
  detail.instance.handle.data = R"({"pid":4242,"confinement":"off"})";
  page = cli::DescribeInstance(detail, kNow);
  EXPECT_NE(page.find("Confinement:      off\n"), std::string::npos) << page;
  detail.instance.handle.data = R"({"private":true})";
  EXPECT_EQ(cli::DescribeInstance(detail, kNow).find("Confinement"), std::string::npos);
}

TEST(CliFormat, DescribeTenant_ShowsUsageAgainstQuota) {
  Content c = MakeContent();
  api::TenantDetail detail;
  detail.tenant = {c.tenants[0], {}};
  detail.tenant.quota.vcpus = 16;
  detail.manifest = MakeDesired()->objects.at(manifests::ObjectKey::TenantKey("acme"))->manifest;
  std::string page = cli::DescribeTenant(detail, kNow);
  for (const char* line : {"Name:             acme\n", "Subnet:           10.240.1.0/24\n",
                           "  RESOURCE   USED   QUOTA\n", "  vcpus      4      16\n",
                           "  memory     1Gi    <unlimited>\n", "  running    2      <unlimited>\n",
                           "Events:           <none>\n"}) {
    EXPECT_NE(page.find(line), std::string::npos) << "missing: " << line << "in:\n" << page;
  }
}

TEST(CliFormat, Yaml_BlockStyleQuotesWhatWouldReadAsAnotherType) {
  Json::Value v;
  v["name"] = "workers";
  v["path"] = "/var/lib/mvm";
  v["hash"] = "0012345678abcdef";
  v["number"] = "42";
  v["yes"] = "yes";
  v["empty"] = "";
  v["colon"] = "a: b";
  v["multi"] = "line1\nline2";
  v["dash"] = "-x";
  v["count"] = 3;
  v["flag"] = true;
  v["nothing"] = Json::Value();
  v["list"].append("a");
  v["list"].append(Json::Value(Json::objectValue));
  Json::Value item;
  item["k"] = "v";
  item["n"] = 1;
  v["list"].append(item);
  v["emptyList"] = Json::Value(Json::arrayValue);
  v["nested"]["inner"]["x"] = 1.5;
  EXPECT_EQ(cli::ToYaml(v),
            "colon: \"a: b\"\n"
            "count: 3\n"
            "dash: \"-x\"\n"
            "empty: \"\"\n"
            "emptyList: []\n"
            "flag: true\n"
            "hash: \"0012345678abcdef\"\n"
            "list:\n"
            "- a\n"
            "- {}\n"
            "- k: v\n"
            "  \"n\": 1\n"  // YAML 1.1 reads a bare n as false
            "multi: \"line1\\nline2\"\n"
            "name: workers\n"
            "nested:\n"
            "  inner:\n"
            "    x: 1.5\n"
            "nothing: null\n"
            "number: \"42\"\n"
            "path: /var/lib/mvm\n"
            "\"yes\": \"yes\"\n");
  EXPECT_EQ(cli::ToYaml(Json::Value(Json::arrayValue)), "[]\n");
}

}  // namespace
}  // namespace mvm::controller
