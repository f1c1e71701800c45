// Directory loader: recursion and hidden files, last-known-good per file, conflicts, pool→tenant
// consistency, generations and the diff between snapshots.

#include "manifests/loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace mvm::manifests {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string TenantDoc(std::string_view name) {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: " + std::string(name) +
         "}\n";
}

std::string PoolDoc(std::string_view tenant, std::string_view name, int warm = 1,
                    std::string_view labels = "{}") {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: " + std::string(name) +
         ", tenant: " + std::string(tenant) + ", labels: " + std::string(labels) +
         "}\nspec:\n  image: {kernel: vmlinux, rootfs: rootfs.ext4}\n  replicas: {warm: " +
         std::to_string(warm) + "}\n";
}

class LoaderTest : public ::testing::Test {
 protected:
  Loader MakeLoader() { return Loader({{dir_.path()}, ParseOptions{}}); }
  fs::path Path(std::string_view name) { return dir_ / name; }
  std::vector<std::string> Errors(const DesiredState& state) {
    std::vector<std::string> out;
    for (const auto& d : state.diagnostics) out.push_back(d.ToString());
    return out;
  }
  testing::TempDir dir_{"mvm-loader"};
};

TEST_F(LoaderTest, ReadsManifestFilesRecursivelyAndSkipsHiddenAndOtherFiles) {
  testing::WriteFile(Path("tenants.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("pools/web.yml"), PoolDoc("acme", "web"));
  testing::WriteFile(Path("pools/deep/jobs.json"),
                     R"({"apiVersion": "mvm.dev/v1alpha1", "kind": "Pool",
                         "metadata": {"name": "jobs", "tenant": "acme"},
                         "spec": {"image": {"kernel": "k", "rootfs": "r"}}})");
  testing::WriteFile(Path(".git/config.yaml"), "not: [valid");
  testing::WriteFile(Path(".hidden.yaml"), "not: [valid");
  testing::WriteFile(Path("pools/.swap/x.yaml"), "not: [valid");
  testing::WriteFile(Path("README.md"), "# not a manifest");
  testing::WriteFile(Path("notes.txt"), "kind: Pool");
  Loader loader = MakeLoader();
  auto outcome = loader.LoadAll();
  EXPECT_THAT(Errors(*outcome.state), IsEmpty());
  EXPECT_EQ(outcome.state->objects.size(), 3u);
  EXPECT_EQ(outcome.state->revision, 1u);
  EXPECT_EQ(outcome.diff.added.size(), 3u);
  EXPECT_TRUE(outcome.changed);
}

TEST_F(LoaderTest, InvalidFileKeepsItsLastKnownGoodObjectsAndReportsErrors) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("p.yaml"), PoolDoc("acme", "web", 2));
  Loader loader = MakeLoader();
  auto first = loader.LoadAll();
  ASSERT_EQ(first.state->objects.size(), 2u);

  testing::ReplaceFile(Path("p.yaml"), PoolDoc("acme", "web", -5));
  auto broken = loader.LoadAll();
  EXPECT_TRUE(broken.changed);
  EXPECT_TRUE(broken.diff.empty());  // nothing is removed or changed
  const Object* pool = broken.state->Find(ObjectKey::PoolKey("acme", "web"));
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->pool()->replicas.warm, 2);
  EXPECT_THAT(Errors(*broken.state),
              ElementsAre(Path("p.yaml").string() +
                          ":6:20: Pool acme/web: spec.replicas.warm: must be >= 0 (got -5)"));

  testing::ReplaceFile(Path("p.yaml"), PoolDoc("acme", "web", 3));
  auto fixed = loader.LoadAll();
  EXPECT_THAT(Errors(*fixed.state), IsEmpty());
  EXPECT_THAT(fixed.diff.changed, ElementsAre(ObjectKey::PoolKey("acme", "web")));
  EXPECT_EQ(fixed.state->Find(ObjectKey::PoolKey("acme", "web"))->pool()->replicas.warm, 3);
}

TEST_F(LoaderTest, UnreadableSyntaxKeepsLastKnownGoodToo) {
  testing::WriteFile(Path("all.yaml"), TenantDoc("acme") + "---\n" + PoolDoc("acme", "web"));
  Loader loader = MakeLoader();
  ASSERT_EQ(loader.LoadAll().state->objects.size(), 2u);
  testing::ReplaceFile(Path("all.yaml"), "kind: [\n");
  auto outcome = loader.LoadAll();
  EXPECT_EQ(outcome.state->objects.size(), 2u);
  EXPECT_THAT(Errors(*outcome.state), ElementsAre(HasSubstr("YAML syntax error")));
}

