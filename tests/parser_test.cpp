// Parser and schema tests: every error carries file, line, column, object and field path; all
// errors of a file are reported; defaults are applied; image paths cannot escape their roots.

#include "manifests/parser.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/test_util.h"

namespace mvm::manifests {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr const char* kTenant = R"(apiVersion: mvm.dev/v1alpha1
kind: Tenant
metadata: {name: acme}
)";

ParseOptions Options() {
  ParseOptions options;
  options.imageRoots = {"/var/lib/mvm/images"};
  return options;
}

std::vector<std::string> Messages(const ParseResult& result) {
  std::vector<std::string> out;
  for (const auto& d : result.diagnostics) out.push_back(d.ToString());
  return out;
}

std::string Pool(std::string_view spec_lines) {
  return std::string(R"(apiVersion: mvm.dev/v1alpha1
kind: Pool
metadata:
  name: workers
  tenant: acme
spec:
  image: {kernel: vmlinux, rootfs: rootfs.ext4}
)") + std::string(spec_lines);
}

TEST(Parser, AcceptsQuickstartExample) {
  std::ifstream in(std::string(MVM_SOURCE_DIR) + "/examples/quickstart/demo.yaml");
  std::stringstream text;
  text << in.rdbuf();
  ParseResult result = ParseManifest("demo.yaml", text.str(), Options());
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(Messages(result));
  ASSERT_EQ(result.objects.size(), 2u);
  EXPECT_EQ(result.objects[0]->key, ObjectKey::TenantKey("demo"));
  EXPECT_EQ(result.objects[1]->key, ObjectKey::PoolKey("demo", "hello"));
  EXPECT_EQ(result.objects[1]->pool()->runtime, Runtime::kQemu);
  EXPECT_EQ(result.objects[1]->pool()->replicas, (Replicas{1, 1, 0}));
  EXPECT_EQ(result.objects[1]->pool()->security.seccomp, "strict");
  EXPECT_EQ(result.objects[1]->source.line, 10);
}

TEST(Parser, AppliesSchemaDefaults) {
  ParseOptions options = Options();
  options.defaultRuntime = Runtime::kQemu;
  ParseResult result = ParseManifest("p.yaml", Pool(""), options);
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(Messages(result));
  const PoolSpec& pool = *result.objects.at(0)->pool();
  EXPECT_EQ(pool.runtime, Runtime::kQemu);
  EXPECT_EQ(pool.resources.vcpus, 1);
  EXPECT_EQ(pool.resources.memoryMiB, 256);
  EXPECT_EQ(pool.resources.diskMiB, 1024);
  EXPECT_EQ(pool.lifecycle, Lifecycle::kService);
  EXPECT_EQ(pool.replicas, (Replicas{0, 0, 0}));
  EXPECT_EQ(pool.policy.drainTimeoutSeconds, 30);
  EXPECT_EQ(pool.policy.gracefulStopSeconds, 15);
  EXPECT_EQ(pool.policy.idleToWarmSeconds, 0);
  EXPECT_EQ(pool.image.bootArgs, "console=ttyS0 reboot=k panic=1");
  EXPECT_FALSE(pool.image.initrd.has_value());
  EXPECT_TRUE(pool.cmd.empty());
  EXPECT_TRUE(pool.env.empty());
  EXPECT_EQ(pool.image.kernel, "/var/lib/mvm/images/vmlinux");
  // Defaults are part of the manifest the controller sees.
  const Json::Value& m = result.objects[0]->manifest;
  EXPECT_EQ(m["spec"]["runtime"].asString(), "qemu");
  EXPECT_EQ(m["spec"]["policy"]["gracefulStopSeconds"].asInt(), 15);
  EXPECT_EQ(pool.security.seccomp, "baseline");
  EXPECT_EQ(m["spec"]["security"]["seccomp"].asString(), "baseline");
  EXPECT_TRUE(m["metadata"]["labels"].isObject());
}

TEST(Parser, TenantDefaultsToUnlimitedQuota) {
  ParseResult result = ParseManifest("t.yaml", kTenant, Options());
  ASSERT_TRUE(result.ok());
  const TenantSpec& tenant = *result.objects.at(0)->tenant();
  EXPECT_FALSE(tenant.quota.vcpus.has_value());
  EXPECT_FALSE(tenant.subnet.has_value());
}

