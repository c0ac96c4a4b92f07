// MountainCarContinuous-v0 physics.
// Provenance: gymnasium 1.4, gymnasium/envs/classic_control/continuous_mountain_car.py
// (Continuous_MountainCarEnv), under NumPy 2 scalar promotion (NEP 50).
//
// gymnasium's arithmetic here mixes precisions, and we follow it: reset() leaves the state in float64,
// every step() stores it back as float32, and a float32 state makes the next step's arithmetic
// float32 (NumPy 2 casts Python floats to the array scalar's type). So the state carries a third
// entry, "is float32", which selects the precision of the next step. The action stays float32 unless
// gymnasium's min/max clip replaces it by a Python float. The reward uses the unclipped action.
#pragma once

#include <cmath>

#include "core/rng.h"

namespace fastppo {

struct MountainCarContinuous {
  static constexpr const char* kId = "MountainCarContinuous-v0";
  static constexpr int kStateDim = 3;  // position, velocity, 1 if gymnasium would hold them as float32
  static constexpr int kObsDim = 2;
  static constexpr int kNumActions = 0;  // continuous: Box(-1, 1, (1,), float32)
  static constexpr double kActionLow = -1.0, kActionHigh = 1.0;
  static constexpr int64_t kMaxEpisodeSteps = 999;
  static constexpr double kResetA = -0.6, kResetB = -0.4;

  static constexpr double kMinPosition = -1.2, kMaxPosition = 0.6;
  static constexpr double kMaxSpeed = 0.07;
  static constexpr double kGoalPosition = 0.45, kGoalVelocity = 0.0;
  static constexpr double kPower = 0.0015;

  FASTPPO_HD static void reset(double* s, EnvRng& rng, double low, double high) {
    s[0] = rng.uniform(low, high);
    s[1] = 0.0;
    s[2] = 0.0;
  }

  template <typename T>  // T: the precision gymnasium's step runs in (double after reset, float after)
  FASTPPO_HD static void integrate(double* s, float action, bool* terminated) {
    T position = T(s[0]), velocity = T(s[1]);
    const double slope = 0.0025 * cos(double(T(3) * position));
    T dv;
    if (action < float(kActionLow) || action > float(kActionHigh)) {  // clipped to a Python float
      dv = T((action < 0 ? kActionLow : kActionHigh) * kPower - slope);
    } else {  // float32 action: float32 arithmetic
      dv = T(action * float(kPower) - float(slope));
    }
    velocity += dv;
    if (velocity > T(kMaxSpeed)) velocity = T(kMaxSpeed);
    if (velocity < T(-kMaxSpeed)) velocity = T(-kMaxSpeed);
    position += velocity;
    if (position > T(kMaxPosition)) position = T(kMaxPosition);
    if (position < T(kMinPosition)) position = T(kMinPosition);
    if (position == T(kMinPosition) && velocity < 0) velocity = 0;
    *terminated = position >= T(kGoalPosition) && velocity >= T(kGoalVelocity);
    s[0] = double(float(position)), s[1] = double(float(velocity)), s[2] = 1.0;
  }

  FASTPPO_HD static double step(double* s, float action, bool* terminated) {
    if (s[2] != 0.0)
      integrate<float>(s, action, terminated);
    else
      integrate<double>(s, action, terminated);
    return (*terminated ? 100.0 : 0.0) - double(action) * double(action) * 0.1;
  }

  FASTPPO_HD static void observe(const double* s, float* obs) {
    obs[0] = float(s[0]), obs[1] = float(s[1]);
  }
};

}  // namespace fastppo
