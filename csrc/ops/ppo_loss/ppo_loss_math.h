// PPO loss per-sample math, written once for the CPU loop and the CUDA kernels (see ARCHITECTURE.md):
//   ratio = exp(new_logp - old_logp)
//   pg    = -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)
//   v     = 0.5 * (V - R)^2   or, clipped,   0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)
//   approx_kl = (ratio - 1) - log(ratio);   clipped = |ratio - 1| > eps
// Each sample also yields d pg / d new_logp and d v / d V. They follow torch's own backward rules, so
// the fused op's gradients equal autograd's on the composite: clamp passes the gradient on its closed
// interval, and min/max split it in half on a tie.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/common.h"

namespace fastppo {

// exp of the log-ratio. On the host, float uses a branch-free Cephes-style polynomial (within 2 ulp
// of expf) so the CPU loop vectorises; glibc's expf is an opaque scalar call. Elsewhere: the library exp.
FASTPPO_HD float ppo_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  constexpr float kHi = 88.72f, kLo = -87.0f;  // exp overflows above kHi; below kLo it is < 1.7e-38
  const float xc = x < kLo ? kLo : (x > kHi ? kHi : x);
  const float k = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - k * 0.693359375f;  // k * ln2 in two parts (Cody-Waite) keeps r exact
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 126) << 23;  // 2^(k-1): k = 128 stays finite
  float half_scale;
  std::memcpy(&half_scale, &bits, sizeof bits);
  const float e = y * half_scale * 2.0f;
  return x > kHi ? INFINITY : (x < kLo ? 0.0f : e);  // NaN falls through as NaN
#endif
}

FASTPPO_HD double ppo_exp(double x) { return exp(x); }

template <typename T>
FASTPPO_HD T ppo_clamp(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);  // torch.clamp: min(max(x, lo), hi), NaN passes through
}

// Per-call constants of the per-sample math.
template <typename T>
struct PpoCoefs {
  T clip_coef;   // eps
  T vf_clip;     // c (used when the caller asks for value clipping)
  T adv_mean;    // advantage normalisation: A' = (A - adv_mean) / adv_denom; (0, 1) leaves A exact
  T adv_denom;
};

// One sample's terms before the batch mean, and their derivatives.
template <typename T>
struct PpoSample {
  T policy;     // pg
  T value;      // v
  T approx_kl;  // (ratio - 1) - log ratio
  T clipped;    // 1 if |ratio - 1| > eps else 0
  T d_policy;   // d pg / d new_logp
  T d_value;    // d v / d V
};

template <bool kClipValues, typename T>
FASTPPO_HD PpoSample<T> ppo_sample(T new_logp, T old_logp, T advantage, T value, T old_value, T ret,
                                   const PpoCoefs<T>& c) {
  PpoSample<T> s;
  const T logratio = new_logp - old_logp;
  const T ratio = ppo_exp(logratio);
  const T a = (advantage - c.adv_mean) / c.adv_denom;
  const T lo = T(1) - c.clip_coef, hi = T(1) + c.clip_coef;
  const T surr1 = ratio * a;
  const T surr2 = ppo_clamp(ratio, lo, hi) * a;
  // min picks surr1: gradient -A * ratio. It picks surr2: the clamp passes -A * ratio only inside
  // [lo, hi] (where surr1 == surr2, so not here). A tie: half through each, as torch.minimum does.
  // `&` rather than `&&` throughout: no branch, so the CPU loop vectorises.
  const T g = -a * ratio;
  const bool ratio_inside = (ratio >= lo) & (ratio <= hi);
  s.policy = -(surr1 < surr2 ? surr1 : surr2);
  s.d_policy = surr1 < surr2 ? g : (surr1 > surr2 ? T(0) : (ratio_inside ? g : T(0.5) * g));
  s.approx_kl = (ratio - T(1)) - logratio;
  const T dev = ratio - T(1);
  s.clipped = (dev < T(0) ? -dev : dev) > c.clip_coef ? T(1) : T(0);

  const T diff = value - ret;
  const T sq = diff * diff;
  if (kClipValues) {
    const T step = value - old_value;
    const T diff_c = old_value + ppo_clamp(step, -c.vf_clip, c.vf_clip) - ret;
    const T sq_c = diff_c * diff_c;
    const T g_c = ((step >= -c.vf_clip) & (step <= c.vf_clip)) ? diff_c : T(0);
    s.value = T(0.5) * (sq > sq_c ? sq : sq_c);
    s.d_value = sq > sq_c ? diff : (sq < sq_c ? g_c : T(0.5) * (diff + g_c));
  } else {
    s.value = T(0.5) * sq;
    s.d_value = diff;
  }
  return s;
}

// Sums over the batch, accumulated in double (the CPU loop first sums fixed blocks of 256 samples in
// the inputs' precision), in this order everywhere (CPU partials, CUDA blocks).
enum PpoSum : int { kSumPolicy, kSumValue, kSumEntropy, kSumKl, kSumApproxKl, kSumClipped, kNumSums };

// Outputs, in the order of the `out` array: loss, then the stats.
enum PpoOut : int { kOutLoss, kOutPolicy, kOutValue, kOutEntropy, kOutApproxKl, kOutClipfrac, kNumOut };

// The batch means and the loss from the sums into out; the entropy and kl gradients (the same for
// every sample) into grads[2n], grads[2n + 1].
template <typename T>
FASTPPO_HD void ppo_finish(const double* sums, int64_t n, double vf_coef, double ent_coef, double kl_coef,
                           T* out, T* grads) {
  const double inv = 1.0 / double(n);
  grads[2 * n] = T(-ent_coef * inv);
  grads[2 * n + 1] = T(kl_coef * inv);
  const double policy = sums[kSumPolicy] * inv, value = sums[kSumValue] * inv;
  const double entropy = sums[kSumEntropy] * inv, kl = sums[kSumKl] * inv;
  out[kOutLoss] = T(policy + vf_coef * value - ent_coef * entropy + kl_coef * kl);
  out[kOutPolicy] = T(policy);
  out[kOutValue] = T(value);
  out[kOutEntropy] = T(entropy);
  out[kOutApproxKl] = T(sums[kSumApproxKl] * inv);
  out[kOutClipfrac] = T(sums[kSumClipped] * inv);
}

// Advantage normalisation from shifted sums (shift = the first advantage; stable in double):
// mean, and the denominator std + 1e-8 with torch's unbiased std (0 for a single sample).
FASTPPO_HD void ppo_adv_moments(double shift, double s1, double s2, int64_t n, double* mean, double* denom) {
  const double dn = double(n);
  *mean = shift + s1 / dn;
  const double var = n > 1 ? (s2 - s1 * s1 / dn) / (dn - 1.0) : 0.0;
  *denom = sqrt(var > 0.0 ? var : 0.0) + 1e-8;
}

}  // namespace fastppo
