#include "manifests/parser.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <memory>
#include <optional>
#include <system_error>
#include <unordered_map>

#include "manifests/schema.h"
#include "manifests/schema_fastpath.h"
#include "manifests/value_tree.h"

namespace mvm::manifests {
namespace {

namespace fs = std::filesystem;

fs::path WithoutTrailingSlash(fs::path p) {
  p = p.lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

bool Within(const fs::path& root, const fs::path& p) {
  auto [r, q] = std::mismatch(root.begin(), root.end(), p.begin(), p.end());
  return r == root.end();
}

std::string RootsText(const std::vector<fs::path>& roots) {
  std::string out;
  for (const auto& r : roots) out += (out.empty() ? "" : ", ") + r.string();
  return out;
}

// "10.240.1.0/24": four octets of at most 255, a prefix of 8 to 30 bits, no host bits set.
std::string CheckSubnet(const std::string& cidr) {
  unsigned octets[4] = {};
  unsigned prefix = 0;
  const char* p = cidr.data();
  const char* end = cidr.data() + cidr.size();
  for (int i = 0; i < 4; ++i) {
    auto [next, ec] = std::from_chars(p, end, octets[i]);
    if (ec != std::errc() || octets[i] > 255)
      return "octet " + std::to_string(i + 1) + " is over 255";
    p = next + 1;  // skip '.' or '/', guaranteed by the schema's pattern
  }
  std::from_chars(p, end, prefix);
  if (prefix < 8 || prefix > 30) return "prefix must be between /8 and /30";
  uint32_t address = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3];
  uint32_t host_mask = prefix == 32 ? 0 : (0xffffffffu >> prefix);
  if (address & host_mask) return "host bits are set (not a network address)";
  return "";
}

// Reads the (defaulted) document through jsoncpp's conversions, as the Json::Value code did:
// const lookups see a missing member as null; Demand() adds one, as a non-const operator[] does.
class DocumentView {
 public:
  explicit DocumentView(ValueTree& tree) : tree_(tree) {}

  // doc[name] on a const value: the member, or kNoNode (null).
  uint32_t Get(uint32_t node, std::string_view name) const {
    return node == kNoNode ? kNoNode : tree_.Find(node, name);
  }
  bool IsString(uint32_t node) const {
    return node != kNoNode && tree_[node].type == NodeType::kString;
  }
  bool IsObject(uint32_t node) const {
    return node != kNoNode && tree_[node].type == NodeType::kObject;
  }
  bool Has(uint32_t node, std::string_view name) const { return Get(node, name) != kNoNode; }
  std::string String(uint32_t node) const {
    return node == kNoNode ? std::string() : tree_.AsString(node);
  }
  int Int(uint32_t node) const { return node == kNoNode ? 0 : tree_.AsInt(node); }
  int64_t Int64(uint32_t node) const { return node == kNoNode ? 0 : tree_.AsInt64(node); }

  ValueTree& tree() const { return tree_; }

