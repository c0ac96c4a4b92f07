// Batched MLP forward and backward on the CPU (see mlp.h), as small register-blocked matrix products
// over contiguous rows. Threads split only the rows of each product's output (and elementwise work
// into fixed chunks); every output element is still one sum in a fixed order computed by one thread
// (no atomics, no partial sums combined), so results depend on nothing but the inputs, whatever the
// thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include "core/parallel.h"
#include "train/mlp.h"

namespace fastppo {
namespace {

// Eight floats; loads and stores through v8u need no alignment. In the baseline clone the compiler
// splits each operation into two SSE ones.
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));

// C (M, N) row-major [+]= A B, with A(m, k) = A[m * sam + k * sak] (so A may be read transposed) and
// B (K, N) row-major. Register-blocked: R rows of C by 16 (or 8) columns stay in registers over the
// whole k loop, so each B row loaded is used R times. Every C element is one sum over k ascending,
// so the result does not depend on the blocking.
// Always inlined: an out-of-line copy would be compiled for the baseline ISA, not the caller's clone.
template <int R, int W, bool kAccumulate>
__attribute__((always_inline)) inline void gemm_block(int64_t K, const float* __restrict A, int64_t sam, int64_t sak, const float* __restrict B,
                       int64_t ldb, float* __restrict C, int64_t ldc) {
  constexpr int V = W / 8;
  v8 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = kAccumulate ? *reinterpret_cast<const v8u*>(C + r * ldc + 8 * v) : v8{};
  for (int64_t k = 0; k < K; ++k) {
    v8 b[V];
    for (int v = 0; v < V; ++v) b[v] = *reinterpret_cast<const v8u*>(B + k * ldb + 8 * v);
    for (int r = 0; r < R; ++r) {
      const float a = A[r * sam + k * sak];
      for (int v = 0; v < V; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) *reinterpret_cast<v8u*>(C + r * ldc + 8 * v) = acc[r][v];
}

template <int R, bool kAccumulate>
__attribute__((always_inline)) inline void gemm_rows(int64_t N, int64_t K, const float* A, int64_t sam, int64_t sak, const float* B, int64_t ldb,
                      float* C, int64_t ldc) {
  int64_t n = 0;
  for (; n + 16 <= N; n += 16) gemm_block<R, 16, kAccumulate>(K, A, sam, sak, B + n, ldb, C + n, ldc);
  for (; n + 8 <= N; n += 8) gemm_block<R, 8, kAccumulate>(K, A, sam, sak, B + n, ldb, C + n, ldc);
  for (; n < N; ++n)
    for (int r = 0; r < R; ++r) {
      float acc = kAccumulate ? C[r * ldc + n] : 0.f;
      for (int64_t k = 0; k < K; ++k) acc += A[r * sam + k * sak] * B[k * ldb + n];
      C[r * ldc + n] = acc;
    }
}

template <bool kAccumulate>
FASTPPO_CPU_CLONES void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t sam, int64_t sak,
                             const float* B, int64_t ldb, float* C, int64_t ldc) {
  int64_t m = 0;
  for (; m + 6 <= M; m += 6) gemm_rows<6, kAccumulate>(N, K, A + m * sam, sam, sak, B, ldb, C + m * ldc, ldc);
  for (; m + 2 <= M; m += 2) gemm_rows<2, kAccumulate>(N, K, A + m * sam, sam, sak, B, ldb, C + m * ldc, ldc);
  for (; m < M; ++m) gemm_rows<1, kAccumulate>(N, K, A + m * sam, sam, sak, B, ldb, C + m * ldc, ldc);
}

// gemm's row block. Threads split output rows at its multiples, so each part runs exactly the blocks
// (the 6-row ones, then the last part the same 2- and 1-row tail) that one call over all rows runs.
constexpr int64_t kRowBlock = 6;

// The fewest multiply-adds worth handing to a thread (~10 us at this machine's ~25 GMAC/s on one
// core): a spinning worker picks a part up in about a microsecond, a sleeping one in tens, and the
// parts' own cache misses cost more on a small product. A 64x64 layer on a minibatch of 64 (262144)
// stays on the calling thread; a 256x256 layer's products split from a minibatch of 12 rows on.
constexpr int64_t kMinPartMacs = int64_t(1) << 18;

// fn(r0, r1) over contiguous row ranges covering [0, rows), starting at multiples of kRowBlock, in
// parallel where each part would get at least kMinPartMacs of work (macs_per_row each row).
void parallel_rows(int64_t rows, int64_t macs_per_row, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  const int64_t grain = std::max<int64_t>(1, kMinPartMacs / std::max<int64_t>(1, kRowBlock * macs_per_row));
  parallel_for(blocks, grain,
               [&](int64_t b0, int64_t b1) { fn(b0 * kRowBlock, std::min(rows, b1 * kRowBlock)); });
}

// Y (B, out) = act(X (B, in) W^T + b): bias first, then the sum over inputs ascending.
FASTPPO_CPU_CLONES void dense_forward_rows(const float* __restrict X, int64_t B, int64_t in, int64_t out,
                                           const float* __restrict W, const float* __restrict WT,
                                           const float* __restrict bias, bool activate, Activation act,
                                           float* __restrict Y) {
  if (out >= 8) {  // wide: register-blocked against W^T
    for (int64_t n = 0; n < B; ++n) std::memcpy(Y + n * out, bias, sizeof(float) * out);
    gemm<true>(B, out, in, X, in, 1, WT, out, Y, out);
  } else {  // a head (value, a few logits): a dot product per output against W's rows
    for (int64_t n = 0; n < B; ++n)
      for (int64_t o = 0; o < out; ++o) {
        const float* x = X + n * in;
        const float* w = W + o * in;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)  // vectorised: a sequential sum would wait on each add's latency
        for (int64_t i = 0; i < in; ++i) acc += x[i] * w[i];
        Y[n * out + o] = bias[o] + acc;
      }
  }
  if (!activate) return;
  const int64_t count = B * out;
  if (act == Activation::Tanh) {
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) Y[k] = mlp_tanh(Y[k]);
  } else {
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) Y[k] = Y[k] < 0.f ? 0.f : Y[k];  // NaN stays NaN, as torch.relu
  }
}

