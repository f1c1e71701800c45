#include "runtime/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/unique_fd.h"

namespace mvm::runtime {
namespace {

std::string Errno(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

Status WriteAll(int fd, const char* data, size_t size, off_t offset) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{Errno("write")};
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
  return {};
}

// Copies bytes [offset, end) of `in` to the same offsets of `out`.
Status CopyRange(int in, int out, off_t offset, off_t end) {
  std::vector<char> buffer(1 << 20);
  while (offset < end) {
    size_t want =
        static_cast<size_t>(std::min<off_t>(end - offset, static_cast<off_t>(buffer.size())));
    ssize_t n = ::pread(in, buffer.data(), want, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{Errno("read")};
    }
    if (n == 0) break;
    if (Status s = WriteAll(out, buffer.data(), static_cast<size_t>(n), offset); !s.ok()) return s;
    offset += n;
  }
  return {};
}

// Copies the data extents of `in` (SEEK_DATA/SEEK_HOLE) to the same offsets of `out`; holes are
// skipped. Where the file system cannot tell, everything is copied.
Status CopyDataExtents(int in, int out, off_t size) {
  off_t offset = 0;
  while (offset < size) {
    off_t data = ::lseek(in, offset, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      if (errno != EINVAL) return Error{Errno("seek")};
      data = offset;  // no SEEK_DATA support: copy everything
    }
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) hole = size;
    if (Status s = CopyRange(in, out, data, hole); !s.ok()) return s;
    offset = hole;
  }
  return {};
}

}  // namespace

Status SparseCopy(const std::filesystem::path& from, const std::filesystem::path& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error{Errno("open " + from.string())};
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return Error{Errno("stat " + from.string())};
  if (!S_ISREG(st.st_mode)) return Error{from.string() + ": not a regular file"};
  const std::filesystem::path partial = to.string() + ".partial";
  UniqueFd out(::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!out.valid()) return Error{Errno("create " + partial.string())};
  auto fail = [&](const Error& e) -> Status {
    out.Reset();
    std::error_code ec;
    std::filesystem::remove(partial, ec);
    return Error{"copy " + from.string() + " to " + to.string() + ": " + e.message};
  };
  if (::ftruncate(out.get(), st.st_size) != 0) return fail(Error{Errno("truncate")});
  if (Status s = CopyDataExtents(in.get(), out.get(), st.st_size); !s.ok()) return fail(s.error());
  if (::fsync(out.get()) != 0) return fail(Error{Errno("fsync")});
  out.Reset();
  std::error_code ec;
  std::filesystem::rename(partial, to, ec);
  if (ec) return fail(Error{"rename: " + ec.message()});
  return {};
}

Status OverlayData(const std::filesystem::path& from, const std::filesystem::path& onto) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error{Errno("open " + from.string())};
  UniqueFd out(::open(onto.c_str(), O_WRONLY | O_CLOEXEC));
  if (!out.valid()) return Error{Errno("open " + onto.string())};
  struct stat a {
  }, b{};
  if (::fstat(in.get(), &a) != 0 || ::fstat(out.get(), &b) != 0) return Error{Errno("stat")};
  if (a.st_size != b.st_size) {
    return Error{"overlay " + from.string() + " onto " + onto.string() + ": sizes differ (" +
                 std::to_string(a.st_size) + " and " + std::to_string(b.st_size) + " bytes)"};
  }
  if (Status s = CopyDataExtents(in.get(), out.get(), a.st_size); !s.ok()) {
    return Error{"overlay " + from.string() + " onto " + onto.string() + ": " + s.error().message};
  }
  if (::fsync(out.get()) != 0) return Error{Errno("fsync " + onto.string())};
  return {};
}

Status WriteFileAtomic(const std::filesystem::path& path, const std::string& content) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd.valid()) return Error{Errno("create " + tmp.string())};
  Status s = WriteAll(fd.get(), content.data(), content.size(), 0);
  if (s.ok() && ::fsync(fd.get()) != 0) s = Error{Errno("fsync " + tmp.string())};
  fd.Reset();
  std::error_code ec;
  if (s.ok()) {
    std::filesystem::rename(tmp, path, ec);
    if (ec) s = Error{"rename " + tmp.string() + ": " + ec.message()};
  }
  if (!s.ok()) std::filesystem::remove(tmp, ec);
  return s;
}

Result<std::string> ReadSmallFile(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error{Errno(path.string())};
  std::string out;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{Errno(path.string())};
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
    if (out.size() > (1 << 20)) return Error{path.string() + ": larger than 1 MiB"};
  }
  return out;
}

void RotateLog(const std::filesystem::path& path, uintmax_t maxBytes) {
  std::error_code ec;
  uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size < maxBytes) return;
  std::filesystem::rename(path, path.string() + ".1", ec);
}

std::string TailLines(const std::filesystem::path& path, int lines) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return {};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return {};
  constexpr off_t kWindow = off_t{64} * 1024;
  off_t start = st.st_size > kWindow ? st.st_size - kWindow : 0;
  std::string raw(static_cast<size_t>(st.st_size - start), '\0');
  ssize_t n = ::pread(fd.get(), raw.data(), raw.size(), start);
  if (n <= 0) return {};
  raw.resize(static_cast<size_t>(n));
  std::string clean;
  clean.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(raw[i]);
    if (c == 0x1b) {  // drop an ANSI escape sequence: ESC [ params final-byte
      if (i + 1 < raw.size() && raw[i + 1] == '[') {
        i += 2;
        while (i < raw.size() && !(raw[i] >= 0x40 && raw[i] <= 0x7e)) ++i;
      }
      continue;
    }
    if (c == '\n' || c == '\t' || c >= 0x20) clean.push_back(static_cast<char>(c));
  }
  while (!clean.empty() && clean.back() == '\n') clean.pop_back();
  size_t pos = clean.size();
  for (int found = 0; pos > 0; --pos) {
    if (clean[pos - 1] == '\n' && ++found == lines) break;
  }
  if (start > 0 && pos == 0) {  // the window starts mid-line: drop the partial first line
    size_t nl = clean.find('\n');
    if (nl != std::string::npos) pos = nl + 1;
  }
  return clean.substr(pos);
}

}  // namespace mvm::runtime
