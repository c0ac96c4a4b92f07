// Pendulum-v1 physics (g = 10).
// Provenance: gymnasium 1.4, gymnasium/envs/classic_control/pendulum.py (PendulumEnv), under NumPy 2
// scalar promotion (NEP 50): the state is float64, the clipped torque u stays float32, so
// 0.001 * u**2 and 3.0 * u are float32 products that are then added to float64 terms.
// Out-of-range torques are clipped to [-2, 2], as gymnasium does.
#pragma once

#include <cmath>

#include "core/rng.h"

namespace fastppo {

struct Pendulum {
  static constexpr const char* kId = "Pendulum-v1";
  static constexpr int kStateDim = 2;  // theta, theta_dot
  static constexpr int kObsDim = 3;    // cos theta, sin theta, theta_dot
  static constexpr int kNumActions = 0;  // continuous: Box(-2, 2, (1,), float32)
  static constexpr double kActionLow = -2.0, kActionHigh = 2.0;
  static constexpr int64_t kMaxEpisodeSteps = 200;
  static constexpr double kPi = 3.141592653589793;
  static constexpr double kResetA = kPi, kResetB = 1.0;  // |theta| <= x_init, |theta_dot| <= y_init

  static constexpr double kMaxSpeed = 8;
  static constexpr double kMaxTorque = 2.0;
  static constexpr double kDt = 0.05;
  static constexpr double kG = 10.0, kM = 1.0, kL = 1.0;

  FASTPPO_HD static void reset(double* s, EnvRng& rng, double x_init, double y_init) {
    s[0] = rng.uniform(-x_init, x_init);
    s[1] = rng.uniform(-y_init, y_init);
  }

  // ((x + pi) % (2 pi)) - pi with Python's floored modulo.
  FASTPPO_HD static double angle_normalize(double x) {
    const double m = 2 * kPi;
    double r = fmod(x + kPi, m);
    if (r != 0 && r < 0) r += m;
    return r - kPi;
  }

  FASTPPO_HD static double step(double* s, float action, bool* terminated) {
    const double th = s[0], thdot = s[1];
    const float u = fminf(fmaxf(action, float(-kMaxTorque)), float(kMaxTorque));
    const double an = angle_normalize(th);
    const float u_cost = 0.001f * (u * u);
    const double costs = an * an + 0.1 * (thdot * thdot) + double(u_cost);
    double newthdot = thdot + (3 * kG / (2 * kL) * sin(th) + double(float(3.0 / (kM * kL * kL)) * u)) * kDt;
    newthdot = fmin(fmax(newthdot, -kMaxSpeed), kMaxSpeed);
    s[0] = th + newthdot * kDt;
    s[1] = newthdot;
    *terminated = false;
    return -costs;
  }

  FASTPPO_HD static void observe(const double* s, float* obs) {
    obs[0] = float(cos(s[0])), obs[1] = float(sin(s[0])), obs[2] = float(s[1]);
  }
};

}  // namespace fastppo
