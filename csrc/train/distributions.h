// The action distributions' per-sample math, mirroring fastppo/algos/distributions.py (the spec), written
// once for the native rollout step (policy_act.cpp: sampling, log-probability) and the native PPO update
// (ppo_update.cpp: log-probability, entropy, KL and their gradients): both must compute
// log-probabilities the same way, to the bit. Callers accumulate the returned per-dimension terms in
// order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/rng.h"

namespace fastppo {

constexpr float kLogStdMin = -20.f, kLogStdMax = 2.f;  // DiagGaussian's clamp on the log-std
constexpr float kHalfLog2Pi = 0.91893853320467274f;

inline float clamp_log_std(float log_std) { return std::min(std::max(log_std, kLogStdMin), kLogStdMax); }

// A float in (0, 1) from the stream `key` (one per env, stream_key(seed, env)): never 0, so log() and
// the inverse CDF stay finite.
inline float uniform01(uint64_t key, uint64_t counter) {
  return (float(mix64(key + (counter + 1) * kGoldenGamma) >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

// -- DiagGaussian, one action dimension (ls: the clamped log-std) -----------------------------------

// A standard normal draw from two uniforms in (0, 1) (Box-Muller).
inline float gaussian_standard_normal(float u1, float u2) {
  return std::sqrt(-2.f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
}

// log N(x; mean, exp(ls)) with z = (x - mean) / exp(ls).
inline float gaussian_log_prob(float z, float ls) { return -0.5f * z * z - ls - kHalfLog2Pi; }

inline float gaussian_entropy(float ls) { return 0.5f + kHalfLog2Pi + ls; }

// KL(old || new) with var_ratio = (old std / new std)^2 and shift = (new mean - old mean) / new std.
inline float gaussian_kl(float var_ratio, float shift) {
  return 0.5f * (var_ratio + shift * shift - 1.f - std::log(var_ratio));
}

// -- Categorical, one head of m logits ----------------------------------------------------------------

// log sum_i exp(logits[i]) of one categorical, shifted by the max for range.
inline float log_sum_exp(const float* logits, int64_t m) {
  float mx = logits[0];
  for (int64_t i = 1; i < m; ++i) mx = std::max(mx, logits[i]);
  float sum = 0.f;
  for (int64_t i = 0; i < m; ++i) sum += std::exp(logits[i] - mx);
  return mx + std::log(sum);
}

// Inverse CDF: the first action whose cumulative probability exceeds u (lse: log_sum_exp(logits, m)).
inline int64_t categorical_sample(const float* logits, int64_t m, float lse, float u) {
  float cum = 0.f;
  for (int64_t i = 0; i < m; ++i) {
    cum += std::exp(logits[i] - lse);
    if (u < cum) return i;
  }
  return m - 1;
}

// The head's log-probabilities into log_probs[0, m) and its entropy (returned); with old_logits, also
// the old probabilities into old_probs[0, m) and KL(old || new) added to *kl term by term.
inline float categorical_forward(const float* logits, const float* old_logits, int64_t m, float* log_probs,
                                 float* old_probs, float* kl) {
  const float lse = log_sum_exp(logits, m);
  const float old_lse = old_logits ? log_sum_exp(old_logits, m) : 0.f;
  float entropy = 0.f, k = *kl;
  for (int64_t i = 0; i < m; ++i) {
    const float li = log_probs[i] = logits[i] - lse;
    entropy -= std::exp(li) * li;
    if (old_logits) {
      const float qi = old_logits[i] - old_lse;
      old_probs[i] = std::exp(qi);
      k += std::exp(qi) * (qi - li);
    }
  }
  *kl = k;
  return entropy;
}

}  // namespace fastppo
