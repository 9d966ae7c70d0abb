// Per-step element-wise work of the fused recurrences (sketchlab/models/sketch_rnn/fused.py), float32 on
// a CPU, one pass over each batch row.
//
// In PyTorch each of these is a chain of 4 to 14 small ops per time step (at Sketch-RNN's sizes a few
// microseconds of fixed cost each, and a trip through memory for every intermediate). The maths, the
// buffers and their layouts are fused.py's exactly; the Python code there stays the reference and the
// fallback. exp and tanh are ATen's vectorised ones (SLEEF, 1 ulp), as in torch.sigmoid and torch.tanh.
// Batch rows run in parallel on torch's intra-op threads (at::parallel_for, OpenMP: torch's own runtime)
// once a call has enough of them, and every result is the same whatever the number of threads.
// Built by sketchlab/models/sketch_rnn/step_kernels.py, which defines CPU_CAPABILITY for this CPU.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <vector>

namespace {

using at::vec::fmadd;
using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();

// Rows per parallel chunk for `work` floats of traffic a row: ATen's grain size, 32768 elements a chunk.
int64_t row_grain(int64_t work) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / work); }

float hsum(const Vec& v) {
  __at_align__ float buf[W];
  v.store(buf);
  float s = 0.f;
  for (int64_t i = 0; i < W; ++i) s += buf[i];
  return s;
}

// mean and 1 / sqrt(biased variance + eps) of x[0:n] (two passes)
void moments(const float* x, int64_t n, float eps, float& mean, float& rstd) {
  Vec acc(0.f);
  int64_t i = 0;
  for (; i + W <= n; i += W) acc += Vec::loadu(x + i);
  float s = hsum(acc);
  for (; i < n; ++i) s += x[i];
  mean = s / n;
  const Vec m(mean);
  Vec v(0.f);
  for (i = 0; i + W <= n; i += W) {
    const Vec d = Vec::loadu(x + i) - m;
    v = fmadd(d, d, v);
  }
  float var = hsum(v);
  for (; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  rstd = 1.f / std::sqrt(var / n + eps);
}

Vec sigmoid(const Vec& x) { return Vec(1.f) / (Vec(1.f) + x.neg().exp()); }
float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

// The gradient of a layer norm without affine w.r.t. its input x, from gy (the gradient w.r.t. its
// output times the gain), as ATen's layer-norm backward forms it: dx = rstd gy + b x + c, plus `add`.
void ln_backward_row(const float* gy, const float* x, float mean, float rstd, int64_t n, const float* add,
                     float* dx) {
  Vec vds(0.f), vdb(0.f);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const Vec g = Vec::loadu(gy + i);
    vds = fmadd(g, Vec::loadu(x + i), vds);
    vdb += g;
  }
  float ds = hsum(vds), db = hsum(vdb);
  for (; i < n; ++i) {
    ds += gy[i] * x[i];
    db += gy[i];
  }
  const float b = (db * mean - ds) * rstd * rstd * rstd / n;
  const float c = -b * mean - db * rstd / n;
  const Vec va(rstd), vb(b), vc(c);
  for (i = 0; i + W <= n; i += W) {
    Vec d = fmadd(va, Vec::loadu(gy + i), fmadd(vb, Vec::loadu(x + i), vc));
    if (add) d += Vec::loadu(add + i);
    d.store(dx + i);
  }
  for (; i < n; ++i) dx[i] = rstd * gy[i] + (b * x[i] + c) + (add ? add[i] : 0.f);
}

// Row b of group q of a (G, b, ...) tensor whose rows are contiguous (checked by `check`).
float* row(const torch::Tensor& t, int64_t q, int64_t b) {
  return t.data_ptr<float>() + q * t.stride(0) + b * t.stride(1);
}

void check(std::initializer_list<const torch::Tensor*> tensors, const char* where) {
  for (const torch::Tensor* t : tensors) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat32 && t->device().is_cpu(), where, ": float32 CPU tensors only");
    TORCH_CHECK(t->stride(-1) == 1, where, ": the last axis must be contiguous");
  }
}

void check_contiguous(std::initializer_list<const torch::Tensor*> tensors, const char* where) {
  for (const torch::Tensor* t : tensors) TORCH_CHECK(t->is_contiguous(), where, ": tape buffers must be contiguous");
}

}  // namespace

