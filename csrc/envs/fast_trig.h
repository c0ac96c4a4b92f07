// sin and cos as polynomials the compiler can vectorise, for the built-in envs' opt-in fast-math
// mode (make_vec_env(..., fast_math=True)). Taylor series to x^17 / x^18 in Horner form: on
// |x| <= pi/4 the truncation error is below 1e-19, and on a 200,001-point grid of that range the
// results were within 1 ulp of glibc's (equal to them for most points); outside it the caller uses
// libm (in_fast_trig_range). tests/test_envs.py bounds what reaches the dynamics. glibc's sin/cos, which
// gymnasium's dynamics use, are scalar calls: this is what makes fast-math fast, and why it is not
// bit-exact.
#pragma once

#include "core/common.h"

namespace fastppo {

// |x| <= pi/4, the range fast_sin / fast_cos serve (false for NaN, which then goes to libm). `&`, not
// `&&`: no branch, so the CPU loop that asks vectorises.
FASTPPO_HD bool in_fast_trig_range(double x) {
  constexpr double kQuarterPi = 0.78539816339744830962;
  return (x >= -kQuarterPi) & (x <= kQuarterPi);
}

// c[0] + y * (c[1] + y * (c[2] + ...)), highest coefficient first in the loop.
template <int N>
FASTPPO_HD double horner(double y, const double (&c)[N]) {
  double p = c[N - 1];
  for (int k = N - 2; k >= 0; --k) p = c[k] + y * p;
  return p;
}

// sin x = x + x^3 (-1/3! + x^2/5! - ...), to x^17.
FASTPPO_HD double fast_sin(double x) {
  constexpr double c[] = {-1.0 / 6.0,          1.0 / 120.0,          -1.0 / 5040.0,
                          1.0 / 362880.0,      -1.0 / 39916800.0,    1.0 / 6227020800.0,
                          -1.0 / 1307674368000.0, 1.0 / 355687428096000.0};
  const double x2 = x * x;
  return x + x * (x2 * horner(x2, c));
}

// cos x = 1 - x^2 (1/2! - x^2/4! + ...), to x^18.
FASTPPO_HD double fast_cos(double x) {
  constexpr double c[] = {0.5,                  -1.0 / 24.0,            1.0 / 720.0,
                          -1.0 / 40320.0,       1.0 / 3628800.0,        -1.0 / 479001600.0,
                          1.0 / 87178291200.0,  -1.0 / 20922789888000.0, 1.0 / 6402373705728000.0};
  const double x2 = x * x;
  return 1.0 - x2 * horner(x2, c);
}

}  // namespace fastppo
