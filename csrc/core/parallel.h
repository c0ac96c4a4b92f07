// A small persistent thread pool for batched CPU work (env blocks of GAE, envs, loss slices).
#pragma once

#include <cstdint>
#include <functional>

namespace fastppo {

int num_threads();
// n < 1 restores the default (FASTPPO_NUM_THREADS, else the hardware's thread count).
void set_num_threads(int n);

// Calls fn(begin, end) on contiguous, disjoint ranges covering [0, n), at most one per thread and
// none shorter than `grain` (so small work stays on the calling thread). The split depends only on
// n, grain and num_threads(), never on timing. fn must not throw. If another caller holds the pool,
// or this is called from inside a part of another parallel_for, the work runs on the calling thread
// instead of waiting.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace fastppo