// _LNTape.forward_step. raw (B, 4, n): the gate pre-activations; c (B, n): the memory before the step;
// keep (B, n) or None; beta4 (4, n) already holds the forget bias on its f block. Writes ln_mean and
// ln_rstd (B, 4), acts (B, 4, n), c_out (B, n), c_mean and c_rstd (B), tanh_c (B, n) and h_out (B, n).
void ln_forward_step(const torch::Tensor& raw, const torch::Tensor& c, const std::optional<torch::Tensor>& keep,
                     const torch::Tensor& gamma4, const torch::Tensor& beta4, const torch::Tensor& gamma_c,
                     const torch::Tensor& beta_c, torch::Tensor ln_mean, torch::Tensor ln_rstd, torch::Tensor acts,
                     torch::Tensor c_mean, torch::Tensor c_rstd, torch::Tensor tanh_c, torch::Tensor c_out,
                     torch::Tensor h_out, double eps) {
  check({&raw, &c, &gamma4, &beta4, &gamma_c, &beta_c, &ln_mean, &ln_rstd, &acts, &c_mean, &c_rstd, &tanh_c,
         &c_out, &h_out}, "ln_forward_step");
  check_contiguous({&raw, &acts, &tanh_c, &ln_mean, &ln_rstd, &c_mean, &c_rstd, &gamma4, &beta4, &gamma_c, &beta_c},
                   "ln_forward_step");
  if (keep) check({&*keep}, "ln_forward_step");
  const int64_t B = raw.size(0), n = raw.size(2);
  const float* R = raw.data_ptr<float>();
  const float* C = c.data_ptr<float>();
  const float* K = keep ? keep->data_ptr<float>() : nullptr;
  const float *G4 = gamma4.data_ptr<float>(), *B4 = beta4.data_ptr<float>();
  const float *GC = gamma_c.data_ptr<float>(), *BC = beta_c.data_ptr<float>();
  float *LM = ln_mean.data_ptr<float>(), *LR = ln_rstd.data_ptr<float>(), *A = acts.data_ptr<float>();
  float *CM = c_mean.data_ptr<float>(), *CR = c_rstd.data_ptr<float>(), *TC = tanh_c.data_ptr<float>();
  float *CO = c_out.data_ptr<float>(), *H = h_out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, B, row_grain(5 * n), [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      for (int64_t k = 0; k < 4; ++k) {
        const float* x = R + (b * 4 + k) * n;
        float mean, rstd;
        moments(x, n, e, mean, rstd);
        LM[b * 4 + k] = mean;
        LR[b * 4 + k] = rstd;
        float* a = A + (b * 4 + k) * n;
        const float *g = G4 + k * n, *be = B4 + k * n;
        const Vec vm(mean), vr(rstd);
        int64_t i = 0;
        for (; i + W <= n; i += W) {
          const Vec y = fmadd((Vec::loadu(x + i) - vm) * vr, Vec::loadu(g + i), Vec::loadu(be + i));
          (k == 1 ? y.tanh() : sigmoid(y)).store(a + i);
        }
        for (; i < n; ++i) {
          const float y = (x[i] - mean) * rstd * g[i] + be[i];
          a[i] = k == 1 ? std::tanh(y) : sigmoid(y);
        }
      }
      const float *si = A + b * 4 * n, *tj = si + n, *sf = si + 2 * n, *so = si + 3 * n;
      const float* cp = C + b * c.stride(0);
      const float* kp = K ? K + b * keep->stride(0) : nullptr;
      float* co = CO + b * c_out.stride(0);
      for (int64_t i = 0; i < n; ++i) co[i] = cp[i] * sf[i] + si[i] * (kp ? tj[i] * kp[i] : tj[i]);
      float mean, rstd;
      moments(co, n, e, mean, rstd);
      CM[b] = mean;
      CR[b] = rstd;
      float *tc = TC + b * n, *h = H + b * h_out.stride(0);
      const Vec vm(mean), vr(rstd);
      int64_t i = 0;
      for (; i + W <= n; i += W) {
        const Vec t = fmadd((Vec::loadu(co + i) - vm) * vr, Vec::loadu(GC + i), Vec::loadu(BC + i)).tanh();
        t.store(tc + i);
        (t * Vec::loadu(so + i)).store(h + i);
      }
      for (; i < n; ++i) {
        const float t = std::tanh((co[i] - mean) * rstd * GC[i] + BC[i]);
        tc[i] = t;
        h[i] = t * so[i];
      }
    }
  });
}

