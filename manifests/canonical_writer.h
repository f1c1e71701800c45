#pragma once
// CanonicalWriter: feeds jsoncpp's compact JSON text (StreamWriterBuilder with indentation ""
// and emitUTF8) into a 64-bit FNV-1a hash, one token at a time, so a spec hash never builds the
// text. Internal to manifests/: the value walkers live in object.cpp (Json::Value) and
// value_tree.cpp (ValueTree).
//
// Promises: the bytes fed are exactly those Json::writeString would produce for the same
// scalars (tests/schema_fastpath_test.cpp compares them), so hashes match the text's FNV-1a.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace mvm::manifests {

// Bytes a JSON string carries through unescaped.
struct CanonicalVerbatimTable {
  bool bytes[256];
  constexpr CanonicalVerbatimTable() : bytes() {
    for (int c = 0; c < 256; ++c) bytes[c] = c >= 0x20 && c != '"' && c != '\\';
  }
};
inline constexpr CanonicalVerbatimTable kCanonicalVerbatim{};

class CanonicalWriter {
 public:
  void Raw(std::string_view bytes) {
    uint64_t h = hash_;  // a local: char data may alias the member, which would pin it to memory
    for (char c : bytes) h = Mix(h, static_cast<unsigned char>(c));
    hash_ = h;
  }
  void Byte(unsigned char c) { hash_ = Mix(hash_, c); }
  void Int(int64_t v) { Digits(v); }
  void Uint(uint64_t v) { Digits(v); }

  // "%.17g", with ".0" appended when that reads as an integer; NaN is null, infinities 1e+9999.
  void Double(double v) {
    if (!std::isfinite(v)) {
      Raw(std::isnan(v) ? "null" : v < 0 ? "-1e+9999" : "1e+9999");
      return;
    }
    char buffer[40];
    int n = std::snprintf(buffer, sizeof buffer, "%.17g", v);
    bool integral_looking = true;
    for (int i = 0; i < n; ++i) {
      if (buffer[i] == ',') buffer[i] = '.';  // jsoncpp undoes a locale's decimal comma
      if (buffer[i] == '.' || buffer[i] == 'e') integral_looking = false;
    }
    Raw({buffer, static_cast<size_t>(n)});
    if (integral_looking) Raw(".0");
  }

  // A quoted string: " \ and \b \f \n \r \t escaped, other bytes below 0x20 as \u00xx, the
  // rest (UTF-8 included) verbatim.
  void String(std::string_view s) {
    uint64_t h = Mix(hash_, '"');
    for (char ch : s) {
      auto c = static_cast<unsigned char>(ch);
      if (kCanonicalVerbatim.bytes[c]) {  // the common case
        h = Mix(h, c);
        continue;
      }
      hash_ = h;
      Escape(c);
      h = hash_;
    }
    hash_ = Mix(h, '"');
  }

  uint64_t hash() const { return hash_; }
  std::string Hex() const {  // "%016llx"
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 15, shift = 0; i >= 0; --i, shift += 4) {
      out[static_cast<size_t>(i)] = kDigits[(hash_ >> shift) & 15];
    }
    return out;
  }

 private:
  static uint64_t Mix(uint64_t h, unsigned char c) { return (h ^ c) * 1099511628211ULL; }

  void Escape(unsigned char c) {
    switch (c) {
      case '"':
        Raw("\\\"");
        break;
      case '\\':
        Raw("\\\\");
        break;
      case '\b':
        Raw("\\b");
        break;
      case '\f':
        Raw("\\f");
        break;
      case '\n':
        Raw("\\n");
        break;
      case '\r':
        Raw("\\r");
        break;
      case '\t':
        Raw("\\t");
        break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        Raw("\\u00");
        Byte(static_cast<unsigned char>(kHex[c >> 4]));
        Byte(static_cast<unsigned char>(kHex[c & 15]));
      }
    }
  }

  template <typename T>
  void Digits(T v) {
    char buffer[24];
    auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
    Raw({buffer, static_cast<size_t>(end - buffer)});
  }

  uint64_t hash_ = 1469598103934665603ULL;
};

}  // namespace mvm::manifests