 private:
  ValueTree& tree_;
};

std::map<std::string, std::string> StringMap(const DocumentView& doc, uint32_t v) {
  std::map<std::string, std::string> out;
  if (!doc.IsObject(v)) return out;
  const ValueTree& tree = doc.tree();
  for (uint32_t m = tree[v].first; m != kNoNode; m = tree[m].next) {
    out.emplace(std::string(tree.Key(m)), doc.String(m));
  }
  return out;
}

std::optional<int64_t> OptionalInt(const DocumentView& doc, uint32_t v, std::string_view name) {
  if (!doc.IsObject(v) || !doc.Has(v, name)) return std::nullopt;
  return doc.Int64(doc.Get(v, name));
}

TenantSpec BuildTenant(const DocumentView& doc, uint32_t spec) {
  TenantSpec out;
  uint32_t q = doc.Get(spec, "quota");
  out.quota.vcpus = OptionalInt(doc, q, "vcpus");
  out.quota.memoryMiB = OptionalInt(doc, q, "memoryMiB");
  out.quota.running = OptionalInt(doc, q, "running");
  out.quota.warm = OptionalInt(doc, q, "warm");
  out.quota.sleeping = OptionalInt(doc, q, "sleeping");
  out.quota.diskMiB = OptionalInt(doc, q, "diskMiB");
  uint32_t network = doc.Get(spec, "network");
  if (doc.IsObject(network) && doc.Has(network, "subnet")) {
    out.subnet = doc.String(doc.Get(network, "subnet"));
  }
  return out;
}

PoolSpec BuildPool(const DocumentView& doc, uint32_t spec, ImageSpec image) {
  const ValueTree& tree = doc.tree();
  PoolSpec out;
  out.runtime = ParseRuntime(doc.String(doc.Get(spec, "runtime"))).value_or(Runtime::kFirecracker);
  out.image = std::move(image);
  // The schema makes cmd a list (a null or absent one iterates as empty, as in jsoncpp).
  uint32_t cmd = doc.Get(spec, "cmd");
  if (cmd != kNoNode && tree[cmd].type == NodeType::kArray) {
    for (uint32_t arg = tree[cmd].first; arg != kNoNode; arg = tree[arg].next) {
      out.cmd.push_back(doc.String(arg));
    }
  }
  out.env = StringMap(doc, doc.Get(spec, "env"));
  uint32_t r = doc.Get(spec, "resources");
  uint32_t io = doc.Get(r, "io");  // absent: Int64 of kNoNode is 0, no limit
  out.resources = {doc.Int(doc.Get(r, "vcpus")),
                   doc.Int64(doc.Get(r, "memoryMiB")),
                   doc.Int64(doc.Get(r, "diskMiB")),
                   {doc.Int64(doc.Get(io, "readBps")), doc.Int64(doc.Get(io, "writeBps")),
                    doc.Int64(doc.Get(io, "readIops")), doc.Int64(doc.Get(io, "writeIops"))}};
  std::string lifecycle = doc.String(doc.Get(spec, "lifecycle"));
  out.lifecycle = lifecycle == "daemon" ? Lifecycle::kDaemon
                  : lifecycle == "job"  ? Lifecycle::kJob
                                        : Lifecycle::kService;
  uint32_t n = doc.Get(spec, "replicas");
  out.replicas = {doc.Int(doc.Get(n, "running")), doc.Int(doc.Get(n, "warm")),
                  doc.Int(doc.Get(n, "sleeping"))};
  uint32_t p = doc.Get(spec, "policy");
  out.policy = {
      doc.Int64(doc.Get(p, "minRunningSeconds")),   doc.Int64(doc.Get(p, "minWarmSeconds")),
      doc.Int64(doc.Get(p, "idleToWarmSeconds")),   doc.Int64(doc.Get(p, "warmToSleepSeconds")),
      doc.Int64(doc.Get(p, "drainTimeoutSeconds")), doc.Int64(doc.Get(p, "gracefulStopSeconds"))};
  uint32_t security = doc.Get(spec, "security");
  if (uint32_t seccomp = doc.Get(security, "seccomp"); doc.IsString(seccomp)) {
    out.security.seccomp = doc.String(seccomp);
  }
  uint32_t snapshot = doc.Get(spec, "snapshot");
  if (uint32_t base = doc.Get(snapshot, "base"); base != kNoNode) {
    out.snapshot.base = doc.tree()[base].type == NodeType::kBool && doc.tree()[base].boolean;
  }
  return out;
}

// "Pool acme/workers" from whatever identity the document has, even if partly invalid.
std::string ObjectLabel(std::string_view kind, const DocumentView& doc, uint32_t root) {
  uint32_t meta = doc.Get(root, "metadata");
  std::string name;
  std::string tenant;
  if (doc.IsObject(meta)) {
    if (uint32_t v = doc.Get(meta, "name"); doc.IsString(v)) name = doc.String(v);
    if (uint32_t v = doc.Get(meta, "tenant"); doc.IsString(v)) tenant = doc.String(v);
  }
  std::string label(kind);
  if (name.empty()) return label;
  label += ' ';
  if (kind == "Pool" && !tenant.empty()) label += tenant + '/';
  return label + name;
}

// ResolveImagePath per distinct written path, once per file: the documents of one file are read
// at one moment.
class ImagePathCache {
 public:
  explicit ImagePathCache(const std::vector<fs::path>& roots) : roots_(roots) {}
  const Result<std::string>& Resolve(const std::string& written) {
    auto it = cache_.find(written);
    if (it == cache_.end()) it = cache_.emplace(written, ResolveImagePath(written, roots_)).first;
    return it->second;
  }