// The gate gradients of one LSTM row from the gradient dct w.r.t. its new memory (the chain's part that
// fused._lstm_coefs precomputes in Python, here formed on the fly from the activations): i, j, f into
// dg[0:3n] (o is the caller's), and the gradient w.r.t. the memory before the step into dc_prev.
void lstm_memory_backward_row(const float* dct, const float* a, const float* cp, const float* kp, int64_t n,
                              float* dg, float* dc_prev) {
  const float *si = a, *tj = a + n, *sf = a + 2 * n;
  for (int64_t i = 0; i < n; ++i) {
    const float keep = kp ? kp[i] : 1.f;
    dg[i] = dct[i] * ((si[i] - si[i] * si[i]) * tj[i] * keep);      // sigmoid' = s (1 - s)
    dg[n + i] = dct[i] * ((si[i] - si[i] * (tj[i] * tj[i])) * keep);  // si (1 - tanh^2)
    dg[2 * n + i] = dct[i] * ((sf[i] - sf[i] * sf[i]) * cp[i]);
    dc_prev[i] = dct[i] * sf[i];
  }
}

// The pointers of ln_backward_step, passed by value into the rows' loop (captured by reference in a lambda,
// they cost the compiler its vectorised loops: that version ran 1.6x slower on one thread).
struct LNBackward {
  const float *DH, *DC, *A, *TC, *CP, *K, *G4, *GC, *R, *LM, *LR, *CN, *CM, *CR;
  float *DR, *DP;
  int64_t dh_stride, dc_stride, cp_stride, k_stride, n;
};

// Rows [first, last) of ln_backward_step, their gain and shift sums added to part (10n floats).
void ln_backward_rows(const LNBackward p, int64_t first, int64_t last, float* part) {
  const int64_t n = p.n;
  std::vector<float> dg(4 * n), dch(n), gy(n), dct(n);
  float *p_g4 = part, *p_b4 = p_g4 + 4 * n, *p_gc = p_b4 + 4 * n, *p_bc = p_gc + n;
  for (int64_t b = first; b < last; ++b) {
    const float *dhb = p.DH + b * p.dh_stride, *dcb = p.DC + b * p.dc_stride;
    const float *a = p.A + b * 4 * n, *so = a + 3 * n, *tc = p.TC + b * n;
    const float *cp = p.CP + b * p.cp_stride, *kp = p.K ? p.K + b * p.k_stride : nullptr;
    const float *cn = p.CN + b * n, *GC = p.GC;
    for (int64_t i = 0; i < n; ++i) {
      dg[3 * n + i] = dhb[i] * ((so[i] - so[i] * so[i]) * tc[i]);
      dch[i] = dhb[i] * (so[i] - so[i] * (tc[i] * tc[i]));  // so (1 - tanh^2)
      gy[i] = dch[i] * GC[i];
    }
    const float cm = p.CM[b], cr = p.CR[b];
    for (int64_t i = 0; i < n; ++i) {
      p_gc[i] += (cn[i] - cm) * cr * dch[i];
      p_bc[i] += dch[i];
    }
    ln_backward_row(gy.data(), cn, cm, cr, n, dcb, dct.data());
    lstm_memory_backward_row(dct.data(), a, cp, kp, n, dg.data(), p.DP + b * n);
    for (int64_t k = 0; k < 4; ++k) {
      const float *x = p.R + (b * 4 + k) * n, *g = dg.data() + k * n, *gam = p.G4 + k * n;
      const float m = p.LM[b * 4 + k], r = p.LR[b * 4 + k];
      for (int64_t i = 0; i < n; ++i) {
        gy[i] = g[i] * gam[i];
        p_g4[k * n + i] += (x[i] - m) * r * g[i];
        p_b4[k * n + i] += g[i];
      }
      ln_backward_row(gy.data(), x, m, r, n, nullptr, p.DR + (b * 4 + k) * n);
    }
  }
}

