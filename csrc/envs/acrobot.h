// Acrobot-v1 physics ("book" dynamics, RK4 over one 0.2 s step, no torque noise).
// Provenance: gymnasium 1.4, gymnasium/envs/classic_control/acrobot.py (AcrobotEnv, rk4, wrap, bound).
// gymnasium draws the initial state in float64, rounds it to float32, then integrates in float64.
#pragma once

#include <cmath>

#include "core/rng.h"

namespace fastppo {

struct Acrobot {
  static constexpr const char* kId = "Acrobot-v1";
  static constexpr int kStateDim = 4;  // theta1, theta2, dtheta1, dtheta2
  static constexpr int kObsDim = 6;    // cos t1, sin t1, cos t2, sin t2, dt1, dt2
  static constexpr int kNumActions = 3;  // torque -1, 0, +1
  static constexpr int64_t kMaxEpisodeSteps = 500;
  static constexpr double kResetA = -0.1, kResetB = 0.1;

  static constexpr double kPi = 3.141592653589793;
  static constexpr double kDt = 0.2;
  static constexpr double kLinkLength1 = 1.0;
  static constexpr double kLinkMass1 = 1.0, kLinkMass2 = 1.0;
  static constexpr double kLinkComPos1 = 0.5, kLinkComPos2 = 0.5;
  static constexpr double kLinkMoi = 1.0;
  static constexpr double kMaxVel1 = 4 * kPi, kMaxVel2 = 9 * kPi;
  static constexpr double kGravity = 9.8;

  FASTPPO_HD static void reset(double* s, EnvRng& rng, double low, double high) {
    for (int k = 0; k < 4; ++k) s[k] = double(float(rng.uniform(low, high)));
  }

  // _dsdt: the time derivative of (theta1, theta2, dtheta1, dtheta2) under torque a. The operation
  // order follows gymnasium's expression so that the float64 results agree to the last bit.
  FASTPPO_HD static void dsdt(const double* s, double a, double* d) {
    const double m1 = kLinkMass1, m2 = kLinkMass2, l1 = kLinkLength1, lc1 = kLinkComPos1, lc2 = kLinkComPos2;
    const double I1 = kLinkMoi, I2 = kLinkMoi, g = kGravity;
    const double theta1 = s[0], theta2 = s[1], dtheta1 = s[2], dtheta2 = s[3];
    const double d1 = m1 * (lc1 * lc1) + m2 * ((l1 * l1) + (lc2 * lc2) + 2 * l1 * lc2 * cos(theta2)) + I1 + I2;
    const double d2 = m2 * ((lc2 * lc2) + l1 * lc2 * cos(theta2)) + I2;
    const double phi2 = m2 * lc2 * g * cos(theta1 + theta2 - kPi / 2.0);
    const double phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * sin(theta2) -
                        2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin(theta2) +
                        (m1 * lc1 + m2 * l1) * g * cos(theta1 - kPi / 2) + phi2;
    const double ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * sin(theta2) - phi2) /
                            (m2 * (lc2 * lc2) + I2 - (d2 * d2) / d1);
    const double ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    d[0] = dtheta1, d[1] = dtheta2, d[2] = ddtheta1, d[3] = ddtheta2;
  }

  FASTPPO_HD static double wrap(double x, double m, double M) {
    const double diff = M - m;
    // gymnasium's loops, whose roundings decide the bits for every angle the dynamics reach (|x| < 10).
    // Far beyond that (only set_state can put an angle there) they would run |x| / diff times: fmod first.
    if (fabs(x) > 1e6) x = m + fmod(x - m, diff);
    while (x > M) x = x - diff;
    while (x < m) x = x + diff;
    return x;
  }

  FASTPPO_HD static double bound(double x, double m, double M) { return fmin(fmax(x, m), M); }

  FASTPPO_HD static double step(double* s, int64_t action, bool* terminated) {
    const double torque = double(action) - 1.0;  // AVAIL_TORQUE = [-1.0, 0.0, +1]
    const double dt = kDt, dt2 = kDt / 2.0;
    double k1[4], k2[4], k3[4], k4[4], y[4];
    dsdt(s, torque, k1);
    for (int j = 0; j < 4; ++j) y[j] = s[j] + dt2 * k1[j];
    dsdt(y, torque, k2);
    for (int j = 0; j < 4; ++j) y[j] = s[j] + dt2 * k2[j];
    dsdt(y, torque, k3);
    for (int j = 0; j < 4; ++j) y[j] = s[j] + dt * k3[j];
    dsdt(y, torque, k4);
    double ns[4];
    for (int j = 0; j < 4; ++j) ns[j] = s[j] + dt / 6.0 * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j]);
    s[0] = wrap(ns[0], -kPi, kPi);
    s[1] = wrap(ns[1], -kPi, kPi);
    s[2] = bound(ns[2], -kMaxVel1, kMaxVel1);
    s[3] = bound(ns[3], -kMaxVel2, kMaxVel2);
    *terminated = -cos(s[0]) - cos(s[1] + s[0]) > 1.0;
    return *terminated ? 0.0 : -1.0;
  }

  FASTPPO_HD static void observe(const double* s, float* obs) {
    obs[0] = float(cos(s[0])), obs[1] = float(sin(s[0]));
    obs[2] = float(cos(s[1])), obs[3] = float(sin(s[1]));
    obs[4] = float(s[2]), obs[5] = float(s[3]);
  }
};

}  // namespace fastppo
