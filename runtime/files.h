#pragma once
// File helpers for VMM drivers: sparse disk copies, atomic small files, bounded logs.
//
// Promises:
//  - SparseCopy writes `to` completely or not at all: it copies into `to`.partial and renames;
//    holes in `from` stay holes (SEEK_DATA/SEEK_HOLE), so a 64 MiB image with 7 MiB of data
//    costs 7 MiB.
//  - OverlayData writes the data extents of `from` over the same offsets of `onto` (same size),
//    leaving the rest of `onto` as it was: a Firecracker Diff memory file applied to its base.
//    Idempotent: applying the same file twice gives the same result.
//  - WriteFileAtomic replaces `path` by rename: a reader sees the old or the new content,
//    never a mix.
//  - RotateLog keeps a log below `maxBytes` at the moment it is called: a larger one becomes
//    `path`.1 (replacing the previous one), so at most two files of about that size exist.
//  - TailLines never throws and returns at most `lines` lines from the last 64 KiB, with control
//    characters (terminal escapes, carriage returns) removed.

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/result.h"

namespace mvm::runtime {

Status SparseCopy(const std::filesystem::path& from, const std::filesystem::path& to);
Status OverlayData(const std::filesystem::path& from, const std::filesystem::path& onto);
Status WriteFileAtomic(const std::filesystem::path& path, const std::string& content);
Result<std::string> ReadSmallFile(const std::filesystem::path& path);
void RotateLog(const std::filesystem::path& path, uintmax_t maxBytes);
std::string TailLines(const std::filesystem::path& path, int lines);

}  // namespace mvm::runtime