// _LNTape.backward_step. dh, dc (B, n): the gradients w.r.t. the step's new h and c; acts (B, 4, n),
// tanh_c (B, n), c_prev (B, n) and keep (B, n) or None: the step's record. Writes d_raw (B, 4, n) and adds
// this step's terms of the layer norms' gain and shift gradients to sums (float64, 10n: the gates' gain,
// their shift, the memory's gain, its shift); returns the gradient w.r.t. the memory before the step.
torch::Tensor ln_backward_step(const torch::Tensor& dh, const torch::Tensor& dc, const torch::Tensor& acts,
                               const torch::Tensor& tanh_c, const torch::Tensor& c_prev,
                               const std::optional<torch::Tensor>& keep, const torch::Tensor& gamma4,
                               const torch::Tensor& gamma_c, const torch::Tensor& raw, const torch::Tensor& ln_mean,
                               const torch::Tensor& ln_rstd, const torch::Tensor& c_new, const torch::Tensor& c_mean,
                               const torch::Tensor& c_rstd, torch::Tensor d_raw, torch::Tensor sums) {
  check({&dh, &dc, &acts, &tanh_c, &c_prev, &gamma4, &gamma_c, &raw, &ln_mean, &ln_rstd, &c_new, &c_mean, &c_rstd,
         &d_raw}, "ln_backward_step");
  check_contiguous({&acts, &tanh_c, &raw, &ln_mean, &ln_rstd, &c_new, &c_mean, &c_rstd, &d_raw, &gamma4, &gamma_c,
                    &sums}, "ln_backward_step");
  if (keep) check({&*keep}, "ln_backward_step");
  const int64_t B = raw.size(0), n = raw.size(2);
  TORCH_CHECK(sums.scalar_type() == torch::kFloat64 && sums.numel() == 10 * n,
              "ln_backward_step: sums is float64 (10n)");
  torch::Tensor dc_prev = torch::empty({B, n}, dc.options());
  const LNBackward p{dh.data_ptr<float>(), dc.data_ptr<float>(), acts.data_ptr<float>(), tanh_c.data_ptr<float>(),
                     c_prev.data_ptr<float>(), keep ? keep->data_ptr<float>() : nullptr, gamma4.data_ptr<float>(),
                     gamma_c.data_ptr<float>(), raw.data_ptr<float>(), ln_mean.data_ptr<float>(),
                     ln_rstd.data_ptr<float>(), c_new.data_ptr<float>(), c_mean.data_ptr<float>(),
                     c_rstd.data_ptr<float>(), d_raw.data_ptr<float>(), dc_prev.data_ptr<float>(), dh.stride(0),
                     dc.stride(0), c_prev.stride(0), keep ? keep->stride(0) : 0, n};
  // The rows in blocks of a fixed size (not one block per thread), each block's sums over its rows in float,
  // then the blocks' sums into the float64 totals in block order: the same result for any thread count.
  const int64_t rows = row_grain(10 * n), blocks = (B + rows - 1) / rows;
  std::vector<float> part(blocks * 10 * n, 0.f);
  float* parts = part.data();
  at::parallel_for(0, blocks, 1, [=](int64_t first, int64_t last) {
    for (int64_t blk = first; blk < last; ++blk)
      ln_backward_rows(p, blk * rows, std::min(B, (blk + 1) * rows), parts + blk * 10 * n);
  });
  double* S = sums.data_ptr<double>();
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t i = 0; i < 10 * n; ++i) S[i] += parts[blk * 10 * n + i];
  return dc_prev;
}

