// The action distributions' per-sample math, mirroring fastppo/algos/distributions.py (the spec), for
// the native rollout step and the native PPO update: both must compute log-probabilities the same way.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fastppo {

constexpr float kLogStdMin = -20.f, kLogStdMax = 2.f;  // DiagGaussian's clamp on the log-std
constexpr float kHalfLog2Pi = 0.91893853320467274f;

inline float clamp_log_std(float log_std) { return std::min(std::max(log_std, kLogStdMin), kLogStdMax); }

// log sum_i exp(logits[i]) of one categorical, shifted by the max for range.
inline float log_sum_exp(const float* logits, int64_t m) {
  float mx = logits[0];
  for (int64_t i = 1; i < m; ++i) mx = std::max(mx, logits[i]);
  float sum = 0.f;
  for (int64_t i = 0; i < m; ++i) sum += std::exp(logits[i] - mx);
  return mx + std::log(sum);
}

}  // namespace fastppo