// dense_forward_rows with the batch rows split among threads.
void dense_forward(const float* X, int64_t B, int64_t in, int64_t out, const float* W, const float* WT,
                   const float* bias, bool activate, Activation act, float* Y) {
  parallel_rows(B, in * out, [&](int64_t n0, int64_t n1) {
    dense_forward_rows(X + n0 * in, n1 - n0, in, out, W, WT, bias, activate, act, Y + n0 * out);
  });
}

// dZ (B, out) *= the activation's derivative at its output A (torch's rules: tanh' = 1 - a^2,
// relu' = [a > 0]).
FASTPPO_CPU_CLONES void activation_backward(const float* __restrict A, int64_t count, Activation act,
                                            float* __restrict dZ) {
  if (act == Activation::Tanh) {
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) dZ[k] *= 1.f - A[k] * A[k];
  } else {
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) dZ[k] = A[k] > 0.f ? dZ[k] : 0.f;
  }
}

// gb[o] += sum_n dZ[n][o] for the features o in [o0, o1), n ascending.
void add_bias_grad(const float* __restrict dZ, int64_t B, int64_t out, int64_t o0, int64_t o1, float* __restrict gb) {
  for (int64_t n = 0; n < B; ++n)
    for (int64_t o = o0; o < o1; ++o) gb[o] += dZ[n * out + o];
}

// grad_W (out, in) += dZ^T X, grad_b += sum_n dZ[n]; and, when dX is given, dX (B, in) = dZ W times
// the activation's derivative at X (X is the previous layer's activation output). gWT (room for
// in * out) is scratch for narrow inputs, where the transposed product vectorises better. Threads
// split the weight gradient by output feature (with its bias) and dX by batch row.
void dense_backward(const float* X, int64_t B, int64_t in, int64_t out, const float* W, const float* dZ, float* gW,
                    float* gb, float* dX, Activation act, float* gWT) {
  if (in >= 8 || in >= out) {
    parallel_rows(out, B * in, [&](int64_t o0, int64_t o1) {
      gemm<true>(o1 - o0, in, B, dZ + o0, 1, out, X, in, gW + o0 * in, in);
      add_bias_grad(dZ, B, out, o0, o1, gb);
    });
  } else {  // e.g. the first layer's 4 observations: (X^T dZ)^T, 64 wide instead of 4 (too small to split)
    gemm<false>(in, out, B, X, 1, in, dZ, out, gWT, out);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) gW[o * in + i] += gWT[i * out + o];
    add_bias_grad(dZ, B, out, 0, out, gb);
  }
  if (!dX) return;
  parallel_rows(B, in * out, [&](int64_t n0, int64_t n1) {
    gemm<false>(n1 - n0, in, out, dZ + n0 * out, out, 1, W, in, dX + n0 * in, in);
    activation_backward(X + n0 * in, (n1 - n0) * in, act, dX + n0 * in);
  });
}

// Adam's update of n parameters (torch's formulas, torch's lerp for the first moment).
FASTPPO_CPU_CLONES void adam_step(float* __restrict param, const float* __restrict grad, float* __restrict m,
                                  float* __restrict v, int64_t n, float beta1, float beta2, float step_size,
                                  float bc2_sqrt, float eps) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    m[i] += (1.f - beta1) * (g - m[i]);  // torch's lerp
    v[i] = v[i] * beta2 + (1.f - beta2) * g * g;
    param[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

FASTPPO_CPU_CLONES double sum_squares(const float* __restrict x, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}

}  // namespace