// One plain LSTM step (fused._FusedPlainLSTM) for G groups of b rows: from the gate pre-activations
// g (G, b, 4n) and the memory c (G, b, n), the activations into acts (G, b, 4, n), the new memory into
// c_out, its tanh into tanh_c and h into h_out. keep (G, b, n) or None: recurrent dropout on the candidate.
void lstm_forward_step(const torch::Tensor& g, const torch::Tensor& c, const std::optional<torch::Tensor>& keep,
                       torch::Tensor acts, torch::Tensor c_out, torch::Tensor tanh_c, torch::Tensor h_out) {
  check({&g, &c, &acts, &c_out, &tanh_c, &h_out}, "lstm_forward_step");
  if (keep) check({&*keep}, "lstm_forward_step");
  const int64_t G = g.size(0), B = g.size(1), n = c.size(2);
  TORCH_CHECK(g.size(2) == 4 * n && acts.stride(2) == n, "lstm_forward_step: gates (G, b, 4n), acts (G, b, 4, n)");
  at::parallel_for(0, G * B, row_grain(6 * n), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t q = r / B, b = r % B;
      const float* x = row(g, q, b);
      float* a = row(acts, q, b);
      int64_t i;
      for (int64_t k = 0; k < 4; ++k) {  // sigmoid(i), tanh(j), sigmoid(f), sigmoid(o)
        const float* xk = x + k * n;
        float* ak = a + k * n;
        for (i = 0; i + W <= n; i += W) {
          const Vec y = Vec::loadu(xk + i);
          (k == 1 ? y.tanh() : sigmoid(y)).store(ak + i);
        }
        for (; i < n; ++i) ak[i] = k == 1 ? std::tanh(xk[i]) : sigmoid(xk[i]);
      }
      const float *si = a, *tj = a + n, *sf = a + 2 * n, *so = a + 3 * n;
      const float *cp = row(c, q, b), *kp = keep ? row(*keep, q, b) : nullptr;
      float *co = row(c_out, q, b), *tc = row(tanh_c, q, b), *h = row(h_out, q, b);
      for (i = 0; i < n; ++i) co[i] = cp[i] * sf[i] + si[i] * (kp ? tj[i] * kp[i] : tj[i]);
      for (i = 0; i + W <= n; i += W) {
        const Vec t = Vec::loadu(co + i).tanh();
        t.store(tc + i);
        (t * Vec::loadu(so + i)).store(h + i);
      }
      for (; i < n; ++i) {
        tc[i] = std::tanh(co[i]);
        h[i] = tc[i] * so[i];
      }
    }
  });
}

// Its BPTT step, for G groups of b rows: from dh and dc (G, b, n), the gradients w.r.t. the new h and c
// (plus dh_add and dc_add where given), and the step's record (acts, tanh_c, the memory before c_prev,
// keep), the gate gradients into d_raw (G, b, 4n) and the gradient w.r.t. the memory before into dc_out.
// dc_out may be dc itself: each row of dc is read in full before that row of dc_out is written.
void lstm_backward_step(const torch::Tensor& dh, const torch::Tensor& dc, const std::optional<torch::Tensor>& dh_add,
                        const std::optional<torch::Tensor>& dc_add, const torch::Tensor& acts,
                        const torch::Tensor& tanh_c, const torch::Tensor& c_prev,
                        const std::optional<torch::Tensor>& keep, torch::Tensor d_raw, torch::Tensor dc_out) {
  check({&dh, &dc, &acts, &tanh_c, &c_prev, &d_raw, &dc_out}, "lstm_backward_step");
  for (const auto* t : {&dh_add, &dc_add, &keep})
    if (*t) check({&**t}, "lstm_backward_step");
  const int64_t G = dh.size(0), B = dh.size(1), n = dh.size(2);
  TORCH_CHECK(acts.stride(2) == n && d_raw.size(2) == 4 * n,
              "lstm_backward_step: acts (G, b, 4, n), d_raw (G, b, 4n)");
  at::parallel_for(0, G * B, row_grain(10 * n), [&](int64_t first, int64_t last) {
    std::vector<float> dct(n);
    for (int64_t r = first; r < last; ++r) {
      const int64_t q = r / B, b = r % B;
      const float *dhb = row(dh, q, b), *dcb = row(dc, q, b), *a = row(acts, q, b), *so = a + 3 * n;
      const float *dha = dh_add ? row(*dh_add, q, b) : nullptr, *dca = dc_add ? row(*dc_add, q, b) : nullptr;
      const float *tc = row(tanh_c, q, b), *cp = row(c_prev, q, b), *kp = keep ? row(*keep, q, b) : nullptr;
      float* dg = row(d_raw, q, b);
      for (int64_t i = 0; i < n; ++i) {
        const float d = dha ? dhb[i] + dha[i] : dhb[i];
        dg[3 * n + i] = d * ((so[i] - so[i] * so[i]) * tc[i]);
        dct[i] = (dca ? dcb[i] + dca[i] : dcb[i]) + d * (so[i] - so[i] * (tc[i] * tc[i]));
      }
      lstm_memory_backward_row(dct.data(), a, cp, kp, n, dg, row(dc_out, q, b));
    }
  });
}

