#include "core/parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace fastppo {
namespace {

int default_threads() {
  if (const char* env = std::getenv("FASTPPO_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// Spin before sleeping: a worker that has just finished a part polls for the next job this long, and
// the caller polls for the parts it waits on this long, before blocking on the condition variable.
// Back-to-back jobs (vector env steps, minibatches) then start in well under a microsecond instead of
// paying a futex wake-up, which costs tens of microseconds on some virtual machines.
constexpr auto kSpin = std::chrono::microseconds(200);

// Polls `ready` until it holds or kSpin has passed; returns whether it holds.
template <typename Ready>
bool spin_until(const Ready& ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return ready();
  }
}

// Static partition: part i of a job always runs on worker i (part 0 on the caller), so a worker that
// wakes late still runs exactly its own part of the current job, and results never depend on timing.
// The job's fields are written and read under m_; generation_ and done_ are atomics so that they can
// also be polled without the lock.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) : threads_(threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int threads() const { return threads_; }

  void run(int parts, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> job(job_, std::try_to_lock);
    if (!job.owns_lock()) {  // another thread is using the pool: do the work here
      fn(0, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      n_ = n;
      parts_ = parts;
      done_.store(0);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    fn(0, n / parts);
    const auto all_done = [&] { return done_.load() == parts - 1; };
    if (!spin_until(all_done)) {
      std::unique_lock<std::mutex> lk(m_);
      finished_.wait(lk, all_done);
    }
    std::lock_guard<std::mutex> lk(m_);
    fn_ = nullptr;
  }

 private:
  void work(int index) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int64_t, int64_t)>* fn;
      int64_t n;
      int parts;
      spin_until([&] { return generation_.load() != seen; });
      {
        std::unique_lock<std::mutex> lk(m_);
        wake_.wait(lk, [&] { return generation_.load() != seen; });
        if (stop_) return;
        seen = generation_.load();
        fn = fn_;
        n = n_;
        parts = parts_;
      }
      if (index >= parts) continue;
      (*fn)(n * index / parts, n * (index + 1) / parts);
      {
        std::lock_guard<std::mutex> lk(m_);
        done_.fetch_add(1);
      }
      finished_.notify_one();
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex job_;  // one job at a time
  std::mutex m_;
  std::condition_variable wake_, finished_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 0;
  std::atomic<int> done_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

std::mutex g_pool_mutex;
ThreadPool* g_pool = nullptr;  // created on first use
int g_requested = 0;           // 0: default

ThreadPool& pool() {
  std::lock_guard<std::mutex> lk(g_pool_mutex);
  if (!g_pool) g_pool = new ThreadPool(g_requested > 0 ? g_requested : default_threads());
  return *g_pool;
}

// A forked child has none of the parent's worker threads: forget the pool (its memory and locks
// belong to the parent's threads) and start a new one on first use.
void reset_after_fork() {
  new (&g_pool_mutex) std::mutex();
  g_pool = nullptr;
}

[[maybe_unused]] const int g_atfork = pthread_atfork(nullptr, nullptr, reset_after_fork);

}  // namespace

int num_threads() { return pool().threads(); }

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lk(g_pool_mutex);
  g_requested = n > 0 ? n : 0;
  delete g_pool;
  g_pool = nullptr;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  ThreadPool& p = pool();
  const int64_t by_grain = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int parts = static_cast<int>(std::min<int64_t>(p.threads(), by_grain));
  if (parts <= 1) {
    fn(0, n);
    return;
  }
  p.run(parts, n, fn);
}

}  // namespace fastppo
