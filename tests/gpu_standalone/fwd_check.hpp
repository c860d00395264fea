// The standalone forward harnesses' reference (test_fused.cu, test_hopper_fwd.cu): a kernel's out
// and lse for one case against a literal double-precision forward, the softmax over every query's
// neighbors by fastna::is_neighbor (docs/SEMANTICS.md section 5).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "case.hpp"
#include "half_bits.hpp"

struct FwdErrors {
  double rel;      // relative L2 error of out
  double lse_err;  // largest absolute error of lse
  bool nonfinite;  // a non-finite value in out or lse
};

// out: the kernel's [B, N, H, D] 16-bit output; lse: its [B, N, H].  q(b, n, h, d), k(b, n, hk, d)
// and v(b, n, hk, d): the input values the kernel read, at logical [B, N, heads, D] indices.
template <int R, class Q, class K, class V>
static FwdErrors forward_errors(const Case& c, const fastna::NaProblem<R>& p, Q&& q, K&& k, V&& v,
                                const std::vector<uint16_t>& out, const std::vector<float>& lse) {
  const int64_t N = p.num_tokens();
  const int B = c.B, H = c.H, D = c.D;
  double err2 = 0, ref2 = 0, lse_err = 0;
  bool nonfinite = false;
  std::vector<double> s, acc(D);
  std::vector<int64_t> nb;
  std::vector<float> qrow(D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int hk = p.kv_head(h);
      for (int64_t i = 0; i < N; ++i) {
        neighbors_of(p, i, N, nb);
        for (int x = 0; x < D; ++x) qrow[x] = q(b, i, h, x);
        s.assign(nb.size(), 0.0);
        double mx = -1e300;
        for (size_t n = 0; n < nb.size(); ++n) {
          double d = 0;
          for (int x = 0; x < D; ++x) d += double(qrow[x]) * double(k(b, nb[n], hk, x));
          s[n] = d * p.scale;
          mx = std::max(mx, s[n]);
        }
        double l = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (size_t n = 0; n < nb.size(); ++n) {
          const double e = std::exp(s[n] - mx);
          l += e;
          for (int x = 0; x < D; ++x) acc[x] += e * double(v(b, nb[n], hk, x));
        }
        for (int x = 0; x < D; ++x) {
          const double r = acc[x] / l;
          const double g = from_bits(out[((size_t(b) * N + i) * H + h) * D + x], c.bf16);
          if (!std::isfinite(g)) nonfinite = true;
          err2 += (g - r) * (g - r);
          ref2 += r * r;
        }
        const double lg = lse[(size_t(b) * N + i) * H + h];
        if (!std::isfinite(lg)) nonfinite = true;
        lse_err = std::max(lse_err, std::fabs(lg - (mx + std::log(l))));
      }
    }
  return {std::sqrt(err2 / ref2), lse_err, nonfinite};
}
