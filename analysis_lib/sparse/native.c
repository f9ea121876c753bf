/* Submanifold convolution for x86-64 CPUs: fp32 products with AVX2 and FMA or AVX-512, and
 * bf16 products accumulated in fp32 with AVX-512 BF16 (loaded by native.py, which compiles this
 * file once for each).
 *
 * The kernel map arrives as pair lists by offset: the pairs (out, in) of offset k are
 * k_out[k_ptr[k]:k_ptr[k+1]], k_in[...], sorted by out. Only present neighbours are
 * multiplied (im2col multiplies the absent ones as zeros: about half of them at the first
 * level of a U-ResNet, three quarters deeper), and nothing is gathered into memory: each
 * product reads its input row where it lies and accumulates into its output row.
 *
 * Register tiles of up to MAXACC accumulators of W lanes: a forward tile is R pairs of one
 * offset by W*NV output channels; the weight gradient's is CU input by W*NV output channels
 * of one offset, the last input channels in one narrower tile. An output channel count that
 * is not a multiple of W ends in one masked tile (TAIL). Every output element is summed in
 * the same order (offsets, then input channels or pairs) whatever W and the tiles are, so
 * both builds give the same bits.
 *
 * bf16: vdpbf16ps multiplies 16 pairs of bf16 numbers and adds each pair's two products to one
 * fp32 lane. The same tiles run on 4-byte words that hold a pair each (two neighbouring input
 * channels of a row, the weights packed to match, see pack_weights_bf16), so the reduction
 * takes half the steps at twice the products per instruction. The weight gradient reduces over
 * pairs of the kernel map: its rows are first packed two pairs to a word (pack_rows_bf16).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define INL static inline __attribute__((always_inline))

#ifdef __AVX512F__
/* 32 registers of 16 lanes: weight-gradient tiles of 24 accumulators; forward tiles of 8
 * pairs (12 accumulators) were faster than of 24 (a 128 px training step on a Zen 5 EPYC:
 * forward and input gradient 75 ms against 108). */
#define W 16
#define MAXACC 24
#define FWD_R2 6
#define FWD_R1 8
#define GRAD_CU2 12
#define GRAD_CU1 16
/* bf16 forward tiles: more accumulators hide vdpbf16ps's longer latency. */
#define FWD_R2_BF 8
#define FWD_R1_BF 16
typedef __m512 vec;
typedef __mmask16 vmask;
INL vmask lanes(int left) { return (vmask)((1u << left) - 1u); }
INL vec load(const float *p, const int TAIL, vmask mask) {
  return TAIL ? _mm512_maskz_loadu_ps(mask, p) : _mm512_loadu_ps(p);
}
INL void store(float *p, vec v, const int TAIL, vmask mask) {
  if (TAIL) _mm512_mask_storeu_ps(p, mask, v);
  else _mm512_storeu_ps(p, v);
}
INL vec broadcast(const float *p) { return _mm512_set1_ps(*p); }
INL vec madd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
INL vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
INL vec zero(void) { return _mm512_setzero_ps(); }
#ifdef __AVX512BF16__
/* c + a0 b0 + a1 b1 in each lane, a and b holding a pair of bf16 numbers per lane. */
INL vec dot_pairs(vec a, vec b, vec c) {
  return _mm512_dpbf16_ps(c, (__m512bh)_mm512_castps_si512(a), (__m512bh)_mm512_castps_si512(b));
}
#endif
#else
/* 16 registers of 8 lanes: tiles of 12 accumulators (32 output channels wide ran at 80 % of
 * the speed of these). */