 private:
  const std::vector<fs::path>& roots_;
  std::unordered_map<std::string, Result<std::string>> cache_;
};

// An object's manifest, kept as a copy of its document's tree until first read.
class TreeManifest : public Manifest::Source {
 public:
  TreeManifest(const ValueTree& tree, uint32_t root) : tree_(tree), root_(root) {}
  Json::Value Build() const override { return tree_.ToJson(root_); }

 private:
  ValueTree tree_;
  uint32_t root_;
};

struct FileContext {
  const std::string& file;
  const ParseOptions& options;
  const SchemaSet& schemas;
  ImagePathCache images;
  ParseResult& out;
};

void ParseDocument(FileContext& ctx, ValueTree& tree, uint32_t root, Position start, bool clean) {
  DocumentView doc(tree);
  Diagnostics& diagnostics = ctx.out.diagnostics;
  auto fail = [&](uint32_t at, const std::string& object, const std::string& path,
                  std::string message) {
    Position pos = at == kNoNode ? Position{} : tree[at].pos;
    if (pos.line == 0) pos = start;
    diagnostics.push_back({ctx.file, pos.line, pos.column, object, path, std::move(message)});
  };
  if (!doc.IsObject(root)) {
    fail(root, "", "", "a manifest document must be a mapping with apiVersion, kind and metadata");
    return;
  }
  uint32_t kind_value = doc.Get(root, "kind");
  if (kind_value == kNoNode) {
    fail(root, "", "kind", "is required (one of Pool, Tenant)");
    return;
  }
  const std::optional<Kind> parsed_kind =
      doc.IsString(kind_value) ? ParseKind(tree.String(kind_value)) : std::nullopt;
  if (!parsed_kind.has_value()) {
    fail(kind_value, "", "kind",
         "must be one of Pool, Tenant (got " +
             (doc.IsString(kind_value) ? "\"" + doc.String(kind_value) + "\""
                                       : std::string("a non-string")) +
             ")");
    return;
  }
  const Kind kind_id = parsed_kind.value();
  std::string label = ObjectLabel(KindName(kind_id), doc, root);
  const SchemaSet& schemas = ctx.schemas;
  const FastSchema* fast = schemas.Fast(kind_id);
  if (!clean || !fast || !fast->Accepts(tree, root)) {
    // valijson decides, and explains.
    size_t errors_before = diagnostics.size();
    schemas.Validate(kind_id, tree.ToJson(root), ctx.file, label, diagnostics);
    if (diagnostics.size() != errors_before || !clean) return;
  }

  schemas.ApplyDefaults(kind_id, tree, root);
  uint32_t spec = tree.Demand(root, "spec");

  auto object = std::make_shared<Object>();
  uint32_t meta = tree.Demand(root, "metadata");
  object->source = {ctx.file, start.line, start.column};
  object->labels = StringMap(doc, doc.Get(meta, "labels"));
  object->annotations = StringMap(doc, doc.Get(meta, "annotations"));

  if (kind_id == Kind::kTenant) {
    object->key = ObjectKey::TenantKey(doc.String(doc.Get(meta, "name")));
    uint32_t network = tree.Demand(spec, "network");  // as spec["network"] did: null if absent
    if (doc.Has(network, "subnet")) {
      uint32_t subnet = tree.Demand(network, "subnet");
      std::string problem = CheckSubnet(doc.String(subnet));
      if (!problem.empty()) {
        fail(subnet, label, "spec.network.subnet",
             "is not a usable IPv4 CIDR: " + problem + " (got \"" + doc.String(subnet) + "\")");
        return;
      }
    }
    object->spec = BuildTenant(doc, spec);
  } else {
    object->key =
        ObjectKey::PoolKey(doc.String(doc.Get(meta, "tenant")), doc.String(doc.Get(meta, "name")));
    if (!doc.Has(spec, "runtime")) {
      uint32_t runtime = tree.AddString(RuntimeName(ctx.options.defaultRuntime), Position{});
      tree.AppendMember(spec, tree.AddText("runtime"), 7, Position{}, runtime);
    }
    uint32_t image = tree.Demand(spec, "image");
    ImageSpec resolved;
    bool paths_ok = true;
    auto resolve = [&](std::string_view field, std::string& into) {
      uint32_t at = tree.Demand(image, field);
      const Result<std::string>& result = ctx.images.Resolve(doc.String(at));
      if (!result) {
        fail(at, label, "spec.image." + std::string(field), result.error().message);
        paths_ok = false;
        return;
      }
      into = *result;
    };
    resolve("kernel", resolved.kernel);
    resolve("rootfs", resolved.rootfs);
    if (doc.IsString(tree.Demand(image, "initrd"))) {
      std::string initrd;
      resolve("initrd", initrd);
      resolved.initrd = initrd;
    }
    if (!paths_ok) return;
    resolved.bootArgs = doc.String(tree.Demand(image, "bootArgs"));
    object->spec = BuildPool(doc, spec, std::move(resolved));
  }
  object->specHash = CanonicalHash(tree, spec);
  object->manifest = Manifest(std::make_shared<TreeManifest>(tree, root));
  ctx.out.objects.push_back(std::move(object));
}

}  // namespace

Result<std::string> ResolveImagePath(const std::string& written,
                                     const std::vector<fs::path>& roots) {
  if (written.find('\0') != std::string::npos) return Error{"must not contain NUL bytes"};
  if (roots.empty()) return Error{"no image roots are configured"};
  fs::path path(written);
  auto outside = [&]() {
    return Error{"must stay inside the image roots (" + RootsText(roots) + ") (got \"" + written +
                 "\")"};
  };
  std::vector<fs::path> candidates;
  for (const auto& root_in : roots) {
    fs::path root = WithoutTrailingSlash(root_in);
    fs::path candidate = WithoutTrailingSlash(path.is_absolute() ? path : root / path);
    if (!Within(root, candidate) || candidate == root) continue;
    // A file that exists must not leave its root through a symlink.
    std::error_code ec;
    if (fs::exists(candidate, ec)) {
      fs::path real = fs::weakly_canonical(candidate, ec);
      fs::path real_root = fs::weakly_canonical(root, ec);
      if (ec || !Within(real_root, real)) {
        return Error{"leaves the image roots through a symlink (\"" + written + "\" resolves to " +
                     real.string() + ")"};
      }
      return candidate.string();
    }
    candidates.push_back(candidate);
  }
  if (candidates.empty()) return outside();
  return candidates.front().string();
}

ParseResult ParseManifest(const std::string& file, std::string_view text, Format format,
                          const ParseOptions& options) {
  ParseResult out;
  // The reader's errors come first, then each document's, as when all were read up front.
  Diagnostics read_errors;
  FileContext ctx{file, options, SchemaSet::Builtin(), ImagePathCache(options.imageRoots), out};
  ReadDocumentTrees(file, text, format, read_errors,
                    [&](ValueTree& tree, uint32_t root, Position start, bool clean) {
                      ParseDocument(ctx, tree, root, start, clean);
                    });
  if (!read_errors.empty()) {
    out.diagnostics.insert(out.diagnostics.begin(), std::make_move_iterator(read_errors.begin()),
                           std::make_move_iterator(read_errors.end()));
  }
  if (!out.diagnostics.empty()) SortDiagnostics(out.diagnostics);
  return out;
}

ParseResult ParseManifest(const std::string& file, std::string_view text,
                          const ParseOptions& options) {
  return ParseManifest(file, text, FormatForPath(file), options);
}

}  // namespace mvm::manifests
