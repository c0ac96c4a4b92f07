// Built-in envs on the CPU: threads take contiguous blocks of envs (parallel_for's static split), so
// env i always runs the same code on its own RNG stream whatever the thread count.
#include <algorithm>
#include <atomic>

#include "envs/fast_trig.h"
#include "envs/vec_env.h"
#include "core/parallel.h"

namespace fastppo {
namespace {

// Envs per thread: at least a few microseconds of work per part. The pool's workers spin between
// back-to-back jobs (parallel.cpp), so a split costs well under a microsecond when steps follow each
// other; a CartPole step costs about 30 ns (a third of it libm's sincos), Pendulum's about 70 ns,
// Acrobot's four RK4 stages about half a microsecond.
template <typename E>
constexpr int64_t kGrain = 128;
template <>
constexpr int64_t kGrain<CartPole> = 256;  // ~30 ns a step: 256 envs measured no faster split in two
template <>
constexpr int64_t kGrain<Acrobot> = 32;

// Envs whose physics splits into libm calls and algebra (kSplitStep): a block at a time, the calls
// first, then the algebra and the bookkeeping as loops over the block that the compiler vectorises,
// then the autoresets. The same operations on the same values as env_step_one, so the same bits
// (with fast_math, the same operations on sin/cos values within 1 ulp of libm's).
template <typename E>
FASTPPO_CPU_CLONES int64_t step_range_split(const EnvBatchParams& params, const EnvStepArgs& a, int64_t b,
                                            int64_t e) {
  // A local copy: the flag stores (uint8_t) may alias anything, so through the caller's struct every
  // buffer pointer would be reloaded after each of them, and the loops would not vectorise.
  const EnvBatchParams p = params;
  constexpr int64_t kBlock = 64;
  typename E::Trig trig[kBlock];
  int64_t action[kBlock];
  double reward[kBlock];
  uint8_t terminated[kBlock], ended[kBlock];
  int64_t done = 0;
  for (int64_t b0 = b; b0 < e; b0 += kBlock) {
    const int64_t m = std::min(kBlock, e - b0);
    double* __restrict state = p.state + b0 * E::kStateDim;
    for (int64_t i = 0; i < m; ++i) action[i] = env_action<E>(a, b0 + i);
    if (p.fast_math) {
      int64_t out_of_range = 0;
      for (int64_t i = 0; i < m; ++i) {
        const double x = E::angle(state + i * E::kStateDim);
        trig[i].sin = fast_sin(x);
        trig[i].cos = fast_cos(x);
        out_of_range |= !in_fast_trig_range(x);
      }
      if (out_of_range)  // outside the polynomials' range (rare: CartPole terminates at 0.21 rad): libm
        for (int64_t i = 0; i < m; ++i) {
          const double* s = state + i * E::kStateDim;
          if (!in_fast_trig_range(E::angle(s))) trig[i] = E::trig(s);
        }
    } else {
      for (int64_t i = 0; i < m; ++i) trig[i] = E::trig(state + i * E::kStateDim);
    }
    for (int64_t i = 0; i < m; ++i) {
      bool t;
      reward[i] = E::advance(state + i * E::kStateDim, action[i], trig[i], &t);
      terminated[i] = t;
    }
    // Env i touches only row i of each buffer, and the binding has checked that no two overlap.
#pragma GCC ivdep
    for (int64_t i = 0; i < m; ++i) ended[i] = env_record_step<E>(p, b0 + i, reward[i], terminated[i]);
    for (int64_t i = 0; i < m; ++i)
      if (ended[i]) env_end_episode<E>(p, a, b0 + i), ++done;
  }
  return done;
}

template <typename E>
int64_t step_range(const EnvBatchParams& p, const EnvStepArgs& a, int64_t b, int64_t e) {
  if constexpr (kSplitStep<E>) {
    return step_range_split<E>(p, a, b, e);
  } else {
    int64_t done = 0;
    for (int64_t i = b; i < e; ++i) done += env_step_one<E>(p, a, i);
    return done;
  }
}

}  // namespace

int64_t envs_step_cpu(const EnvBatchParams& p, const EnvStepArgs& a) {
  return dispatch_env(p.env, [&](auto env) -> int64_t {
    using E = decltype(env);
    std::atomic<int64_t> done{0};
    parallel_for(p.N, kGrain<E>, [&](int64_t b, int64_t e) {
      done.fetch_add(step_range<E>(p, a, b, e), std::memory_order_relaxed);
    });
    return done.load();
  });
}

void envs_reset_cpu(const EnvBatchParams& p, const EnvResetArgs& r) {
  dispatch_env(p.env, [&](auto env) {
    using E = decltype(env);
    for (int64_t i = 0; i < p.N; ++i) env_reset_one<E>(p, r, i);
  });
}

}  // namespace fastppo
