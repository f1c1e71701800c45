#include "manifests/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "common/unique_fd.h"

namespace mvm::manifests {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxDirectoryDepth = 32;

bool Hidden(const fs::path& name) {
  const std::string s = name.string();
  return !s.empty() && s[0] == '.';
}

std::string Where(const Object& o) {
  return o.source.file + ":" + std::to_string(o.source.line) + ":" +
         std::to_string(o.source.column);
}

bool SameContent(const Object& a, const Object& b) {
  return a.specHash == b.specHash && a.labels == b.labels && a.annotations == b.annotations &&
         a.source.file == b.source.file && a.source.line == b.source.line &&
         a.source.column == b.source.column;
}

// Reads a whole file, refusing anything larger than kMaxManifestBytes.
Result<std::string> ReadFile(const fs::path& path) {
  // O_NONBLOCK: a FIFO dropped into the directory must not hang the loader.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return Error{std::string("cannot open: ") + std::strerror(errno)};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return Error{"not a regular file"};
  if (static_cast<size_t>(st.st_size) > kMaxManifestBytes) {
    return Error{"file is larger than " + std::to_string(kMaxManifestBytes >> 20) + " MiB"};
  }
  std::string text;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error{std::string("cannot read: ") + std::strerror(errno)};
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxManifestBytes) {
      return Error{"file is larger than " + std::to_string(kMaxManifestBytes >> 20) + " MiB"};
    }
  }
  return text;
}

void Walk(const fs::path& dir, int depth, std::set<std::pair<dev_t, ino_t>>& visited,
          std::vector<fs::path>& out) {
  std::error_code ec;
  fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) return;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return;
    const fs::path& path = it->path();
    if (Hidden(path.filename())) continue;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;  // dangling symlink, or gone meanwhile
    if (S_ISDIR(st.st_mode)) {
      if (depth < kMaxDirectoryDepth && visited.insert({st.st_dev, st.st_ino}).second) {
        Walk(path, depth + 1, visited, out);
      }
    } else if (S_ISREG(st.st_mode) && IsManifestName(path.filename())) {
      out.push_back(path);
    }
  }
}

}  // namespace

bool IsManifestName(const fs::path& name) {
  if (Hidden(name)) return false;
  const std::string ext = name.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

DesiredState Assemble(const std::vector<FileObjects>& files, const DesiredState* previous,
                      Diagnostics& diagnostics) {
  std::map<ObjectKey, std::vector<ObjectPtr>> definitions;
  for (const auto& file : files) {
    for (const auto& object : file.objects) definitions[object->key].push_back(object);
  }
  auto previous_of = [&](const ObjectKey& key) -> ObjectPtr {
    if (!previous) return nullptr;
    auto it = previous->objects.find(key);
    return it == previous->objects.end() ? nullptr : it->second;
  };

  DesiredState out;
  for (auto& [key, list] : definitions) {
    if (list.size() == 1) {
      out.objects.emplace(key, list.front());
      continue;
    }
    for (const auto& object : list) {
      std::string others;
      for (const auto& other : list) {
        if (other != object) others += (others.empty() ? "" : ", ") + Where(*other);
      }
      diagnostics.push_back({object->source.file, object->source.line, object->source.column,
                             key.ToString(), "",
                             "conflict: defined more than once (also at " + others + ")"});
    }
    if (ObjectPtr kept = previous_of(key)) out.objects.emplace(key, kept);
  }

  // Every pool needs its tenant.
  for (auto it = out.objects.begin(); it != out.objects.end();) {
    const ObjectKey& key = it->first;
    if (key.kind != Kind::kPool) {
      ++it;
      continue;
    }
    ObjectKey tenant = ObjectKey::TenantKey(key.tenant);
    if (out.objects.count(tenant)) {
      ++it;
      continue;
    }
    const Object& pool = *it->second;
    Position pos = PositionOf(pool.manifest["metadata"]["tenant"]);
    std::string message = "tenant \"" + key.tenant + "\" is not defined";
    if (ObjectPtr kept = previous_of(tenant)) {
      out.objects.emplace(tenant, kept);
      diagnostics.push_back({pool.source.file, pos.line, pos.column, key.ToString(),
                             "metadata.tenant",
                             message + "; keeping the tenant from the previous snapshot until its "
                                       "pools are removed"});
      ++it;
    } else {
      diagnostics.push_back(
          {pool.source.file, pos.line, pos.column, key.ToString(), "metadata.tenant", message});
      it = out.objects.erase(it);
    }
  }

  // Generations carry over; unchanged objects keep their previous instance.
  for (auto& [key, object] : out.objects) {
    ObjectPtr before = previous_of(key);
    if (!before || before == object) continue;
    if (SameContent(*before, *object)) {
      object = before;
      continue;
    }
    uint64_t generation =
        before->specHash == object->specHash ? before->generation : before->generation + 1;
    if (object->generation != generation) {
      auto copy = std::make_shared<Object>(*object);
      copy->generation = generation;
      object = std::move(copy);
    }
  }
  return out;
}

Loader::Loader(Options options) : options_(std::move(options)) {}

bool Loader::Eligible(const fs::path& path) const {
  if (!IsManifestName(path.filename())) return false;
  for (const auto& root : options_.roots) {
    fs::path relative = path.lexically_relative(root);
    if (relative.empty() || *relative.begin() == "..") continue;
    bool hidden = false;
    for (const auto& part : relative) hidden = hidden || Hidden(part);
    if (!hidden) return true;
  }
  return false;
}

void Loader::Refresh(const fs::path& path, const ChangeSet& changes) {
  if (changes.writing.count(path)) return;  // half-written: keep what we had
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    if (files_.erase(path) > 0) touched_ = true;
    return;
  }
  Identity identity{st.st_dev, st.st_ino, st.st_size,
                    st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
                    st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec};
  auto [it, inserted] = files_.try_emplace(path);
  FileState& state = it->second;
  if (!inserted && state.identity == identity) return;
  touched_ = true;
  state.identity = identity;
  const std::string name = path.string();
  Result<std::string> text = ReadFile(path);
  if (!text) {
    state.errors = {{name, 0, 0, "", "", text.error().message}};
    return;
  }
  ParseResult parsed = ParseManifest(name, *text, options_.parse);
  if (parsed.ok()) {
    state.good = std::move(parsed.objects);
    state.errors.clear();
  } else {
    state.errors = std::move(parsed.diagnostics);
  }
}

