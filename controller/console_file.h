#pragma once
// ConsoleFile: reads a guest's serial console log for `GET /v1/instances/{t}/{n}/console` and
// `mvmctl logs` (docs/api.md). The file is written by the VMM (qemu appends to it) and rotated by
// the driver at a start or wake: renamed to `.1`, a new file created in its place.
//
// Promises:
//  - Open fails with a message naming the path when there is no console file (yet).
//  - Tail returns at most `limitBytes` bytes from the end of the file as it is now, cut to its
//    last `tailLines` lines when given (a last line without its newline counts as a line). When
//    the byte limit cuts a line in two, the partial first line is dropped (unless it is the only
//    one). Bytes are returned as the guest wrote them: no decoding, no filtering.
//  - ReadAppended then returns every byte written after what Tail saw, in order, each exactly
//    once, at most `maxBytes` per call ("" when there is nothing new). When the file was replaced
//    (rotation), it first finishes the old file, then carries on from the start of the new one;
//    when it was truncated in place, it starts again from the beginning.
//  - One owner, one thread; the file descriptor is closed with the object.

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace mvm::controller {

class ConsoleFile {
 public:
  static Result<ConsoleFile> Open(const std::filesystem::path& path);

  std::string Tail(size_t limitBytes, std::optional<size_t> tailLines);
  std::string ReadAppended(size_t maxBytes);

  const std::filesystem::path& path() const { return path_; }

 private:
  ConsoleFile(std::filesystem::path path, UniqueFd fd, dev_t dev, ino_t ino)
      : path_(std::move(path)), fd_(std::move(fd)), dev_(dev), ino_(ino) {}

  // Bytes [offset_, offset_ + maxBytes) of the open file; advances offset_.
  std::string ReadFromOffset(size_t maxBytes);

  std::filesystem::path path_;
  UniqueFd fd_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  off_t offset_ = 0;
};

}  // namespace mvm::controller
