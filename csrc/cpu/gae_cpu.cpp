// GAE on the CPU. Many envs: threads take blocks of envs and walk back in time a row at a time, so the
// inner loop runs over contiguous envs and vectorises. Few envs and a long rollout: the time-chunked
// scan of gae_math.h, the same algorithm the CUDA kernel uses for that shape.
#include <algorithm>
#include <vector>

#include "gae.h"
#include "parallel.h"

namespace fastppo {
namespace {

constexpr int64_t kMinWorkPerThread = 1 << 16;  // elements; below this a thread's wake-up costs more than it saves
constexpr int64_t kEnvTile = 512;               // envs per row pass: one row of all 7 arrays stays in L1

template <typename T, typename D, bool kUnitN>
void gae_env_block(const GaeParams& p, int64_t n0, int64_t n1) {
  const T gamma = T(p.gamma), gamma_lam = T(p.gamma * p.lam);
  const auto* R = static_cast<const T*>(p.rewards.data);
  const auto* V = static_cast<const T*>(p.values.data);
  const auto* NV = static_cast<const T*>(p.next_values.data);
  const auto* TE = static_cast<const D*>(p.terminated.data);
  const auto* TR = static_cast<const D*>(p.truncated.data);
  auto* A = static_cast<T*>(p.advantages.data);
  auto* RET = static_cast<T*>(p.returns.data);
  auto at = [](const Array2D& a, int64_t t, int64_t n) { return t * a.stride_t + (kUnitN ? n : n * a.stride_n); };

  for (int64_t b0 = n0; b0 < n1; b0 += kEnvTile) {
    const int64_t b1 = std::min(n1, b0 + kEnvTile);
    for (int64_t t = p.T - 1; t >= 0; --t) {
      const bool last = t == p.T - 1;
      for (int64_t n = b0; n < b1; ++n) {
        const T next_adv = last ? T(0) : A[at(p.advantages, t + 1, n)];
        const T v = V[at(p.values, t, n)];
        const T a = gae_advantage(R[at(p.rewards, t, n)], v, NV[at(p.next_values, t, n)],
                                  as_flag(TE[at(p.terminated, t, n)]), as_flag(TR[at(p.truncated, t, n)]),
                                  gamma, gamma_lam, next_adv);
        A[at(p.advantages, t, n)] = a;
        RET[at(p.returns, t, n)] = a + v;
      }
    }
  }
}

template <typename T, typename D>
void gae_time_chunked(const GaeParams& p, int64_t chunks) {
  const int64_t jobs = p.N * chunks;
  std::vector<T> head(jobs), carry_product(jobs);
  auto chunk = [&](int64_t job) {
    const int64_t c = job % chunks;
    return std::make_pair(p.T * c / chunks, p.T * (c + 1) / chunks);
  };
  parallel_for(jobs, 1, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const auto [t0, t1] = chunk(j);
      head[j] = gae_column<T, D>(p, j / chunks).scan(t0, t1, T(0), false, &carry_product[j]);
    }
  });
  for (int64_t n = 0; n < p.N; ++n) {  // phase 2: head[j] becomes the advantage carried into chunk j
    T after = T(0);
    for (int64_t j = (n + 1) * chunks - 1; j >= n * chunks; --j) {
      const T start = head[j] + carry_product[j] * after;
      head[j] = after;
      after = start;
    }
  }
  parallel_for(jobs, 1, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const auto [t0, t1] = chunk(j);
      gae_column<T, D>(p, j / chunks).fix_up(t0, t1, head[j]);
    }
  });
}

template <typename T, typename D>
void gae_cpu_typed(const GaeParams& p) {
  const int threads = num_threads();
  const bool long_and_narrow = threads > 1 && p.N < 8 * threads && p.T * p.N >= 2 * kMinWorkPerThread &&
                               p.T >= 4 * kGaeMinChunk * threads;
  if (long_and_narrow) {
    gae_time_chunked<T, D>(p, 2 * threads);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerThread / p.T);
  parallel_for(p.N, grain, [&](int64_t n0, int64_t n1) {
    if (p.unit_stride_n)
      gae_env_block<T, D, true>(p, n0, n1);
    else
      gae_env_block<T, D, false>(p, n0, n1);
  });
}

}  // namespace

void gae_cpu(const GaeParams& p) {
  const bool f32 = p.dtype == ScalarType::Float32;
  if (p.done_dtype == ScalarType::Bool)
    f32 ? gae_cpu_typed<float, uint8_t>(p) : gae_cpu_typed<double, uint8_t>(p);
  else if (f32)
    gae_cpu_typed<float, float>(p);
  else
    gae_cpu_typed<double, double>(p);
}

}  // namespace fastppo
