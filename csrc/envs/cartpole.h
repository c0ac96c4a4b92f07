// CartPole-v1 physics.
// Provenance: gymnasium 1.4, gymnasium/envs/classic_control/cartpole.py (CartPoleEnv, "euler"
// integrator). gymnasium holds the state in float64 and returns it as float32; so do we.
#pragma once

#include <cmath>

#include "core/rng.h"

namespace fastppo {

struct CartPole {
  static constexpr const char* kId = "CartPole-v1";
  static constexpr int kStateDim = 4;  // x, x_dot, theta, theta_dot
  static constexpr int kObsDim = 4;
  static constexpr int kNumActions = 2;  // discrete: push left, push right
  static constexpr int64_t kMaxEpisodeSteps = 500;
  static constexpr double kResetA = -0.05, kResetB = 0.05;  // uniform bounds ("low", "high" options)

  static constexpr double kGravity = 9.8;
  static constexpr double kMassCart = 1.0;
  static constexpr double kMassPole = 0.1;
  static constexpr double kTotalMass = kMassPole + kMassCart;
  static constexpr double kLength = 0.5;  // half the pole's length
  static constexpr double kPoleMassLength = kMassPole * kLength;
  static constexpr double kForceMag = 10.0;
  static constexpr double kTau = 0.02;
  static constexpr double kThetaThreshold = 12 * 2 * 3.141592653589793 / 360;
  static constexpr double kXThreshold = 2.4;

  FASTPPO_HD static void reset(double* s, EnvRng& rng, double low, double high) {
    for (int k = 0; k < 4; ++k) s[k] = rng.uniform(low, high);
  }

  // The step in two parts: the libm calls (sin and cos of the pole angle), then the algebra. The CPU
  // loop runs the first over a block of envs and the second as a loop the compiler vectorises
  // (vector divisions round exactly as scalar ones; envs/envs_cpu.cpp); step() is the two in sequence.
  struct Trig {
    double sin, cos;
  };
  FASTPPO_HD static double angle(const double* s) { return s[2]; }  // the argument of trig's sin and cos
  FASTPPO_HD static Trig trig(const double* s) { return {sin(angle(s)), cos(angle(s))}; }

  FASTPPO_HD static double advance(double* s, int64_t action, Trig t, bool* terminated) {
    double x = s[0], x_dot = s[1], theta = s[2], theta_dot = s[3];
    const double force = action == 1 ? kForceMag : -kForceMag;
    const double costheta = t.cos, sintheta = t.sin;
    const double temp = (force + kPoleMassLength * (theta_dot * theta_dot) * sintheta) / kTotalMass;
    const double thetaacc = (kGravity * sintheta - costheta * temp) /
                            (kLength * (4.0 / 3.0 - kMassPole * (costheta * costheta) / kTotalMass));
    const double xacc = temp - kPoleMassLength * thetaacc * costheta / kTotalMass;
    x = x + kTau * x_dot;
    x_dot = x_dot + kTau * xacc;
    theta = theta + kTau * theta_dot;
    theta_dot = theta_dot + kTau * thetaacc;
    s[0] = x, s[1] = x_dot, s[2] = theta, s[3] = theta_dot;
    // `|`, not `||`: no branches, so the CPU loop vectorises
    *terminated = (x < -kXThreshold) | (x > kXThreshold) | (theta < -kThetaThreshold) | (theta > kThetaThreshold);
    return 1.0;
  }

  FASTPPO_HD static double step(double* s, int64_t action, bool* terminated) {
    return advance(s, action, trig(s), terminated);
  }

  FASTPPO_HD static void observe(const double* s, float* obs) {
    for (int k = 0; k < 4; ++k) obs[k] = float(s[k]);
  }
};

}  // namespace fastppo
