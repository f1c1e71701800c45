#include "runtime/driver_util.h"

#include <json/reader.h>
#include <json/writer.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace mvm::runtime {
namespace {

constexpr size_t kMaxKernelCmdline = 2047;  // COMMAND_LINE_SIZE 2048 on x86, with the NUL

}  // namespace

std::string ShellQuote(const std::string& word) {
  std::string out = "'";
  for (char c : word) {
    if (c == '\'')
      out += "'\\''";
    else
      out.push_back(c);
  }
  return out + "'";
}

namespace {

std::string Base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8) |
                 static_cast<uint8_t>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

}  // namespace

std::string Hash12(const std::string& text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string(buf, 12);
}

std::string JsonLine(const Json::Value& value) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  return Json::writeString(builder, value);
}

std::optional<Json::Value> ParseJsonObject(const std::string& text) {
  if (text.empty()) return std::nullopt;
  Json::CharReaderBuilder builder;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  Json::Value value;
  std::string errors;
  if (!reader->parse(text.data(), text.data() + text.size(), &value, &errors)) return std::nullopt;
  if (!value.isObject()) return std::nullopt;
  return value;
}

std::string SecondsText(std::chrono::steady_clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fs",
                std::chrono::duration_cast<std::chrono::duration<double>>(d).count());
  return buf;
}

bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

Result<int64_t> EnvInt(const char* name, int64_t min, int64_t max) {
  const char* v = std::getenv(name);
  if (v == nullptr) return Error{std::string(name) + " is not set"};
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n < min || n > max) {
    return Error{std::string(name) + ": expected an integer in [" + std::to_string(min) + ", " +
                 std::to_string(max) + "] (got \"" + v + "\")"};
  }
  return static_cast<int64_t>(n);
}

bool RemovePath(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  return !std::filesystem::exists(path, ec);
}

bool PathExists(const std::filesystem::path& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

namespace {

// One thread removes what RemoveAside set aside, in order. Never destroyed (a thread of the
// process until it exits): no join at static destruction while a driver may still call in.
class BackgroundRemover {
 public:
  static BackgroundRemover& Get() {
    static auto* remover = new BackgroundRemover;  // NOLINT(cppcoreguidelines-owning-memory)
    return *remover;
  }
  void Add(std::filesystem::path path) {
    std::lock_guard lock(mu_);
    if (!started_) {
      std::thread([this] { Run(); }).detach();
      started_ = true;
    }
    queue_.push_back(std::move(path));
    ++added_;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock lock(mu_);
    const uint64_t until = added_;
    cv_.wait(lock, [&] { return removed_ >= until; });
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return !queue_.empty(); });
      std::filesystem::path path = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      RemovePath(path);
      lock.lock();
      ++removed_;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::filesystem::path> queue_;
  uint64_t added_ = 0, removed_ = 0;
  bool started_ = false;
};

}  // namespace

std::filesystem::path SpentPath(const std::filesystem::path& path) {
  return path.string() + ".spent";
}

void RemoveAside(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::path spent = SpentPath(path);
  std::filesystem::rename(path, spent, ec);
  if (ec) {
    RemovePath(path);
    return;
  }
  BackgroundRemover::Get().Add(spent);
}

void WaitForBackgroundRemovals() {
  BackgroundRemover::Get().Wait();
}

Status RemoveInstanceDir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  // Once more: a file being unlinked off an action's path (a spent snapshot) may vanish meanwhile.
  if (ec) std::filesystem::remove_all(dir, ec);
  if (ec) return Error{"destroy: remove " + dir.string() + ": " + ec.message()};
  return {};
}

std::optional<std::string> GuestInitrd(const manifests::PoolSpec& spec) {
  if (spec.image.initrd) return spec.image.initrd;
  std::filesystem::path beside =
      std::filesystem::path(spec.image.kernel).parent_path() / "initramfs.cpio.gz";
  if (PathExists(beside)) return beside.string();
  return std::nullopt;
}

Result<std::string> GuestCmdline(const controller::VmmTarget& target,
                                 const GuestCmdlineOptions& options) {
  if (target.spec == nullptr) return Error{"no pool spec"};
  const manifests::PoolSpec& spec = *target.spec;
  // The pool's bootArgs, then what the driver owns (later words win).
  std::string append = spec.image.bootArgs;
  auto add = [&append](const std::string& word) {
    if (!append.empty() && append.back() != ' ') append.push_back(' ');
    append += word;
  };
  if (append.find("console=") == std::string::npos) add("console=ttyS0");
  for (const auto& word : options.driverWords) add(word);
  const std::string& name = target.key.name;
  bool hostname_ok = !name.empty() && name.size() <= 63 &&
                     name.find_first_not_of(
                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789-") == std::string::npos;
  if (hostname_ok) add("mvm.hostname=" + name);
  // The guest's own SIGTERM→SIGKILL grace fits inside the driver's graceful stop window.
  int64_t grace = std::max<int64_t>(1, spec.policy.gracefulStopSeconds - 2);
  add("mvm.grace=" + std::to_string(grace));
  add("mvm.halt=" + options.halt);
  if (!spec.cmd.empty()) {
    std::string cmd = "exec";
    for (const auto& word : spec.cmd) cmd += " " + ShellQuote(word);
    add("mvm.cmd=" + Base64(cmd));
  }
  if (!spec.env.empty()) {
    std::string env;
    for (const auto& [k, v] : spec.env) {
      if (v.find('\n') != std::string::npos || k.find('\n') != std::string::npos) {
        return Error{"env " + k + ": values with newlines cannot be passed to the guest"};
      }
      env += k + "=" + v + "\n";
    }
    add("mvm.env=" + Base64(env));
  }
  if (append.size() > kMaxKernelCmdline) {
    return Error{"kernel command line is " + std::to_string(append.size()) +
                 " bytes with cmd and env in base64 (limit " + std::to_string(kMaxKernelCmdline) +
                 "): shorten spec.cmd, spec.env or image.bootArgs"};
  }
  return append;
}

}  // namespace mvm::runtime