// The HyperLSTM's gate pre-activations of one step: raw (B, 4, n) = (beta + bias) + alpha_x * xh +
// alpha_h * hh, with alpha (8, B, n) and beta (4, B, n) block-major, bias (4, n), xh and hh (B, 4n).
void hyper_gates_forward(const torch::Tensor& alpha, const torch::Tensor& beta, const torch::Tensor& bias,
                         const torch::Tensor& xh, const torch::Tensor& hh, torch::Tensor raw) {
  check({&alpha, &beta, &bias, &xh, &hh, &raw}, "hyper_gates_forward");
  check_contiguous({&alpha, &beta, &bias, &raw}, "hyper_gates_forward");
  const int64_t B = raw.size(0), n = raw.size(2);
  const float *AL = alpha.data_ptr<float>(), *BE = beta.data_ptr<float>(), *BI = bias.data_ptr<float>();
  const float *XH = xh.data_ptr<float>(), *HH = hh.data_ptr<float>();
  float* RW = raw.data_ptr<float>();
  at::parallel_for(0, B, row_grain(20 * n), [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b)
      for (int64_t k = 0; k < 4; ++k) {
        const float *ax = AL + (k * B + b) * n, *ah = AL + ((4 + k) * B + b) * n, *be = BE + (k * B + b) * n;
        const float *bi = BI + k * n, *x = XH + b * xh.stride(0) + k * n, *h = HH + b * hh.stride(0) + k * n;
        float* r = RW + (b * 4 + k) * n;
        for (int64_t i = 0; i < n; ++i) r[i] = (be[i] + bi[i]) + ax[i] * x[i] + ah[i] * h[i];
      }
  });
}

// Its backward, from d_raw (B, 4, n): d_ab (12, B, n) = [d_raw * xh, d_raw * hh, d_raw] block-major (the
// gradients w.r.t. alpha and beta) and d_hh (B, 4, n) = d_raw * alpha_h (w.r.t. h @ W_hh).
void hyper_gates_backward(const torch::Tensor& d_raw, const torch::Tensor& xh, const torch::Tensor& hh,
                          const torch::Tensor& alpha, torch::Tensor d_ab, torch::Tensor d_hh) {
  check({&d_raw, &xh, &hh, &alpha, &d_ab, &d_hh}, "hyper_gates_backward");
  check_contiguous({&d_raw, &alpha, &d_ab, &d_hh}, "hyper_gates_backward");
  const int64_t B = d_raw.size(0), n = d_raw.size(2);
  const float *DR = d_raw.data_ptr<float>(), *XH = xh.data_ptr<float>(), *HH = hh.data_ptr<float>();
  const float* AL = alpha.data_ptr<float>();
  float *DAB = d_ab.data_ptr<float>(), *DHH = d_hh.data_ptr<float>();
  at::parallel_for(0, B, row_grain(28 * n), [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b)
      for (int64_t k = 0; k < 4; ++k) {
        const float *d = DR + (b * 4 + k) * n, *ah = AL + ((4 + k) * B + b) * n;
        const float *x = XH + b * xh.stride(0) + k * n, *h = HH + b * hh.stride(0) + k * n;
        float *dax = DAB + (k * B + b) * n, *dah = DAB + ((4 + k) * B + b) * n, *dbe = DAB + ((8 + k) * B + b) * n;
        float* dhh = DHH + (b * 4 + k) * n;
        for (int64_t i = 0; i < n; ++i) {
          dax[i] = d[i] * x[i];
          dah[i] = d[i] * h[i];
          dbe[i] = d[i];
          dhh[i] = d[i] * ah[i];
        }
      }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ln_forward_step", &ln_forward_step, "one step of magenta's layer-norm LSTM (after the gate products)");
  m.def("ln_backward_step", &ln_backward_step, "one step of its BPTT (before the products with the weights)");
  m.def("lstm_forward_step", &lstm_forward_step, "one plain LSTM step (after the gate products), G groups");
  m.def("lstm_backward_step", &lstm_backward_step, "one step of its BPTT, G groups");
  m.def("hyper_gates_forward", &hyper_gates_forward, "the HyperLSTM's gate pre-activations of one step");
  m.def("hyper_gates_backward", &hyper_gates_backward, "their backward");
}
