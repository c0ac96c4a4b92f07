// GAE per-element math, written once for the CPU loop and the CUDA kernels (see ARCHITECTURE.md):
//   delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
//   A_t     = delta_t + gamma * lam * (1 - terminated_t) * (1 - truncated_t) * A_{t+1},  A_T = 0
// The flags pick a coefficient that then multiplies, as the equations (and the torch reference) do:
// the same arithmetic as the reference on every input, and a loop g++ vectorises (selecting between
// loaded values instead left a branch in the loop).
#pragma once

#include "core/common.h"

namespace fastppo {

// The factor that links A_t to A_{t+1}: A_t = delta_t + gae_carry(t) * A_{t+1}.
template <typename T>
FASTPPO_HD T gae_carry(bool terminated, bool truncated, T gamma_lam) {
  return (terminated | truncated) ? T(0) : gamma_lam;
}

template <typename T>
FASTPPO_HD T gae_advantage(T reward, T value, T next_value, bool terminated, bool truncated, T gamma,
                           T gamma_lam, T next_advantage) {
  // Coefficients first, as separate statements: written inline, g++ turned them back into branches.
  const T bootstrap = terminated ? T(0) : gamma;
  const T carry = gae_carry(terminated, truncated, gamma_lam);
  const T delta = reward + bootstrap * next_value - value;
  return delta + carry * next_advantage;
}

// One env's column of every GAE array. The time-chunked scan (CUDA for few envs and long rollouts,
// the CPU for the same shape) splits [0, T) into chunks and runs three phases on this view:
//   1. scan_local: each chunk's advantages assuming A = 0 after it, and the product of its carries;
//   2. serially over chunks, from the last: A at a chunk's start = local + product * A after it;
//   3. fix_up: add the carried-in advantage, decayed by the carries, and write the returns.
template <typename T, typename D>
struct GaeColumn {
  const T* rewards;
  const T* values;
  const T* next_values;
  const D* terminated;
  const D* truncated;
  T* advantages;
  T* returns;
  int64_t s_rewards, s_values, s_next_values, s_terminated, s_truncated, s_advantages, s_returns;
  T gamma, gamma_lam;

  FASTPPO_HD bool term(int64_t t) const { return as_flag(terminated[t * s_terminated]); }
  FASTPPO_HD bool trunc(int64_t t) const { return as_flag(truncated[t * s_truncated]); }

  // Backward recurrence over [t0, t1) given A_{t1}; writes advantages (and returns if asked),
  // returns A_{t0} and, through carry_product, the product of the carries over the range.
  FASTPPO_HD T scan(int64_t t0, int64_t t1, T next_advantage, bool write_returns, T* carry_product) const {
    T a = next_advantage;
    T prod = T(1);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const bool te = term(t), tr = trunc(t);
      const T v = values[t * s_values];
      a = gae_advantage(rewards[t * s_rewards], v, next_values[t * s_next_values], te, tr, gamma,
                        gamma_lam, a);
      prod *= gae_carry(te, tr, gamma_lam);
      advantages[t * s_advantages] = a;
      if (write_returns) returns[t * s_returns] = a + v;
    }
    if (carry_product) *carry_product = prod;
    return a;
  }

  // Phase 3: add A_{t1} (carried in from the chunk after) to a chunk already scanned with A_{t1} = 0.
  FASTPPO_HD void fix_up(int64_t t0, int64_t t1, T carried) const {
    T q = carried;
    for (int64_t t = t1 - 1; t >= t0; --t) {
      q *= gae_carry(term(t), trunc(t), gamma_lam);
      const T a = advantages[t * s_advantages] + q;
      advantages[t * s_advantages] = a;
      returns[t * s_returns] = a + values[t * s_values];
    }
  }
};

}  // namespace fastppo