Mlp Mlp::snapshot(std::vector<float>& storage) const {
  size_t total = 0;
  for (const DenseLayer& L : layers_) total += L.out * (L.in + 1);
  storage.resize(total);
  std::vector<DenseLayer> copies;
  float* next = storage.data();
  for (const DenseLayer& L : layers_) {
    DenseLayer C;
    C.in = L.in, C.out = L.out;
    C.weight = std::copy(L.weight, L.weight + L.in * L.out, next) - L.in * L.out;
    C.bias = std::copy(L.bias, L.bias + L.out, C.weight + L.in * L.out) - L.out;
    next = C.bias + L.out;
    copies.push_back(C);
  }
  return Mlp(std::move(copies), act_);
}

void Mlp::copy_parameters(const Mlp& from) const {
  if (from.layers_.size() != layers_.size()) throw std::invalid_argument("copy_parameters: the layers differ");
  for (size_t l = 0; l < layers_.size(); ++l) {
    const DenseLayer &S = from.layers_[l], &D = layers_[l];
    if (S.in != D.in || S.out != D.out) throw std::invalid_argument("copy_parameters: the layer sizes differ");
    std::copy(S.weight, S.weight + S.in * S.out, D.weight);
    std::copy(S.bias, S.bias + S.out, D.bias);
  }
}

void Mlp::transpose_weights(std::vector<std::vector<float>>& weight_t) const {
  weight_t.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const DenseLayer& L = layers_[l];
    weight_t[l].resize(L.in * L.out);
    float* wt = weight_t[l].data();
    constexpr int64_t kMinPartCopies = int64_t(1) << 15;  // a copy: split only a large one (256x256)
    parallel_for(L.in, std::max<int64_t>(1, kMinPartCopies / L.out), [&](int64_t i0, int64_t i1) {
      for (int64_t o = 0; o < L.out; ++o)
        for (int64_t i = i0; i < i1; ++i) wt[i * L.out + o] = L.weight[o * L.in + i];
    });
  }
}

const float* Mlp::forward(const float* X, int64_t B, const std::vector<std::vector<float>>& weight_t,
                          std::vector<std::vector<float>>& acts) const {
  acts.resize(layers_.size());
  const float* in = X;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const DenseLayer& L = layers_[l];
    acts[l].resize(B * L.out);
    dense_forward(in, B, L.in, L.out, L.weight, weight_t[l].data(), L.bias, l + 1 < layers_.size(), act_, acts[l].data());
    in = acts[l].data();
  }
  return in;
}

void Mlp::backward(const float* X, int64_t B, const std::vector<std::vector<float>>& acts, const float* dOut,
                   std::vector<float>& scratch) const {
  int64_t width = 0, weights = 0;
  for (const auto& L : layers_) width = std::max(width, L.in), weights = std::max(weights, L.in * L.out);
  scratch.resize(2 * B * width + weights);  // two hidden-gradient buffers, then a transposed weight gradient
  float* grad_t = scratch.data() + 2 * B * width;
  const float* dZ = dOut;  // the gradient w.r.t. layer l's output before its activation
  for (size_t l = layers_.size(); l-- > 0;) {
    const DenseLayer& L = layers_[l];
    const float* input = l == 0 ? X : acts[l - 1].data();
    // dX of layer l is dA of layer l - 1; the two halves of the scratch take turns holding it.
    float* dX = l == 0 ? nullptr : scratch.data() + (l % 2) * B * width;
    dense_backward(input, B, L.in, L.out, L.weight, dZ, L.grad_weight, L.grad_bias, dX, act_, grad_t);
    if (dX) dZ = dX;
  }
}

void FlatAdam::step(double lr, double beta1, double beta2, double eps, double max_grad_norm) const {
  // The norm stays one sum on one thread: splitting it would change its order, so its rounding.
  double coef = 1.0;
  if (max_grad_norm >= 0) coef = std::min(1.0, max_grad_norm / (std::sqrt(sum_squares(grad, n)) + 1e-6));
  const int64_t t = ++*step_count;
  const double bc1 = 1.0 - std::pow(beta1, double(t)), bc2 = 1.0 - std::pow(beta2, double(t));
  // Elementwise, so the split cannot change an element's update; split into chunks of a fixed size (a
  // multiple of any vector width) so that every part starts as aligned as the buffer does.
  constexpr int64_t kChunk = 4096, kMinChunksPerPart = 8;
  parallel_for((n + kChunk - 1) / kChunk, kMinChunksPerPart, [&](int64_t c0, int64_t c1) {
    const int64_t i0 = c0 * kChunk, count = std::min(n, c1 * kChunk) - i0;
    if (coef < 1.0)
      for (int64_t i = i0; i < i0 + count; ++i) grad[i] *= float(coef);
    adam_step(param + i0, grad + i0, exp_avg + i0, exp_avg_sq + i0, count, float(beta1), float(beta2), float(lr / bc1),
              float(std::sqrt(bc2)), float(eps));
  });
}

}  // namespace fastppo
