// libFuzzer entry point: any bytes, read as a YAML and as a JSON manifest, must yield objects or
// diagnostics — never a crash, hang, leak or undefined behaviour (built with ASan + UBSan).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "manifests/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mvm::manifests::ParseOptions kOptions;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto format : {mvm::manifests::Format::kYaml, mvm::manifests::Format::kJson}) {
    auto result = mvm::manifests::ParseManifest("fuzz", text, format, kOptions);
    for (const auto& d : result.diagnostics) {
      if (d.file != "fuzz" || d.line < 0 || d.column < 0) __builtin_trap();
      (void)d.ToString();
    }
    for (const auto& object : result.objects) {
      if (object->specHash.size() != 16) __builtin_trap();
    }
  }
  return 0;
}
