// The batch side of every built-in env, written once: the per-env step with gymnasium's TimeLimit,
// SAME_STEP autoreset (the true final observation kept aside), RecordEpisodeStatistics' running
// return/length/time, and reset. Host and device share it; env_batch.cpp binds it, envs_cpu.cpp and
// envs_cuda.cu only decide how envs are iterated. The list of envs is envs/registry.h.
#pragma once

#include <cmath>
#include <type_traits>

#include "envs/registry.h"

namespace fastppo {

// Whether env E's physics splits into libm calls and algebra: E::Trig, E::angle (the argument of the
// sin and cos), E::trig and E::advance, with E::step = advance(trig). The CPU steps such envs a block
// at a time (envs_cpu.cpp), and only they offer fast_math.
template <typename E, typename = void>
constexpr bool kSplitStep = false;
template <typename E>
constexpr bool kSplitStep<E, std::void_t<typename E::Trig>> = true;

// Every buffer of a batch of N envs, all contiguous and on one device. The binding validates them.
struct EnvBatchParams {
  EnvId env = EnvId::CartPole;
  int64_t N = 0;
  // What the user sees, rewritten by every step: observations (N, obs_dim) (after autoreset),
  // final observations of done envs (N, obs_dim) (rows of envs not done are left as they were),
  // rewards, terminated, truncated (N,), and the finished episodes' statistics (N,) (0 where not done).
  float* obs = nullptr;
  float* final_obs = nullptr;
  float* rewards = nullptr;
  uint8_t* terminated = nullptr;
  uint8_t* truncated = nullptr;
  double* episode_r = nullptr;
  int64_t* episode_l = nullptr;
  double* episode_t = nullptr;
  // Internal per-env state: physics state (N, state_dim), RNG (N, 2), steps since reset, running
  // return, start time of the current episode.
  double* state = nullptr;
  uint64_t* rng = nullptr;
  int64_t* elapsed = nullptr;
  double* running_return = nullptr;
  double* start_time = nullptr;
  // Opt-in fast math (CPU, envs with a split step): sin/cos as vectorised polynomials (envs/fast_trig.h)
  // instead of libm's, within 1 ulp of them but not bit-exact with gymnasium.
  bool fast_math = false;
};

// One step's inputs: actions (int32/int64 (N,) for discrete envs, float32/float64 (N, 1) otherwise;
// already validated) and the clock, read once per step by the host (episode times, like gymnasium's
// RecordEpisodeStatistics, are wall time since the episode's reset).
struct EnvStepArgs {
  const void* actions = nullptr;
  ScalarType action_dtype = ScalarType::Int64;
  int64_t action_stride = 1;  // in elements, between envs
  double now = 0;
};

// One reset's inputs: which envs (mask, nullptr: all), reseed them from `seed` when `reseed`, the
// env's two reset-distribution parameters (see each header's kResetA/kResetB), and the clock.
struct EnvResetArgs {
  const uint8_t* mask = nullptr;
  bool reseed = false;
  uint64_t seed = 0;
  double a = 0, b = 0;
  double now = 0;
};

template <typename E>
FASTPPO_HD auto env_action(const EnvStepArgs& a, int64_t i) {
  if constexpr (E::kNumActions > 0) {
    return a.action_dtype == ScalarType::Int32 ? int64_t(static_cast<const int32_t*>(a.actions)[i * a.action_stride])
                                               : static_cast<const int64_t*>(a.actions)[i * a.action_stride];
  } else {  // gymnasium's Box action space is float32: a float64 action is rounded to it first
    return a.action_dtype == ScalarType::Float32 ? static_cast<const float*>(a.actions)[i * a.action_stride]
                                                 : float(static_cast<const double*>(a.actions)[i * a.action_stride]);
  }
}

// np.round(x, 6), as RecordEpisodeStatistics reports episode times.
FASTPPO_HD double round6(double x) { return nearbyint(x * 1e6) / 1e6; }

template <typename E>
FASTPPO_HD void env_reset_one(const EnvBatchParams& p, const EnvResetArgs& r, int64_t i) {
  if (r.mask && !r.mask[i]) return;
  uint64_t* rng = p.rng + 2 * i;
  if (r.reseed) rng[0] = stream_key(r.seed, uint64_t(i)), rng[1] = 0;
  EnvRng stream{rng};
  double* s = p.state + i * E::kStateDim;
  E::reset(s, stream, r.a, r.b);
  E::observe(s, p.obs + i * E::kObsDim);
  p.elapsed[i] = 0;
  p.running_return[i] = 0;
  p.start_time[i] = r.now;
}

// After env i's physics step, what every env does whether or not its episode ended: the time limit,
// the outputs, the running episode statistics and the observation. Branch-free, so a CPU loop over
// envs vectorises it. Returns whether the episode ended: env_end_episode must then follow.
template <typename E>
FASTPPO_HD bool env_record_step(const EnvBatchParams& p, int64_t i, double reward, uint8_t terminated) {
  // Flags as 64-bit integers rather than bools: GCC's vectoriser cannot mix bool masks of different widths.
  const int64_t length = ++p.elapsed[i];
  const int64_t truncated = length >= E::kMaxEpisodeSteps ? 1 : 0;  // gymnasium's TimeLimit: may coincide
  const int64_t done = int64_t(terminated) | truncated;              // with terminated (0 or 1)
  const double ret = p.running_return[i] + reward;
  p.rewards[i] = float(reward);
  p.terminated[i] = terminated;
  p.truncated[i] = uint8_t(truncated);
  p.episode_r[i] = done ? ret : 0.0;
  p.episode_l[i] = done ? length : 0;
  p.episode_t[i] = 0.0;  // env_end_episode writes the time of an episode that ended
  p.running_return[i] = ret;
  E::observe(p.state + i * E::kStateDim, p.obs + i * E::kObsDim);
  return done != 0;
}

// Env i's episode ended this step: keep its final observation and episode time, then autoreset it
// (SAME_STEP: the observation returned is the new episode's first).
template <typename E>
FASTPPO_HD void env_end_episode(const EnvBatchParams& p, const EnvStepArgs& a, int64_t i) {
  double* s = p.state + i * E::kStateDim;
  float* obs = p.obs + i * E::kObsDim;
  for (int k = 0; k < E::kObsDim; ++k) p.final_obs[i * E::kObsDim + k] = obs[k];
  p.episode_t[i] = round6(a.now - p.start_time[i]);
  EnvRng stream{p.rng + 2 * i};
  E::reset(s, stream, E::kResetA, E::kResetB);  // autoreset uses the default distribution, as gymnasium's
  p.elapsed[i] = 0;
  p.running_return[i] = 0;
  p.start_time[i] = a.now;
  E::observe(s, obs);
}

// Steps env i; returns whether its episode ended (it has then been reset).
template <typename E>
FASTPPO_HD bool env_step_one(const EnvBatchParams& p, const EnvStepArgs& a, int64_t i) {
  bool terminated = false;
  const double reward = E::step(p.state + i * E::kStateDim, env_action<E>(a, i), &terminated);
  const bool done = env_record_step<E>(p, i, reward, terminated);
  if (done) env_end_episode<E>(p, a, i);
  return done;
}

int64_t envs_step_cpu(const EnvBatchParams& p, const EnvStepArgs& a);
void envs_reset_cpu(const EnvBatchParams& p, const EnvResetArgs& r);
#ifdef FASTPPO_WITH_CUDA
void envs_step_cuda(const EnvBatchParams& p, const EnvStepArgs& a, void* stream);
void envs_reset_cuda(const EnvBatchParams& p, const EnvResetArgs& r, void* stream);
#endif

}  // namespace fastppo