TEST(Parser, ReportsExactLineColumnAndFieldPath) {
  ParseResult result = ParseManifest("manifests.d/acme.yaml", Pool(R"(  replicas:
    running: 1
    warm: -1
)"),
                                     Options());
  EXPECT_THAT(Messages(result),
              ElementsAre("manifests.d/acme.yaml:10:11: Pool acme/workers: spec.replicas.warm: "
                          "must be >= 0 (got -1)"));
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(result.diagnostics[0].line, 10);
  EXPECT_EQ(result.diagnostics[0].column, 11);
  EXPECT_EQ(result.diagnostics[0].path, "spec.replicas.warm");
  EXPECT_TRUE(result.objects.empty());
}

TEST(Parser, SnapshotBaseIsOptInAndLeavesOtherPoolsHashesAlone) {
  ParseResult plain = ParseManifest("p.yaml", Pool(""), Options());
  ASSERT_TRUE(plain.ok()) << ::testing::PrintToString(Messages(plain));
  EXPECT_FALSE(plain.objects.at(0)->pool()->snapshot.base);
  // No default object: a pool that does not ask keeps the document (and spec hash) it had.
  EXPECT_FALSE(plain.objects.at(0)->manifest["spec"].isMember("snapshot"));
  ParseResult base = ParseManifest("p.yaml", Pool("  snapshot: {base: true}\n"), Options());
  ASSERT_TRUE(base.ok()) << ::testing::PrintToString(Messages(base));
  EXPECT_TRUE(base.objects.at(0)->pool()->snapshot.base);
  EXPECT_NE(base.objects.at(0)->specHash, plain.objects.at(0)->specHash);
  ParseResult empty = ParseManifest("p.yaml", Pool("  snapshot: {}\n"), Options());
  ASSERT_TRUE(empty.ok()) << ::testing::PrintToString(Messages(empty));
  EXPECT_FALSE(empty.objects.at(0)->pool()->snapshot.base);
  ParseResult bad = ParseManifest("p.yaml", Pool("  snapshot: {base: yes}\n"), Options());
  ASSERT_EQ(bad.diagnostics.size(), 1u) << ::testing::PrintToString(Messages(bad));
  EXPECT_EQ(bad.diagnostics[0].path, "spec.snapshot.base");
  ParseResult unknown = ParseManifest("p.yaml", Pool("  snapshot: {diff: true}\n"), Options());
  EXPECT_FALSE(unknown.ok());
}

TEST(Parser, AcceptsOnlyKnownSeccompProfiles) {
  ParseResult strict = ParseManifest("p.yaml", Pool("  security: {seccomp: strict}\n"), Options());
  ASSERT_TRUE(strict.ok()) << ::testing::PrintToString(Messages(strict));
  EXPECT_EQ(strict.objects.at(0)->pool()->security.seccomp, "strict");
  ParseResult bad = ParseManifest("p.yaml", Pool("  security: {seccomp: lenient}\n"), Options());
  ASSERT_EQ(bad.diagnostics.size(), 1u) << ::testing::PrintToString(Messages(bad));
  EXPECT_EQ(bad.diagnostics[0].path, "spec.security.seccomp");
  EXPECT_TRUE(bad.objects.empty());
}

TEST(Parser, ReadsIoLimitsAndRefusesNegativeOnes) {
  ParseResult io = ParseManifest(
      "p.yaml", Pool("  resources: {io: {readBps: 1048576, writeIops: 100}}\n"), Options());
  ASSERT_TRUE(io.ok()) << ::testing::PrintToString(Messages(io));
  const manifests::IoLimits& limits = io.objects.at(0)->pool()->resources.io;
  EXPECT_EQ(limits.readBps, 1048576);
  EXPECT_EQ(limits.writeBps, 0);
  EXPECT_EQ(limits.readIops, 0);
  EXPECT_EQ(limits.writeIops, 100);
  EXPECT_TRUE(limits.Any());
  ParseResult none = ParseManifest("p.yaml", Pool(""), Options());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none.objects.at(0)->pool()->resources.io.Any());
  ParseResult bad = ParseManifest("p.yaml", Pool("  resources: {io: {writeBps: -1}}\n"), Options());
  ASSERT_EQ(bad.diagnostics.size(), 1u) << ::testing::PrintToString(Messages(bad));
  EXPECT_EQ(bad.diagnostics[0].path, "spec.resources.io.writeBps");
  ParseResult unknown = ParseManifest("p.yaml", Pool("  resources: {io: {bps: 1}}\n"), Options());
  EXPECT_FALSE(unknown.ok());
}