#define W 8
#define MAXACC 12
#define FWD_R2 6
#define FWD_R1 12
#define GRAD_CU2 6
#define GRAD_CU1 8
#define FWD_R2_BF FWD_R2
#define FWD_R1_BF FWD_R1
typedef __m256 vec;
typedef __m256i vmask;
static const int32_t MASK_SOURCE[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
/* The lanes 0..left-1 of a vector (left in 1..8). */
INL vmask lanes(int left) { return _mm256_loadu_si256((const __m256i *)(MASK_SOURCE + 8 - left)); }
INL vec load(const float *p, const int TAIL, vmask mask) {
  return TAIL ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}
INL void store(float *p, vec v, const int TAIL, vmask mask) {
  if (TAIL) _mm256_maskstore_ps(p, mask, v);
  else _mm256_storeu_ps(p, v);
}
INL vec broadcast(const float *p) { return _mm256_broadcast_ss(p); }
INL vec madd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
INL vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
INL vec zero(void) { return _mm256_setzero_ps(); }
#endif
#ifndef __AVX512BF16__
/* Builds without AVX-512 BF16 instantiate the tiles with BF = 0 only: never called. */
INL vec dot_pairs(vec a, vec b, vec c) { (void)a; (void)b; return c; }
#endif

/* One step of a tile: c + a b (fp32) or c + the pair products of a and b (BF). */
INL vec step(vec a, vec b, vec c, const int BF) { return BF ? dot_pairs(a, b, c) : madd(a, b, c); }

/* Pair lists by offset of a kernel map col (n, K), whose entry n marks an absent neighbour. */
void neighbour_lists(const int64_t *col, int64_t n, int K, int64_t *k_ptr, int32_t *k_out,
                     int32_t *k_in) {
  int64_t fill[K];
  memset(k_ptr, 0, sizeof(int64_t) * (K + 1));
  for (int64_t i = 0; i < n; i++)
    for (int k = 0; k < K; k++) k_ptr[k + 1] += col[i * K + k] != n;
  for (int k = 0; k < K; k++) k_ptr[k + 1] += k_ptr[k];
  for (int k = 0; k < K; k++) fill[k] = k_ptr[k];
  for (int64_t i = 0; i < n; i++)
    for (int k = 0; k < K; k++) {
      int64_t j = col[i * K + k];
      if (j != n) {
        int64_t at = fill[k]++;
        k_out[at] = (int32_t)i;
        k_in[at] = (int32_t)j;
      }
    }
}

/* out[pout[r], c0:c0+W*NV] += x[pin[r], :] @ wk[:, c0:c0+W*NV] for the R pairs r; with BF,
 * x and wk hold bf16 pairs in their ci words (see the top). */
INL void pair_tile(const float *x, const int32_t *pout, const int32_t *pin, const float *wk,
                   float *out, int ci, int co, int c0, const int R, const int NV,
                   const int TAIL, vmask mask, const int BF) {
  vec acc[MAXACC];
  const float *in[MAXACC];
  float *to[MAXACC];
  for (int r = 0; r < R; r++) {
    in[r] = x + (int64_t)pin[r] * ci;
    to[r] = out + (int64_t)pout[r] * co + c0;
    for (int v = 0; v < NV; v++) acc[r * NV + v] = load(to[r] + W * v, TAIL, mask);
  }
  for (int c = 0; c < ci; c++) {
    vec wv[2];
    for (int v = 0; v < NV; v++) wv[v] = load(wk + (int64_t)c * co + c0 + W * v, TAIL, mask);
    for (int r = 0; r < R; r++) {
      vec b = broadcast(in[r] + c);
      for (int v = 0; v < NV; v++) acc[r * NV + v] = step(b, wv[v], acc[r * NV + v], BF);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) store(to[r] + W * v, acc[r * NV + v], TAIL, mask);
}

INL void pair_run(const float *x, const int32_t *pout, const int32_t *pin, int64_t np,
                  const float *wk, float *out, int ci, int co, int c0, const int R,
                  const int NV, const int TAIL, vmask mask, const int BF) {
  int64_t p = 0;
  for (; p + R <= np; p += R)
    pair_tile(x, pout + p, pin + p, wk, out, ci, co, c0, R, NV, TAIL, mask, BF);
  for (; p < np; p++) pair_tile(x, pout + p, pin + p, wk, out, ci, co, c0, 1, NV, TAIL, mask, BF);
}

static int64_t lower_bound(const int32_t *a, int64_t lo, int64_t hi, int64_t value) {
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* Rows r0..r1 of out (n, co) = sum_k x[k_in] @ w[k] at k_out; w is (K, ci, co), with BF ci
 * counting words of bf16 pairs. */
INL void conv_block(const float *x, const int64_t *k_ptr, const int32_t *k_out,
                    const int32_t *k_in, const float *w, float *out, int64_t r0, int64_t r1,
                    int K, int ci, int co, const int BF) {
  memset(out + r0 * co, 0, sizeof(float) * (size_t)((r1 - r0) * co));
  for (int k = 0; k < K; k++) {
    int64_t p0 = lower_bound(k_out, k_ptr[k], k_ptr[k + 1], r0);
    int64_t p1 = lower_bound(k_out, p0, k_ptr[k + 1], r1);
    const int32_t *po = k_out + p0, *pi = k_in + p0;
    const float *wk = w + (int64_t)k * ci * co;
    int64_t np = p1 - p0;
    int c0 = 0;
    if (np == 0) continue;
    for (; co - c0 >= 2 * W; c0 += 2 * W)
      pair_run(x, po, pi, np, wk, out, ci, co, c0, BF ? FWD_R2_BF : FWD_R2, 2, 0, lanes(W), BF);
    for (; co - c0 >= W; c0 += W)
      pair_run(x, po, pi, np, wk, out, ci, co, c0, BF ? FWD_R1_BF : FWD_R1, 1, 0, lanes(W), BF);
    if (c0 < co)
      pair_run(x, po, pi, np, wk, out, ci, co, c0, BF ? FWD_R1_BF : FWD_R1, 1, 1, lanes(co - c0),
               BF);
  }
}

/* out (n, co) = sum_k x[k_in] @ w[k] at k_out; w is (K, ci, co). Rows are taken in blocks
 * that stay in cache while every offset adds into them, the blocks shared among threads
 * (OpenMP: torch's own runtime, libgomp, which the process has loaded already). A macro
 * writes each precision's entry point with its own parallel loop: a BF passed into the loop
 * from outside is a variable there, and the tiles' sizes, no longer constants, ran 2-3x
 * slower. */
#define ROW_BLOCK 256
#define CONV_ENTRY(NAME, BF) \
  void NAME(const float *x, const int64_t *k_ptr, const int32_t *k_out, const int32_t *k_in, \
            const float *w, float *out, int64_t n, int K, int ci, int co, int threads) { \
    _Pragma("omp parallel for schedule(static) num_threads(threads)") \
    for (int64_t r0 = 0; r0 < n; r0 += ROW_BLOCK) \
      conv_block(x, k_ptr, k_out, k_in, w, out, r0, r0 + ROW_BLOCK < n ? r0 + ROW_BLOCK : n, \
                 K, ci, co, BF); \
  }
CONV_ENTRY(sparse_conv, 0)

/* wt[K-1-k] = w[k]^T for w (K, ci, co): the weights of the input gradient, whose pairs of
 * offset k are those of the mirror offset K-1-k with input and output swapped. */
void mirror_transpose(const float *w, float *wt, int K, int ci, int co) {
  for (int k = 0; k < K; k++) {
    const float *src = w + (int64_t)k * ci * co;
    float *dst = wt + (int64_t)(K - 1 - k) * co * ci;
    for (int c = 0; c < ci; c++)
      for (int o = 0; o < co; o++) dst[(int64_t)o * ci + c] = src[(int64_t)c * co + o];
  }
}

/* gw[k, c0:c0+CU, o0:o0+W*NV] += sum over the pairs p0..p1 of x[in, c] g[out, o]. */
INL void weight_tile(const float *x, const int32_t *k_out, const int32_t *k_in, const float *g,
                     float *gwk, int64_t p0, int64_t p1, int ci, int co, int c0, int o0,
                     const int NV, const int CU, const int TAIL, vmask mask, const int BF) {
  vec acc[MAXACC];
  for (int a = 0; a < CU * NV; a++) acc[a] = zero();
  for (int64_t p = p0; p < p1; p++) {
    const float *xr = x + (int64_t)k_in[p] * ci + c0;
    const float *gr = g + (int64_t)k_out[p] * co + o0;
    vec gv[2];
    for (int v = 0; v < NV; v++) gv[v] = load(gr + W * v, TAIL, mask);
    for (int u = 0; u < CU; u++) {
      vec b = broadcast(xr + u);
      for (int v = 0; v < NV; v++) acc[u * NV + v] = step(b, gv[v], acc[u * NV + v], BF);
    }
  }
  for (int u = 0; u < CU; u++)
    for (int v = 0; v < NV; v++) {
      float *q = gwk + (int64_t)(c0 + u) * co + o0 + W * v;
      store(q, add(load(q, TAIL, mask), acc[u * NV + v]), TAIL, mask);
    }
}

/* Every input channel of one output tile: tiles of CU channels, then one of the rest. */
INL void weight_tiles(const float *x, const int32_t *k_out, const int32_t *k_in, const float *g,
                      float *gwk, int64_t p0, int64_t p1, int ci, int co, int o0, const int NV,
                      const int CU, const int TAIL, vmask mask, const int BF) {
  int c0 = 0;
  for (; c0 + CU <= ci; c0 += CU)
    weight_tile(x, k_out, k_in, g, gwk, p0, p1, ci, co, c0, o0, NV, CU, TAIL, mask, BF);
  switch (ci - c0) { /* below CU <= 16 */
#define REST(r) \
  case r: \
    if (r < CU) weight_tile(x, k_out, k_in, g, gwk, p0, p1, ci, co, c0, o0, NV, r, TAIL, mask, BF); \
    break;
    REST(1) REST(2) REST(3) REST(4) REST(5) REST(6) REST(7) REST(8) REST(9) REST(10) REST(11)
    REST(12) REST(13) REST(14) REST(15)
#undef REST
    default: break;
  }
}

/* gw[k, :, o0:] += the products of the pairs p0..p1 at every output tile. */
INL void weight_block(const float *x, const int32_t *k_out, const int32_t *k_in, const float *g,
                      float *gwk, int64_t p0, int64_t p1, int ci, int co, const int BF) {
  int o0 = 0;
  for (; co - o0 >= 2 * W; o0 += 2 * W)
    weight_tiles(x, k_out, k_in, g, gwk, p0, p1, ci, co, o0, 2, GRAD_CU2, 0, lanes(W), BF);
  for (; co - o0 >= W; o0 += W)
    weight_tiles(x, k_out, k_in, g, gwk, p0, p1, ci, co, o0, 1, GRAD_CU1, 0, lanes(W), BF);
  if (o0 < co)
    weight_tiles(x, k_out, k_in, g, gwk, p0, p1, ci, co, o0, 1, GRAD_CU1, 1, lanes(co - o0), BF);
}

/* gw[k] (ci, co) = sum over the pairs of offset k of x[in]^T g[out], offsets shared among
 * threads. Pairs are taken in blocks whose rows stay in cache across the tiles. */
#define GRAD_BLOCK 128
void sparse_conv_weight_grad(const float *x, const int64_t *k_ptr, const int32_t *k_out,
                             const int32_t *k_in, const float *g, float *gw, int K, int ci,
                             int co, int threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int k = 0; k < K; k++) {
    float *gwk = gw + (int64_t)k * ci * co;
    memset(gwk, 0, sizeof(float) * (size_t)ci * co);
    for (int64_t p0 = k_ptr[k]; p0 < k_ptr[k + 1]; p0 += GRAD_BLOCK) {
      int64_t p1 = p0 + GRAD_BLOCK < k_ptr[k + 1] ? p0 + GRAD_BLOCK : k_ptr[k + 1];
      weight_block(x, k_out, k_in, g, gwk, p0, p1, ci, co, 0);
    }
  }
}

#ifdef __AVX512BF16__
/* The products in bf16 (see the top): x (rows, ci words), w packed by pack_weights_bf16. */
CONV_ENTRY(sparse_conv_bf16, 1)

/* dst[q, :c] holds the bf16 rows src[idx[2q]] (low halves) and src[idx[2q+1]] (high halves,
 * zero past the m rows) of c values each. */
static void pack_rows_bf16(const uint16_t *src, const int32_t *idx, int64_t m, int c,
                           uint32_t *dst) {
  for (int64_t q = 0; 2 * q < m; q++) {
    const uint16_t *a = src + (int64_t)idx[2 * q] * c;
    uint32_t *d = dst + q * c;
    if (2 * q + 1 < m) {
      const uint16_t *b = src + (int64_t)idx[2 * q + 1] * c;
      for (int j = 0; j < c; j++) d[j] = (uint32_t)a[j] | (uint32_t)b[j] << 16;
    } else {
      for (int j = 0; j < c; j++) d[j] = a[j];
    }
  }
}

/* The weight gradient of sparse_conv_bf16 in fp32 from bf16 rows x (rows, ci) and g (rows,
 * co): each block's pairs are packed two to a word, then summed by the fp32 tiles' order. */
void sparse_conv_weight_grad_bf16(const uint16_t *x, const int64_t *k_ptr, const int32_t *k_out,
                                  const int32_t *k_in, const uint16_t *g, float *gw, int K,
                                  int ci, int co, int threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int k = 0; k < K; k++) {
    uint32_t xp[GRAD_BLOCK / 2 * ci], gp[GRAD_BLOCK / 2 * co];
    int32_t rows[GRAD_BLOCK / 2];
    float *gwk = gw + (int64_t)k * ci * co;
    for (int q = 0; q < GRAD_BLOCK / 2; q++) rows[q] = q;
    memset(gwk, 0, sizeof(float) * (size_t)ci * co);
    for (int64_t p0 = k_ptr[k]; p0 < k_ptr[k + 1]; p0 += GRAD_BLOCK) {
      int64_t m = p0 + GRAD_BLOCK < k_ptr[k + 1] ? GRAD_BLOCK : k_ptr[k + 1] - p0;
      pack_rows_bf16(x, k_in + p0, m, ci, xp);
      pack_rows_bf16(g, k_out + p0, m, co, gp);
      weight_block((const float *)xp, rows, rows, (const float *)gp, gwk, 0, (m + 1) / 2, ci,
                   co, 1);
    }
  }
}

/* Weights w (K, ci, co) in bf16 packed for sparse_conv_bf16: out[k, j, o] holds w[k, 2j, o]
 * and w[k, 2j+1, o] (zero past ci), (K, ceil(ci/2), co) words. With transpose, the packing of
 * w[k]^T (co, ci) into (K, ceil(co/2), ci) words, placed at K-1-k with mirror: the input
 * gradient's weights. */
void pack_weights_bf16(const uint16_t *w, int K, int ci, int co, int transpose, int mirror,
                       uint32_t *out) {
  int rows = transpose ? co : ci, cols = transpose ? ci : co, words = (rows + 1) / 2;
  for (int k = 0; k < K; k++) {
    const uint16_t *src = w + (int64_t)k * ci * co;
    uint32_t *dst = out + (int64_t)(mirror ? K - 1 - k : k) * words * cols;
    for (int j = 0; j < words; j++)
      for (int c = 0; c < cols; c++) {
        int a = 2 * j, b = 2 * j + 1; /* rows of the (transposed) matrix */
        uint32_t lo = transpose ? src[(int64_t)c * co + a] : src[(int64_t)a * co + c];
        uint32_t hi = b >= rows ? 0 : transpose ? src[(int64_t)c * co + b] : src[(int64_t)b * co + c];
        dst[(int64_t)j * cols + c] = lo | hi << 16;
      }
  }
}
#endif

/* BatchNorm over the rows of x (n, c) in training, then ReLU, fused: statistics in one pass,
 * output in a second; the backward in two. Per-channel sums are taken in double over fixed
 * blocks of rows and the blocks added in order, so the result does not depend on the thread
 * count. (Separately, torch's BatchNorm and ReLU read and write the features six times and
 * cost about a tenth of a U-ResNet training step.) */
#define NORM_BLOCK 2048

/* part[0:c] = sum of a, part[c:2c] = sum of a * (b - shift) over the rows, per channel;
 * part holds 2 c doubles per row block, summed in block order into its first 2 c. */
static void block_sums(const float *a, const float *b, const float *shift, int64_t n, int c,
                       double *part, int threads) {
  int64_t blocks = (n + NORM_BLOCK - 1) / NORM_BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t blk = 0; blk < blocks; blk++) {
    double *s = part + blk * 2 * c, *q = s + c;
    int64_t r1 = (blk + 1) * NORM_BLOCK < n ? (blk + 1) * NORM_BLOCK : n;
    for (int j = 0; j < 2 * c; j++) s[j] = 0.0;
    for (int64_t r = blk * NORM_BLOCK; r < r1; r++) {
      const float *ar = a + r * c, *br = b + r * c;
      for (int j = 0; j < c; j++) {
        double u = ar[j], v = (double)br[j] - shift[j];
        s[j] += u;
        q[j] += u * v;
      }
    }
  }
  for (int64_t blk = 1; blk < blocks; blk++)
    for (int j = 0; j < 2 * c; j++) part[j] += part[blk * 2 * c + j];
}

