#include "core/parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <memory>
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

// Whether this thread is running a part of a job: a parallel_for inside one (a rollout block's MLP
// forward, whose matrix products split too) runs inline, as the pool is busy with the outer job and
// the caller holds its job lock.
thread_local bool t_in_part = false;

// Marks the current thread as running a part for its lifetime.
class InPart {
 public:
  InPart() : was_(t_in_part) { t_in_part = true; }
  ~InPart() { t_in_part = was_; }
  InPart(const InPart&) = delete;
  InPart& operator=(const InPart&) = delete;

 private:
  const bool was_;
};

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

// Static partition: part i of a job is fn over the same range [n * i / parts, n * (i + 1) / parts)
// whichever thread runs it, so results never depend on timing. Part 0 runs on the caller; worker i
// claims part i, and the caller, once its own part is done, runs any part whose worker has not claimed
// it yet (on a busy machine a worker may wait milliseconds for a core, and the job would wait with it).
// The job's fields, and a worker's claim, are written and read under m_ (so a worker claims a part of
// the job whose fields it read); generation_, done_ and the claims are atomics so that they can also be
// polled or taken by the caller without the lock.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) : threads_(threads), claimed_(new std::atomic<bool>[threads]) {
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
      for (int i = 1; i < parts; ++i) claimed_[i].store(false);
      done_.store(0);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    {
      InPart part;
      fn(0, n / parts);
      for (int i = parts - 1; i >= 1; --i)  // from the last: a worker that is awake takes the first ones
        if (!claimed_[i].exchange(true)) {
          fn(n * i / parts, n * (i + 1) / parts);
          done_.fetch_add(1);
        }
    }
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
    InPart always;  // a worker runs nothing but parts
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int64_t, int64_t)>* fn;
      int64_t n;
      int parts;
      bool mine;
      spin_until([&] { return generation_.load() != seen; });
      {
        std::unique_lock<std::mutex> lk(m_);
        wake_.wait(lk, [&] { return generation_.load() != seen; });
        if (stop_) return;
        seen = generation_.load();
        fn = fn_;
        n = n_;
        parts = parts_;
        mine = index < parts && !claimed_[index].exchange(true);
      }
      if (!mine) continue;
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
  std::unique_ptr<std::atomic<bool>[]> claimed_;  // per part (1..parts_ - 1): taken by a worker or the caller
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
  if (t_in_part) {
    fn(0, n);
    return;
  }
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
