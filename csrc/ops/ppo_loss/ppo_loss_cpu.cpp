// PPO loss on the CPU: one pass over the batch computes every sample's terms and gradients
// (ppo_loss_math.h) and accumulates the sums in double, from partial sums of fixed blocks. The batch
// is cut into fixed chunks whose partial sums are added in chunk order, so the result does not depend
// on the thread count; threads take runs of chunks only when the batch is large enough to pay for
// waking them.
#include <algorithm>
#include <array>
#include <vector>

#include "core/parallel.h"
#include "ops/ppo_loss/ppo_loss.h"

namespace fastppo {
namespace {

constexpr int64_t kChunk = 8192;             // samples per partial sum
constexpr int64_t kMinChunksPerThread = 4;  // 32K samples per thread at least: threads from 64K up
constexpr int64_t kSumBlock = 256;           // samples per partial sum in the input's own precision

using Sums = std::array<double, kNumSums>;

// One input as the loop sees it: a local restrict pointer and stride, so nothing is reloaded through
// the params struct inside the loop (which stops GCC from vectorising it).
template <typename T, bool kUnit>
struct In {
  const T* __restrict x;
  int64_t s;
  explicit In(const Array1D& a) : x(static_cast<const T*>(a.data)), s(a.stride) {}
  T operator[](int64_t i) const { return x[kUnit ? i : i * s]; }
};

// Shifted sums of the advantages over [b, e) for the normalisation.
template <typename T, bool kUnit>
FASTPPO_CPU_CLONES void adv_chunk(const PpoLossParams& p, double shift, int64_t b, int64_t e, double* s) {
  const In<T, kUnit> adv(p.advantages);
  double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = b; i < e; ++i) {
    const double d = double(adv[i]) - shift;
    s1 += d;
    s2 += d * d;
  }
  s[0] = s1, s[1] = s2;
}

// The per-sample terms and gradients of [b, e), summed in T (e - b <= kSumBlock). Its own function,
// not inlined: GCC 12 vectorised this `omp simd` reduction only as the outermost loop of a function.
template <typename T, bool kUnit, bool kClipValues>
FASTPPO_CPU_CLONES __attribute__((noinline)) std::array<T, 5> loss_block(const PpoLossParams& p, const PpoCoefs<T> c,
                                                                         int64_t b, int64_t e) {
  const In<T, kUnit> new_logp(p.new_logp), old_logp(p.old_logp), adv(p.advantages), values(p.new_values),
      old_values(p.old_values), returns(p.returns), entropy(p.entropy);
  T* __restrict d_logp = static_cast<T*>(p.grads);
  T* __restrict d_values = d_logp + p.n;
  const T policy_scale = T(1.0 / double(p.n)), value_scale = T(p.vf_coef / double(p.n));
  T sp = 0, sv = 0, se = 0, sa = 0, sc = 0;
#pragma omp simd reduction(+ : sp, sv, se, sa, sc)
  for (int64_t i = b; i < e; ++i) {
    const PpoSample<T> s =
        ppo_sample<kClipValues, T>(new_logp[i], old_logp[i], adv[i], values[i], old_values[i], returns[i], c);
    d_logp[i] = s.d_policy * policy_scale;
    d_values[i] = s.d_value * value_scale;
    sp += s.policy, sv += s.value, sa += s.approx_kl, sc += s.clipped;
    se += entropy[i];
  }
  return {sp, sv, se, sa, sc};
}

template <typename T, bool kUnit, bool kClipValues>
FASTPPO_CPU_CLONES void loss_chunk(const PpoLossParams& p, const PpoCoefs<T> c, int64_t b, int64_t e,
                                   double* sums) {
  // Sums in T over blocks of kSumBlock samples (kSumBlock / 8 terms per float lane), then in double:
  // double accumulators for every float sample took ten of AVX2's sixteen registers and spilled.
  double sp = 0, sv = 0, se = 0, sk = 0, sa = 0, sc = 0;
  for (int64_t b0 = b; b0 < e; b0 += kSumBlock) {
    const std::array<T, 5> s = loss_block<T, kUnit, kClipValues>(p, c, b0, std::min(e, b0 + kSumBlock));
    sp += s[0], sv += s[1], se += s[2], sa += s[3], sc += s[4];
  }
  if (p.kl.data) {
    const In<T, kUnit> kl(p.kl);
#pragma omp simd reduction(+ : sk)
    for (int64_t i = b; i < e; ++i) sk += kl[i];
  }
  sums[kSumPolicy] = sp, sums[kSumValue] = sv, sums[kSumEntropy] = se, sums[kSumKl] = sk;
  sums[kSumApproxKl] = sa, sums[kSumClipped] = sc;
}

// fn(chunk, begin, end, partial) over the fixed chunks, then the partials added in chunk order.
template <size_t K, typename Fn>
std::array<double, K> chunked_sum(int64_t n, const Fn& fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks * K);
  parallel_for(chunks, kMinChunksPerThread, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c * kChunk, std::min(n, (c + 1) * kChunk), &partial[c * K]);
  });
  std::array<double, K> total{};
  for (int64_t c = 0; c < chunks; ++c)
    for (size_t k = 0; k < K; ++k) total[k] += partial[c * K + k];
  return total;
}

template <typename T, bool kUnit>
void ppo_loss_typed(const PpoLossParams& p) {
  PpoCoefs<T> c{T(p.clip_coef), T(p.vf_clip), T(0), T(1)};
  if (p.normalize_advantages) {
    const double shift = double(static_cast<const T*>(p.advantages.data)[0]);
    const auto s = chunked_sum<2>(p.n, [&](int64_t b, int64_t e, double* out) {
      adv_chunk<T, kUnit>(p, shift, b, e, out);
    });
    double mean, denom;
    ppo_adv_moments(shift, s[0], s[1], p.n, &mean, &denom);
    c.adv_mean = T(mean), c.adv_denom = T(denom);
  }
  const Sums sums = chunked_sum<kNumSums>(p.n, [&](int64_t b, int64_t e, double* out) {
    p.clip_values ? loss_chunk<T, kUnit, true>(p, c, b, e, out) : loss_chunk<T, kUnit, false>(p, c, b, e, out);
  });
  ppo_finish<T>(sums.data(), p.n, p.vf_coef, p.ent_coef, p.kl_coef, static_cast<T*>(p.out),
                static_cast<T*>(p.grads));
}

}  // namespace

void ppo_loss_cpu(const PpoLossParams& p) {
  if (p.dtype == ScalarType::Float32)
    p.unit_stride ? ppo_loss_typed<float, true>(p) : ppo_loss_typed<float, false>(p);
  else
    p.unit_stride ? ppo_loss_typed<double, true>(p) : ppo_loss_typed<double, false>(p);
}

}  // namespace fastppo