void Loader::Rescan(const ChangeSet& changes) {
  std::vector<fs::path> found;
  std::set<std::pair<dev_t, ino_t>> visited;
  for (const auto& root : options_.roots) {
    struct stat st {};
    if (::stat(root.c_str(), &st) == 0 && visited.insert({st.st_dev, st.st_ino}).second) {
      Walk(root, 0, visited, found);
    }
  }
  std::set<fs::path> present(found.begin(), found.end());
  for (auto it = files_.begin(); it != files_.end();) {
    if (present.count(it->first)) {
      ++it;
    } else {
      it = files_.erase(it);
      touched_ = true;
    }
  }
  for (const auto& path : found) Refresh(path, changes);
}

Loader::Outcome Loader::Load(const ChangeSet& changes) {
  bool rescan = changes.rescan;
  if (!rescan) {
    for (const auto& path : changes.paths) {
      std::error_code ec;
      if (fs::is_directory(path, ec)) rescan = true;
    }
  }
  touched_ = false;
  if (rescan) {
    Rescan(changes);
  } else {
    for (const auto& path : changes.paths) {
      if (Eligible(path)) Refresh(path, changes);
    }
  }
  if (!touched_ && current_) return Outcome{current_, Diff{}, false};

  std::vector<FileObjects> files;
  files.reserve(files_.size());
  Diagnostics diagnostics;
  for (const auto& [path, state] : files_) {
    files.push_back({path.string(), state.good});
    diagnostics.insert(diagnostics.end(), state.errors.begin(), state.errors.end());
  }
  auto state = std::make_shared<DesiredState>(Assemble(files, current_.get(), diagnostics));
  SortDiagnostics(diagnostics);
  state->diagnostics = std::move(diagnostics);

  // Remember the assembled instances so unchanged objects stay the same instance next time.
  for (auto& [path, file] : files_) {
    for (auto& object : file.good) {
      auto it = state->objects.find(object->key);
      if (it != state->objects.end() && it->second->source.file == object->source.file) {
        object = it->second;
      }
    }
  }

  static const DesiredState kEmpty;
  const DesiredState& before = current_ ? *current_ : kEmpty;
  Outcome outcome;
  outcome.diff = ComputeDiff(before, *state);
  outcome.changed = !current_ || before.diagnostics != state->diagnostics ||
                    before.objects.size() != state->objects.size() ||
                    !std::equal(before.objects.begin(), before.objects.end(),
                                state->objects.begin(), [](const auto& a, const auto& b) {
                                  return a.first == b.first && a.second == b.second;
                                });
  if (outcome.changed) {
    state->revision = before.revision + 1;
    current_ = state;
  }
  outcome.state = current_;
  return outcome;
}

}  // namespace mvm::manifests