TEST(Parser, ReportsEveryErrorOfEveryDocument) {
  std::string text = Pool(R"(  resources: {vcpus: 0, memoryMiB: 99999999}
  lifecycle: forever
  replicas: {running: "3"}
)") + R"(---
apiVersion: v1
kind: Tenant
metadata: {name: Bad_Name}
)";
  ParseResult result = ParseManifest("f.yaml", text, Options());
  EXPECT_THAT(
      Messages(result),
      ElementsAre(
          "f.yaml:8:22: Pool acme/workers: spec.resources.vcpus: must be >= 1 (got 0)",
          "f.yaml:8:36: Pool acme/workers: spec.resources.memoryMiB: must be <= 262144 (got "
          "99999999)",
          "f.yaml:9:14: Pool acme/workers: spec.lifecycle: must be one of service, daemon, job "
          "(got \"forever\")",
          "f.yaml:10:23: Pool acme/workers: spec.replicas.running: must be an integer (got a "
          "string \"3\")",
          "f.yaml:12:13: Tenant Bad_Name: apiVersion: must be \"mvm.dev/v1alpha1\" (got \"v1\")",
          "f.yaml:14:18: Tenant Bad_Name: metadata.name: must be a DNS label: lowercase letters, "
          "digits and '-', starting and ending with a letter or digit, at most 63 characters "
          "(got \"Bad_Name\")"));
}

TEST(Parser, UnknownFieldsAreAllReportedAtTheirKeyWithSuggestion) {
  ParseResult result = ParseManifest("f.yaml", Pool(R"(  resources:
    memoryMib: 128
    cpus: 2
)"),
                                     Options());
  EXPECT_THAT(Messages(result),
              ElementsAre("f.yaml:9:5: Pool acme/workers: spec.resources.memoryMib: unknown field "
                          "(did you mean \"memoryMiB\"?)",
                          "f.yaml:10:5: Pool acme/workers: spec.resources.cpus: unknown field "
                          "(did you mean \"vcpus\"?)"));
}

TEST(Parser, MissingRequiredFieldPointsAtItsParent) {
  ParseResult result = ParseManifest("f.yaml", R"(apiVersion: mvm.dev/v1alpha1
kind: Pool
metadata: {name: w, tenant: acme}
spec:
  image:
    kernel: vmlinux
)",
                                     Options());
  EXPECT_THAT(Messages(result),
              ElementsAre("f.yaml:6:5: Pool acme/w: spec.image.rootfs: is required"));
}

TEST(Parser, KindMustBeKnown) {
  EXPECT_THAT(
      Messages(ParseManifest("f.yaml", "apiVersion: mvm.dev/v1alpha1\nkind: Job\n", Options())),
      ElementsAre("f.yaml:2:7: kind: must be one of Pool, Tenant (got \"Job\")"));
  EXPECT_THAT(Messages(ParseManifest("f.yaml", "apiVersion: mvm.dev/v1alpha1\n", Options())),
              ElementsAre("f.yaml:1:1: kind: is required (one of Pool, Tenant)"));
  EXPECT_THAT(Messages(ParseManifest("f.yaml", "- a\n- b\n", Options())),
              ElementsAre(HasSubstr("f.yaml:1:1: a manifest document must be a mapping")));
}

TEST(Parser, LabelKeysAreChecked) {
  ParseResult result = ParseManifest("f.yaml", R"(apiVersion: mvm.dev/v1alpha1
kind: Tenant
metadata:
  name: acme
  labels: {"bad key!": x, good: y}
)",
                                     Options());
  EXPECT_THAT(Messages(result),
              ElementsAre(HasSubstr("f.yaml:5:12: Tenant acme: metadata.labels.bad key!: is not "
                                    "an allowed key")));
}

TEST(Parser, QuotedNumberIsAString) {
  ParseResult result = ParseManifest("f.yaml", Pool("  resources: {vcpus: \"2\"}\n"), Options());
  EXPECT_THAT(Messages(result), ElementsAre(HasSubstr("spec.resources.vcpus: must be an integer "
                                                      "(got a string \"2\")")));
}