/* y = max(0, (x - mean) / sqrt(var + eps) * gamma + beta) with the batch's mean and biased
 * var, returned with 1 / sqrt(var + eps); part is scratch of 2 c doubles per row block. */
void norm_relu_forward(const float *x, int64_t n, int c, const float *gamma, const float *beta,
                       float eps, float *y, float *mean, float *var, float *invstd,
                       double *part, int threads) {
  float zero[c], scale[c], shift[c];
  for (int j = 0; j < c; j++) zero[j] = 0.0f;
  block_sums(x, x, zero, n, c, part, threads);
  for (int j = 0; j < c; j++) {
    double m = part[j] / n, v = part[c + j] / n - m * m;
    v = v > 0.0 ? v : 0.0;
    mean[j] = (float)m;
    var[j] = (float)v;
    invstd[j] = (float)(1.0 / sqrt(v + eps));
    scale[j] = gamma[j] * invstd[j];
    shift[j] = beta[j] - mean[j] * scale[j];
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < n; r++) {
    const float *xr = x + r * c;
    float *yr = y + r * c;
    for (int j = 0; j < c; j++) {
      float t = xr[j] * scale[j] + shift[j];
      yr[j] = t > 0.0f ? t : 0.0f;
    }
  }
}

/* Gradients of norm_relu_forward for the output gradient gy: gx (n, c), ggamma and gbeta. */
void norm_relu_backward(const float *x, const float *y, const float *gy, int64_t n, int c,
                        const float *mean, const float *invstd, const float *gamma, float *gx,
                        float *ggamma, float *gbeta, double *part, int threads) {
  float *gm = gx; /* the gradient through the ReLU, written where gx will be */
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < n; r++)
    for (int j = 0; j < c; j++) gm[r * c + j] = y[r * c + j] > 0.0f ? gy[r * c + j] : 0.0f;
  block_sums(gm, x, mean, n, c, part, threads);
  float k1[c], k2[c], k3[c];
  for (int j = 0; j < c; j++) {
    gbeta[j] = (float)part[j];
    ggamma[j] = (float)(part[c + j] * invstd[j]);
    k1[j] = gamma[j] * invstd[j];
    k2[j] = (float)(k1[j] * part[j] / n);
    k3[j] = (float)((double)k1[j] * invstd[j] * invstd[j] * part[c + j] / n);
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < n; r++) {
    const float *xr = x + r * c;
    float *g = gx + r * c;
    for (int j = 0; j < c; j++) g[j] = k1[j] * g[j] - k2[j] - (xr[j] - mean[j]) * k3[j];
  }
}