TEST_F(LoaderTest, NewInvalidFileContributesNothing) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("p.yaml"), PoolDoc("acme", "web", -1));
  auto outcome = MakeLoader().LoadAll();
  EXPECT_EQ(outcome.state->objects.size(), 1u);
  EXPECT_EQ(outcome.state->diagnostics.size(), 1u);
}

TEST_F(LoaderTest, DeletedFileRemovesItsObjects) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("p.yaml"), PoolDoc("acme", "web"));
  Loader loader = MakeLoader();
  loader.LoadAll();
  fs::remove(Path("p.yaml"));
  auto outcome = loader.Load({.rescan = false, .paths = {Path("p.yaml")}, .writing = {}});
  EXPECT_THAT(outcome.diff.removed, ElementsAre(ObjectKey::PoolKey("acme", "web")));
  EXPECT_EQ(outcome.state->objects.size(), 1u);
}

TEST_F(LoaderTest, SameObjectInTwoFilesIsAConflictReportedOnBoth) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("a.yaml"), PoolDoc("acme", "web", 1));
  Loader loader = MakeLoader();
  loader.LoadAll();
  testing::WriteFile(Path("b.yaml"), PoolDoc("acme", "web", 7));
  auto outcome = loader.LoadAll();
  // The previous definition is kept until the conflict is resolved.
  EXPECT_EQ(outcome.state->Find(ObjectKey::PoolKey("acme", "web"))->pool()->replicas.warm, 1);
  EXPECT_THAT(Errors(*outcome.state), ElementsAre(Path("a.yaml").string() +
                                                      ":1:1: Pool acme/web: conflict: defined more "
                                                      "than once (also at " +
                                                      Path("b.yaml").string() + ":1:1)",
                                                  Path("b.yaml").string() +
                                                      ":1:1: Pool acme/web: conflict: defined more "
                                                      "than once (also at " +
                                                      Path("a.yaml").string() + ":1:1)"));
  EXPECT_TRUE(outcome.diff.empty());
}

TEST_F(LoaderTest, NewConflictingObjectIsLeftOut) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("a.yaml"), PoolDoc("acme", "web"));
  testing::WriteFile(Path("b.yaml"), PoolDoc("acme", "web"));
  auto outcome = MakeLoader().LoadAll();
  EXPECT_EQ(outcome.state->Find(ObjectKey::PoolKey("acme", "web")), nullptr);
  EXPECT_EQ(outcome.state->diagnostics.size(), 2u);
}

TEST_F(LoaderTest, DuplicateInOneFileIsAConflict) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme") + "---\n" + TenantDoc("acme"));
  auto outcome = MakeLoader().LoadAll();
  EXPECT_EQ(outcome.state->diagnostics.size(), 2u);
  EXPECT_THAT(outcome.state->diagnostics[0].message, HasSubstr("conflict"));
}

TEST_F(LoaderTest, PoolWithoutTenantIsLeftOutWithAnError) {
  testing::WriteFile(Path("p.yaml"), PoolDoc("ghost", "web"));
  auto outcome = MakeLoader().LoadAll();
  EXPECT_TRUE(outcome.state->objects.empty());
  EXPECT_THAT(
      Errors(*outcome.state),
      ElementsAre(Path("p.yaml").string() +
                  ":3:31: Pool ghost/web: metadata.tenant: tenant \"ghost\" is not defined"));
}

TEST_F(LoaderTest, RemovedTenantWithRemainingPoolsIsHeldBack) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("p.yaml"), PoolDoc("acme", "web"));
  Loader loader = MakeLoader();
  loader.LoadAll();
  fs::remove(Path("t.yaml"));
  auto outcome = loader.LoadAll();
  EXPECT_EQ(outcome.state->objects.size(), 2u);
  EXPECT_TRUE(outcome.diff.empty());
  EXPECT_THAT(Errors(*outcome.state), ElementsAre(HasSubstr("keeping the tenant")));
}

TEST_F(LoaderTest, GenerationGrowsOnlyWhenTheSpecChanges) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  testing::WriteFile(Path("p.yaml"), PoolDoc("acme", "web", 1));
  Loader loader = MakeLoader();
  auto key = ObjectKey::PoolKey("acme", "web");
  EXPECT_EQ(loader.LoadAll().state->Find(key)->generation, 1u);

  testing::ReplaceFile(Path("p.yaml"), PoolDoc("acme", "web", 1, "{team: web}"));
  auto relabelled = loader.LoadAll();
  EXPECT_TRUE(relabelled.changed);
  EXPECT_TRUE(relabelled.diff.changed.empty());
  EXPECT_EQ(relabelled.state->Find(key)->generation, 1u);

  testing::ReplaceFile(Path("p.yaml"), PoolDoc("acme", "web", 2, "{team: web}"));
  auto edited = loader.LoadAll();
  EXPECT_THAT(edited.diff.changed, ElementsAre(key));
  EXPECT_EQ(edited.state->Find(key)->generation, 2u);
  EXPECT_EQ(edited.state->revision, 3u);
}