TEST(Parser, SyntaxErrorHasLineAndColumn) {
  ParseResult result = ParseManifest("f.yaml", "kind: Pool\nmetadata: {name: [x\n", Options());
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(result.diagnostics[0].line, 3);
  EXPECT_THAT(result.diagnostics[0].message, HasSubstr("YAML syntax error"));
}

TEST(Parser, DuplicateKeyIsAnError) {
  ParseResult result =
      ParseManifest("f.yaml", Pool("  lifecycle: job\n  lifecycle: daemon\n"), Options());
  EXPECT_THAT(Messages(result), ElementsAre("f.yaml:9:3: duplicate key \"lifecycle\""));
  EXPECT_TRUE(result.objects.empty());
}

TEST(Parser, AliasBombIsRefusedQuickly) {
  std::string text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'j'; ++c) {
    std::string prev(1, static_cast<char>(c - 1));
    text += std::string(1, c) + ": &" + c + " [*" + prev + ", *" + prev + ", *" + prev + ", *" +
            prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev +
            ", *" + prev + "]\n";
  }
  ParseResult result = ParseManifest("bomb.yaml", text, Options());
  EXPECT_THAT(Messages(result), ElementsAre(HasSubstr("aliases expand to more than")));
}

TEST(Parser, DeepNestingIsRefused) {
  std::string text = std::string(200, '[') + std::string(200, ']') + "\n";
  ParseResult result = ParseManifest("deep.yaml", text, Options());
  EXPECT_THAT(Messages(result), ElementsAre(HasSubstr("nesting deeper than 64 levels")));
}

TEST(Parser, JsonErrorsHaveLineAndColumn) {
  ParseResult result = ParseManifest("p.json", R"({
  "apiVersion": "mvm.dev/v1alpha1",
  "kind": "Pool",
  "metadata": {"name": "w", "tenant": "acme"},
  "spec": {"image": {"kernel": "k", "rootfs": "r"}, "replicas": {"warm": 20000}}
})",
                                     Options());
  EXPECT_THAT(Messages(result), ElementsAre("p.json:5:74: Pool acme/w: spec.replicas.warm: must "
                                            "be <= 10000 (got 20000)"));
  ParseResult syntax = ParseManifest("p.json", "{\n  \"kind\": \"Pool\",\n}\n", Options());
  ASSERT_EQ(syntax.diagnostics.size(), 1u);
  EXPECT_EQ(syntax.diagnostics[0].line, 3);
  EXPECT_THAT(syntax.diagnostics[0].message, HasSubstr("JSON syntax error"));
}

TEST(Parser, JsonArrayHoldsSeveralDocuments) {
  ParseResult result = ParseManifest("all.json", R"([
  {"apiVersion": "mvm.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"}},
  {"apiVersion": "mvm.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "w", "tenant": "acme"},
   "spec": {"image": {"kernel": "k", "rootfs": "r"}}}
])",
                                     Options());
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(Messages(result));
  ASSERT_EQ(result.objects.size(), 2u);
  EXPECT_EQ(result.objects[1]->source.line, 3);
}

TEST(Parser, SpecHashIsStableAcrossFormattingAndOrder) {
  ParseResult block = ParseManifest("a.yaml", Pool(R"(  resources:
    memoryMiB: 512
    vcpus: 2
  replicas: {warm: 2}
)"),
                                    Options());
  ParseResult json = ParseManifest("b.json", R"({"kind": "Pool", "apiVersion": "mvm.dev/v1alpha1",
  "metadata": {"tenant": "acme", "name": "workers", "labels": {"x": "y"}},
  "spec": {"replicas": {"warm": 2, "running": 0}, "resources": {"vcpus": 2, "memoryMiB": 512},
           "image": {"rootfs": "rootfs.ext4", "kernel": "vmlinux"}}})",
                                   Options());
  ASSERT_TRUE(block.ok() && json.ok());
  EXPECT_EQ(block.objects[0]->specHash, json.objects[0]->specHash);
  EXPECT_EQ(block.objects[0]->specHash.size(), 16u);
  ParseResult other = ParseManifest("a.yaml", Pool("  replicas: {warm: 3}\n"), Options());
  EXPECT_NE(other.objects.at(0)->specHash, block.objects[0]->specHash);
}

