// The request checker built from Firecracker's API description: it must accept what Firecracker
// documents and reject what it does not, or the driver tests that rely on it prove nothing.
// The description is reference data outside the repository (../shared); its absence FAILS.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/firecracker_api_spec.h"

namespace mvm::testing {
namespace {

using ::testing::HasSubstr;

class FirecrackerSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto spec = FirecrackerApiSpec::Load(MVM_FC_API_YAML);
    ASSERT_TRUE(spec.ok()) << spec.error().message
                           << " (the Firecracker API description must be present in CI)";
    spec_ = std::make_unique<FirecrackerApiSpec>(std::move(*spec));
  }
  std::string Why(const std::string& method, const std::string& path, const std::string& body) {
    Status s = spec_->Check(method, path, body);
    return s.ok() ? "" : s.error().message;
  }
  std::unique_ptr<FirecrackerApiSpec> spec_;
};

TEST_F(FirecrackerSpecTest, AcceptsDocumentedRequests) {
  EXPECT_FALSE(spec_->version().empty());
  EXPECT_EQ(Why("GET", "/", ""), "");
  EXPECT_EQ(Why("PUT", "/actions", R"({"action_type":"InstanceStart"})"), "");
  EXPECT_EQ(
      Why("PUT", "/drives/rootfs",
          R"({"drive_id":"rootfs","path_on_host":"/x","is_root_device":true,"is_read_only":false})"),
      "");
  EXPECT_EQ(Why("PATCH", "/vm", R"({"state":"Paused"})"), "");
  EXPECT_EQ(
      Why("PUT", "/snapshot/load",
          R"({"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},)"
          R"("resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap0"}]})"),
      "");
  EXPECT_EQ(Why("PUT", "/mmds", R"({"anything":{"goes":[1,2]}})"), "");
  // What a pool base uses: a load that tracks dirty pages and moves the vsock socket, a Diff.
  EXPECT_EQ(
      Why("PUT", "/snapshot/load",
          R"({"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},)"
          R"("resume_vm":true,"track_dirty_pages":true,"vsock_override":{"uds_path":"/v"}})"),
      "");
  EXPECT_EQ(Why("PUT", "/snapshot/create",
                R"({"snapshot_type":"Diff","snapshot_path":"/s","mem_file_path":"/m"})"),
            "");
}

TEST_F(FirecrackerSpecTest, RejectsUnknownPathsMethodsFieldsAndValues) {
  EXPECT_THAT(Why("PUT", "/teleport", "{}"), HasSubstr("no such path"));
  EXPECT_THAT(Why("DELETE", "/vm", ""), HasSubstr("method not described"));
  EXPECT_THAT(Why("PATCH", "/vm", R"({"state":"Frozen"})"), HasSubstr("invalid"));
  EXPECT_THAT(Why("PUT", "/actions", R"({"action_type":"InstanceStart","force":true})"),
              HasSubstr("invalid"));
  EXPECT_THAT(Why("PUT", "/machine-config", R"({"vcpu_count":0,"mem_size_mib":128})"),
              HasSubstr("invalid"));
  EXPECT_THAT(Why("PUT", "/machine-config", R"({"vcpu_count":1})"), HasSubstr("invalid"));
  EXPECT_THAT(Why("PUT", "/snapshot/create", R"({"snapshot_path":"/s"})"), HasSubstr("invalid"));
  EXPECT_THAT(Why("PUT", "/snapshot/create",
                  R"({"snapshot_path":"/s","mem_file_path":"/m","snapshot_type":"Half"})"),
              HasSubstr("invalid"));
  EXPECT_THAT(Why("PUT", "/boot-source", ""), HasSubstr("required"));
  EXPECT_THAT(Why("PUT", "/snapshot/load",
                  R"({"snapshot_path":"/s","drive_overrides":[{"drive_id":"rootfs"}]})"),
              HasSubstr("invalid"));
  EXPECT_THAT(Why("PUT", "/snapshot/load", R"({"snapshot_path":"/s","vsock_override":{}})"),
              HasSubstr("invalid"));
  EXPECT_THAT(Why("GET", "/", "{}"), HasSubstr("describes none"));
  EXPECT_THAT(Why("PUT", "/vsock", R"({"guest_cid":2,"uds_path":"/v"})"), HasSubstr("invalid"));
}

}  // namespace
}  // namespace mvm::testing
