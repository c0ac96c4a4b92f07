// GAE on the CPU. Many envs: threads take blocks of envs and walk back in time a row at a time, so the
// inner loop runs over contiguous envs and vectorises. Few envs and a long rollout: the time-chunked
// scan of gae_math.h, the same algorithm the CUDA kernel uses for that shape.
#include <algorithm>
#include <vector>

#include "ops/gae/gae.h"
#include "core/parallel.h"

namespace fastppo {
namespace {

constexpr int64_t kMinWorkPerThread = 1 << 16;  // elements; below this a thread's wake-up costs more than it saves
constexpr int64_t kEnvTile = 512;               // envs per row pass: one row of all 7 arrays stays in L1

// One row t over envs [b0, b1). The binding has checked that no output overlaps an input, so the
// pointers are __restrict__ (as function parameters, where g++ honours it): without it the compiler
// re-checks aliasing among seven pointers on every row, which dominated small N.
template <typename T, typename D, bool kUnitN, bool kLastRow>
void gae_row(const T* __restrict__ r, const T* __restrict__ v, const T* __restrict__ nv, const D* __restrict__ te,
             const D* __restrict__ tr, const T* __restrict__ next, T* __restrict__ a, T* __restrict__ ret,
             const int64_t* sn, int64_t b0, int64_t b1, T gamma, T gamma_lam) {
  for (int64_t n = b0; n < b1; ++n) {
    const T val = v[kUnitN ? n : n * sn[1]];
    const T next_adv = kLastRow ? T(0) : next[kUnitN ? n : n * sn[5]];  // A_T = 0 past the last row
    const bool term = as_flag(te[kUnitN ? n : n * sn[3]]), trunc = as_flag(tr[kUnitN ? n : n * sn[4]]);
    const T adv = gae_advantage(r[kUnitN ? n : n * sn[0]], val, nv[kUnitN ? n : n * sn[2]], term, trunc, gamma,
                                gamma_lam, next_adv);
    a[kUnitN ? n : n * sn[5]] = adv;
    ret[kUnitN ? n : n * sn[6]] = adv + val;
  }
}

template <typename T, typename D, bool kUnitN>
void gae_env_block(const GaeParams& p, int64_t n0, int64_t n1) {
  const T gamma = T(p.gamma), gamma_lam = T(p.gamma * p.lam);
  const int64_t sn[7] = {p.rewards.stride_n,    p.values.stride_n,     p.next_values.stride_n, p.terminated.stride_n,
                         p.truncated.stride_n,  p.advantages.stride_n, p.returns.stride_n};
  for (int64_t b0 = n0; b0 < n1; b0 += kEnvTile) {
    const int64_t b1 = std::min(n1, b0 + kEnvTile);
    for (int64_t t = p.T - 1; t >= 0; --t) {
      const T* r = static_cast<const T*>(p.rewards.data) + t * p.rewards.stride_t;
      const T* v = static_cast<const T*>(p.values.data) + t * p.values.stride_t;
      const T* nv = static_cast<const T*>(p.next_values.data) + t * p.next_values.stride_t;
      const D* te = static_cast<const D*>(p.terminated.data) + t * p.terminated.stride_t;
      const D* tr = static_cast<const D*>(p.truncated.data) + t * p.truncated.stride_t;
      T* a = static_cast<T*>(p.advantages.data) + t * p.advantages.stride_t;
      T* ret = static_cast<T*>(p.returns.data) + t * p.returns.stride_t;
      if (t == p.T - 1)
        gae_row<T, D, kUnitN, true>(r, v, nv, te, tr, nullptr, a, ret, sn, b0, b1, gamma, gamma_lam);
      else
        gae_row<T, D, kUnitN, false>(r, v, nv, te, tr, a + p.advantages.stride_t, a, ret, sn, b0, b1, gamma,
                                     gamma_lam);
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