TEST(Parser, SubnetMustBeANetworkAddress) {
  auto tenant = [](std::string_view subnet) {
    return std::string(kTenant) + "spec: {network: {subnet: " + std::string(subnet) + "}}\n";
  };
  EXPECT_TRUE(ParseManifest("t.yaml", tenant("10.240.1.0/24"), Options()).ok());
  EXPECT_THAT(
      Messages(ParseManifest("t.yaml", tenant("10.240.1.7/24"), Options())),
      ElementsAre("t.yaml:4:26: Tenant acme: spec.network.subnet: is not a usable IPv4 "
                  "CIDR: host bits are set (not a network address) (got \"10.240.1.7/24\")"));
  EXPECT_THAT(Messages(ParseManifest("t.yaml", tenant("300.1.1.0/24"), Options())),
              ElementsAre(HasSubstr("octet 1 is over 255")));
  EXPECT_THAT(Messages(ParseManifest("t.yaml", tenant("10.0.0.0/31"), Options())),
              ElementsAre(HasSubstr("prefix must be between /8 and /30")));
  EXPECT_THAT(Messages(ParseManifest("t.yaml", tenant("ten.0.0.0/8"), Options())),
              ElementsAre(HasSubstr("must be an IPv4 CIDR such as 10.240.1.0/24")));
}

TEST(ImagePaths, RelativeAndAbsolutePathsInsideARootAreAccepted) {
  testing::TempDir dir;
  fs::path a = dir / "a";
  fs::path b = dir / "b";
  std::vector<fs::path> roots = {a, b.string() + "/"};
  EXPECT_EQ(*ResolveImagePath("vmlinux", roots), (a / "vmlinux").string());
  EXPECT_EQ(*ResolveImagePath("kernels/./6.1/../6.2/vmlinux", roots),
            (a / "kernels/6.2/vmlinux").string());
  EXPECT_EQ(*ResolveImagePath((b / "rootfs.ext4").string(), roots), (b / "rootfs.ext4").string());
  // A relative path resolves in the first root that has the file.
  testing::WriteFile(b / "vmlinux", "x");
  EXPECT_EQ(*ResolveImagePath("vmlinux", roots), (b / "vmlinux").string());
}

TEST(ImagePaths, EscapesAreRejected) {
  std::vector<fs::path> roots = {"/var/lib/mvm/images"};
  for (const char* path :
       {"../../etc/shadow", "/etc/passwd", "a/../../b", "..", ".", "/var/lib/mvm/images",
        "/var/lib/mvm/images/../secrets/key", "/var/lib/mvm/imagesX/vmlinux"}) {
    auto result = ResolveImagePath(path, roots);
    ASSERT_FALSE(result.ok()) << path;
    EXPECT_THAT(result.error().message, HasSubstr("must stay inside the image roots")) << path;
  }
}

TEST(ImagePaths, SymlinkLeavingTheRootIsRejected) {
  testing::TempDir dir;
  fs::create_directories(dir / "images");
  testing::WriteFile(dir / "secret", "x");
  fs::create_symlink(dir / "secret", dir / "images" / "vmlinux");
  testing::WriteFile(dir / "images" / "real", "x");
  fs::create_symlink("real", dir / "images" / "alias");
  auto escaped = ResolveImagePath("vmlinux", {dir / "images"});
  ASSERT_FALSE(escaped.ok());
  EXPECT_THAT(escaped.error().message, HasSubstr("leaves the image roots through a symlink"));
  EXPECT_TRUE(ResolveImagePath("alias", {dir / "images"}).ok());
}

TEST(ImagePaths, ManifestErrorNamesTheField) {
  ParseResult result = ParseManifest("f.yaml", R"(apiVersion: mvm.dev/v1alpha1
kind: Pool
metadata: {name: w, tenant: acme}
spec:
  image: {kernel: ../../../etc/shadow, rootfs: /etc/passwd}
)",
                                     Options());
  EXPECT_THAT(Messages(result),
              ElementsAre("f.yaml:5:19: Pool acme/w: spec.image.kernel: must stay inside the "
                          "image roots (/var/lib/mvm/images) (got \"../../../etc/shadow\")",
                          "f.yaml:5:48: Pool acme/w: spec.image.rootfs: must stay inside the "
                          "image roots (/var/lib/mvm/images) (got \"/etc/passwd\")"));
}

}  // namespace
}  // namespace mvm::manifests
