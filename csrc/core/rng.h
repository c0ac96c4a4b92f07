// Per-env random streams, identical in host and device code. Env i's stream is a SplitMix64 sequence
// keyed by (seed, i), so what an env draws depends only on the seed, its index and how often it has
// reset: never on num_envs, on how envs are split across threads, or on the device.
#pragma once

#include "core/common.h"

namespace fastppo {

FASTPPO_HD uint64_t mix64(uint64_t z) {  // SplitMix64's finaliser (Steele, Lea, Flood 2014)
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;
// A second odd multiplier for the env index, so that (seed, i) and (seed', i') keys do not line up.
constexpr uint64_t kEnvGamma = 0xD1B54A32D192ED03ULL;

// SplitMix64 steps its state before mixing (mix64(0) == 0), hence the +1s.
FASTPPO_HD uint64_t stream_key(uint64_t seed, uint64_t env_index) {
  return mix64(mix64(seed + kGoldenGamma) + (env_index + 1) * kEnvGamma);
}

// One env's stream: state[0] is the key, state[1] counts the draws taken.
struct EnvRng {
  uint64_t* state;

  FASTPPO_HD uint64_t next() { return mix64(state[0] + (++state[1]) * kGoldenGamma); }
  // A double in [0, 1) with 53 random bits, like numpy's Generator.random().
  FASTPPO_HD double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
  // numpy's Generator.uniform(low, high): low + (high - low) * random().
  FASTPPO_HD double uniform(double low, double high) { return low + (high - low) * uniform(); }
};

}  // namespace fastppo