TEST_F(LoaderTest, UnchangedReloadPublishesNothing) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  Loader loader = MakeLoader();
  auto first = loader.LoadAll();
  testing::ReplaceFile(Path("t.yaml"), TenantDoc("acme"));  // same content, new inode
  auto second = loader.LoadAll();
  EXPECT_FALSE(second.changed);
  EXPECT_EQ(second.state, first.state);
  EXPECT_EQ(second.state->revision, 1u);
}

TEST_F(LoaderTest, FilesBeingWrittenAreNotRead) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  Loader loader = MakeLoader();
  loader.LoadAll();
  testing::WriteFile(Path("t.yaml"), "apiVersion: mvm.dev/v1alpha1\nkind: Ten");  // half written
  auto during = loader.Load({.rescan = true, .paths = {}, .writing = {Path("t.yaml")}});
  EXPECT_FALSE(during.changed);
  EXPECT_THAT(during.state->diagnostics, IsEmpty());
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme") + "spec: {quota: {vcpus: 2}}\n");
  auto after = loader.Load({.rescan = false, .paths = {Path("t.yaml")}, .writing = {}});
  EXPECT_THAT(after.diff.changed, ElementsAre(ObjectKey::TenantKey("acme")));
}

TEST_F(LoaderTest, IncrementalLoadMatchesFullRescan) {
  testing::WriteFile(Path("t.yaml"), TenantDoc("acme"));
  Loader incremental = MakeLoader();
  incremental.LoadAll();
  testing::WriteFile(Path("sub/p.yaml"), PoolDoc("acme", "web"));
  auto a = incremental.Load({.rescan = false, .paths = {Path("sub/p.yaml")}, .writing = {}});
  auto b = MakeLoader().LoadAll();
  ASSERT_EQ(a.state->objects.size(), b.state->objects.size());
  for (const auto& [key, object] : b.state->objects) {
    ASSERT_NE(a.state->Find(key), nullptr);
    EXPECT_EQ(a.state->Find(key)->specHash, object->specHash);
  }
  // Hidden paths named in a change set are still ignored.
  testing::WriteFile(Path(".git/x.yaml"), "bad: [");
  auto c = incremental.Load({.rescan = false, .paths = {Path(".git/x.yaml")}, .writing = {}});
  EXPECT_FALSE(c.changed);
}

TEST_F(LoaderTest, FollowsTheConfigMapSymlinkLayout) {
  // kubelet's layout: visible names are symlinks through the hidden ..data link.
  testing::WriteFile(Path("..2026_11_22_01/acme.yaml"), TenantDoc("acme"));
  fs::create_directory_symlink("..2026_11_22_01", Path("..data"));
  fs::create_symlink("..data/acme.yaml", Path("acme.yaml"));
  Loader loader = MakeLoader();
  auto first = loader.LoadAll();
  ASSERT_EQ(first.state->objects.size(), 1u);

  testing::WriteFile(Path("..2026_11_22_02/acme.yaml"),
                     TenantDoc("acme") + "spec: {quota: {warm: 1}}\n");
  fs::create_directory_symlink("..2026_11_22_02", Path("..data_tmp"));
  fs::rename(Path("..data_tmp"), Path("..data"));
  auto swapped = loader.LoadAll();
  EXPECT_THAT(swapped.diff.changed, ElementsAre(ObjectKey::TenantKey("acme")));
  EXPECT_EQ(swapped.state->Find(ObjectKey::TenantKey("acme"))->tenant()->quota.warm, 1);
}

TEST_F(LoaderTest, DirectorySymlinkCyclesAreNotFollowedForever) {
  testing::WriteFile(Path("a/t.yaml"), TenantDoc("acme"));
  fs::create_directory_symlink("..", Path("a/loop"));
  auto outcome = MakeLoader().LoadAll();
  EXPECT_EQ(outcome.state->objects.size(), 1u);
  EXPECT_THAT(outcome.state->diagnostics, IsEmpty());
}

TEST_F(LoaderTest, OversizedFileIsAnError) {
  testing::WriteFile(Path("big.yaml"), std::string(kMaxManifestBytes + 1, '#'));
  auto outcome = MakeLoader().LoadAll();
  EXPECT_THAT(Errors(*outcome.state), ElementsAre(HasSubstr("file is larger than 4 MiB")));
}

}  // namespace
}  // namespace mvm::manifests
