// sin and cos as polynomials the compiler can vectorise, for the built-in envs' opt-in fast-math
// mode (make_vec_env(..., fast_math=True)). Taylor series to x^17 / x^18 in Horner form: on
// |x| <= pi/4 the truncation error is below 1e-19 and the result is within 2 ulp of the correctly
// rounded value (tests/test_envs.py checks it against libm); outside that range the caller uses
// libm (kFastTrigMax). glibc's sin/cos, which gymnasium's dynamics use, are scalar calls: this is
// what makes fast-math fast, and why it is not bit-exact.
#pragma once

#include "common.h"

namespace fastppo {

constexpr double kFastTrigMax = 0.78539816339744830962;  // pi/4: the range fast_sin / fast_cos serve

FASTPPO_HD double fast_sin(double x) {
  const double x2 = x * x;
  double p = 1.0 / 355687428096000.0;  // 1/17!
  p = -1.0 / 1307674368000.0 + x2 * p;
  p = 1.0 / 6227020800.0 + x2 * p;
  p = -1.0 / 39916800.0 + x2 * p;
  p = 1.0 / 362880.0 + x2 * p;
  p = -1.0 / 5040.0 + x2 * p;
  p = 1.0 / 120.0 + x2 * p;
  p = -1.0 / 6.0 + x2 * p;
  return x + x * (x2 * p);
}

FASTPPO_HD double fast_cos(double x) {
  const double x2 = x * x;
  double p = 1.0 / 6402373705728000.0;  // 1/18!
  p = -1.0 / 20922789888000.0 + x2 * p;
  p = 1.0 / 87178291200.0 + x2 * p;
  p = -1.0 / 479001600.0 + x2 * p;
  p = 1.0 / 3628800.0 + x2 * p;
  p = -1.0 / 40320.0 + x2 * p;
  p = 1.0 / 720.0 + x2 * p;
  p = -1.0 / 24.0 + x2 * p;
  p = 0.5 + x2 * p;  // cos x = 1 - x^2 (1/2 - x^2/24 + x^4/720 - ...)
  return 1.0 - x2 * p;
}

}  // namespace fastppo
