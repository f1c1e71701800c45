#include "controller/console_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mvm::controller {

Result<ConsoleFile> ConsoleFile::Open(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return Error{path.string() + " does not exist"};
    return Error{"cannot open " + path.string() + ": " + std::strerror(errno)};
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error{"cannot stat " + path.string() + ": " + std::strerror(errno)};
  }
  return ConsoleFile(path, std::move(fd), st.st_dev, st.st_ino);
}

std::string ConsoleFile::ReadFromOffset(size_t maxBytes) {
  std::string out(maxBytes, '\0');
  size_t got = 0;
  while (got < maxBytes) {
    ssize_t n = ::pread(fd_.get(), out.data() + got, maxBytes - got, offset_);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
    offset_ += n;
  }
  out.resize(got);
  return out;
}

std::string ConsoleFile::Tail(size_t limitBytes, std::optional<size_t> tailLines) {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return {};
  const auto size = static_cast<size_t>(st.st_size);
  const size_t start = size > limitBytes ? size - limitBytes : 0;
  offset_ = static_cast<off_t>(start);
  std::string text = ReadFromOffset(size - start);

  size_t pos = 0;  // where the answer starts in `text`
  if (tailLines) {
    pos = text.size();
    if (*tailLines > 0) {
      // A newline that ends the text closes the last line; it does not start another.
      size_t scan = !text.empty() && text.back() == '\n' ? text.size() - 1 : text.size();
      size_t found = 0;
      for (; scan > 0; --scan) {
        if (text[scan - 1] == '\n' && ++found == *tailLines) break;
      }
      pos = scan;
    }
  }
  if (start > 0 && pos == 0) {
    // The byte limit cut the first line: drop its tail end, unless it is all there is.
    size_t newline = text.find('\n');
    if (newline != std::string::npos && newline + 1 < text.size()) pos = newline + 1;
  }
  return text.substr(pos);
}

std::string ConsoleFile::ReadAppended(size_t maxBytes) {
  std::string out = ReadFromOffset(maxBytes);
  if (!out.empty()) return out;
  // Nothing new in the file we hold: has a new file taken its name, or was it truncated?
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return {};  // gone, or between rename and re-create
  if (st.st_dev != dev_ || st.st_ino != ino_) {
    UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat opened {};
    if (!fd.valid() || ::fstat(fd.get(), &opened) != 0) return {};
    fd_ = std::move(fd);
    dev_ = opened.st_dev;
    ino_ = opened.st_ino;
    offset_ = 0;
    return ReadFromOffset(maxBytes);
  }
  if (st.st_size < offset_) {
    offset_ = 0;
    return ReadFromOffset(maxBytes);
  }
  return {};
}

}  // namespace mvm::controller
