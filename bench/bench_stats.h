#pragma once
// Small statistics shared by the benchmarks: the median of samples, a duration in milliseconds.

#include <algorithm>
#include <chrono>
#include <vector>

namespace mvm::bench {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

inline double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace mvm::bench
