// MountainCar-v0 physics.
// Provenance: gymnasium 1.4, gymnasium/envs/classic_control/mountain_car.py (MountainCarEnv).
// gymnasium holds the state in float64 and returns it as float32; so do we.
#pragma once

#include <cmath>

#include "core/rng.h"

namespace fastppo {

struct MountainCar {
  static constexpr const char* kId = "MountainCar-v0";
  static constexpr int kStateDim = 2;  // position, velocity
  static constexpr int kObsDim = 2;
  static constexpr int kNumActions = 3;  // accelerate left, don't, accelerate right
  static constexpr int64_t kMaxEpisodeSteps = 200;
  static constexpr double kResetA = -0.6, kResetB = -0.4;  // initial position bounds ("low", "high")

  static constexpr double kMinPosition = -1.2, kMaxPosition = 0.6;
  static constexpr double kMaxSpeed = 0.07;
  static constexpr double kGoalPosition = 0.5, kGoalVelocity = 0.0;
  static constexpr double kForce = 0.001, kGravity = 0.0025;

  FASTPPO_HD static void reset(double* s, EnvRng& rng, double low, double high) {
    s[0] = rng.uniform(low, high);
    s[1] = 0.0;
  }

  FASTPPO_HD static double step(double* s, int64_t action, bool* terminated) {
    double position = s[0], velocity = s[1];
    velocity += double(action - 1) * kForce + cos(3 * position) * (-kGravity);
    velocity = fmin(fmax(velocity, -kMaxSpeed), kMaxSpeed);
    position += velocity;
    position = fmin(fmax(position, kMinPosition), kMaxPosition);
    if (position == kMinPosition && velocity < 0) velocity = 0;
    s[0] = position, s[1] = velocity;
    *terminated = position >= kGoalPosition && velocity >= kGoalVelocity;
    return -1.0;
  }

  FASTPPO_HD static void observe(const double* s, float* obs) {
    obs[0] = float(s[0]), obs[1] = float(s[1]);
  }
};

}  // namespace fastppo
