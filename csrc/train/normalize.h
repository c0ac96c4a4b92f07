// The trainer's running normalisers for the native rollout (train/rollout.cpp, _core.collect): the same arithmetic,
// in the same float64 operations and order of terms, as fastppo/algos/normalize.py, which is the spec.
// Sums over the batch run sequentially here (numpy's reductions may pair terms differently: the two
// agree to rounding, which tests/test_native_update.py bounds). Compiled with -ffp-contract=off.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fastppo {

// Chan et al.'s parallel update of a running mean and variance (per column) with a batch of rows.
struct RunningMeanStd {
  double* mean = nullptr;  // (dim,)
  double* var = nullptr;   // (dim,)
  double* count = nullptr;  // (1,): the state is the caller's arrays, updated in place
  int64_t dim = 0;

  // batch: n rows of dim values (float or double), row-major.
  template <typename T>
  void update(const T* batch, int64_t n) {
    const double b_count = double(n);
    const double count0 = *count;
    const double total = count0 + b_count;
    for (int64_t j = 0; j < dim; ++j) {
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += double(batch[i * dim + j]);
      const double b_mean = sum / b_count;
      double squares = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = double(batch[i * dim + j]) - b_mean;
        squares += d * d;
      }
      const double b_var = squares / b_count;
      const double delta = b_mean - mean[j];
      mean[j] = mean[j] + delta * b_count / total;
      var[j] = (var[j] * count0 + b_var * b_count + delta * delta * count0 * b_count / total) / total;
    }
    *count = total;
  }
};

// (obs - mean) / sqrt(var + eps), clipped to [-clip, clip], as float32.
struct ObsNormalizer {
  RunningMeanStd rms;
  double clip = 10.0, eps = 1e-8;

  void apply(const float* obs, int64_t n, float* out) const {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < rms.dim; ++j) {
        const double x = (double(obs[i * rms.dim + j]) - rms.mean[j]) / std::sqrt(rms.var[j] + eps);
        out[i * rms.dim + j] = float(std::min(std::max(x, -clip), clip));
      }
  }
};

// Rewards divided by the running std of each env's discounted return, clipped (SB3's VecNormalize).
struct RewardScaler {
  RunningMeanStd rms;  // dim 1
  double* returns = nullptr;  // (n,) discounted return so far per env
  double gamma = 0.99, clip = 10.0, eps = 1e-8;

  // done[i]: terminated[i] || truncated[i] (the env's return restarts).
  void apply(const float* rewards, const uint8_t* terminated, const uint8_t* truncated, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) returns[i] = returns[i] * gamma + double(rewards[i]);
    rms.update(returns, n);
    const double std = std::sqrt(rms.var[0] + eps);
    for (int64_t i = 0; i < n; ++i) {
      if (terminated[i] || truncated[i]) returns[i] = 0.0;
      out[i] = float(std::min(std::max(double(rewards[i]) / std, -clip), clip));
    }
  }
};

}  // namespace fastppo
