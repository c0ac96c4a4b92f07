// Built-in envs on the CPU: threads take contiguous blocks of envs (parallel_for's static split), so
// env i always runs the same code on its own RNG stream whatever the thread count.
#include <atomic>

#include "envs/vec_env.h"
#include "parallel.h"

namespace fastppo {
namespace {

// Envs per thread: at least a few microseconds of work per part. The pool's workers spin between
// back-to-back jobs (parallel.cpp), so a split costs well under a microsecond when steps follow each
// other; a CartPole step costs about 50 ns (libm's sin/cos and gymnasium's divisions, which must stay
// divisions to round alike), Acrobot's four RK4 stages about half a microsecond.
template <typename E>
constexpr int64_t kGrain = 128;
template <>
constexpr int64_t kGrain<Acrobot> = 32;

}  // namespace

int64_t envs_step_cpu(const EnvBatchParams& p, const EnvStepArgs& a) {
  return dispatch_env(p.env, [&](auto env) -> int64_t {
    using E = decltype(env);
    std::atomic<int64_t> done{0};
    parallel_for(p.N, kGrain<E>, [&](int64_t b, int64_t e) {
      int64_t local = 0;
      for (int64_t i = b; i < e; ++i) local += env_step_one<E>(p, a, i);
      done.fetch_add(local, std::memory_order_relaxed);
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
