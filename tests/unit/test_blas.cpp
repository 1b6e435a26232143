// The layer kit's linear layer on OpenBLAS (built with ppipe::blas): its products against the
// loops within the rounding bound of a float sum, the split backward and the accumulation bit for
// bit, the same bits on any thread, and pipelined training bitwise like the unpipelined run.
//
// Tolerance. A float sum of n terms, in any order, is within gamma_n * sum|term| of the exact sum,
// gamma_n = n u / (1 - n u) with u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms,
// 3.1). OpenBLAS and the loops add the same terms in different orders, so each is within that of
// the exact value and they are within twice that of each other. The bound holds for any order,
// blocking or fused multiply-add, so it does not hide a wrong product: an element that misses one
// term or takes a wrong one is off by about a term, far more than n u times the terms' sum.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

#include <catch.hpp>

#include "float_bits.hpp"
#include "ppipe/layers/layers.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/one_f_one_b.hpp"
#include "ppipe/schedule/zero_bubble.hpp"

#include "reference.hpp"

static_assert(ppipe::layers::uses_cblas, "test_blas is built with ppipe::blas");

namespace {

using support::random_values;
using support::same_bits;

namespace layers = ppipe::layers;
namespace loops = ppipe::layers::detail::loops;
using ppipe::host_tensor;
using ppipe::payload;
using ppipe::shape;

const ppipe::layer_context ctx{};

payload random_payload(std::size_t rows, std::size_t width, std::uint64_t seed) {
  return {host_tensor(shape{static_cast<std::int64_t>(rows), static_cast<std::int64_t>(width)},
                      random_values(rows * width, seed))};
}

/// gamma_n of the header comment, doubled: how far two float sums of the same n terms may be apart,
/// per unit of the sum of the terms' magnitudes.
double two_gamma(std::size_t n) {
  const double nu = static_cast<double>(n) * std::ldexp(1.0, -24);
  return 2.0 * nu / (1.0 - nu);
}

struct agreement {
  std::size_t elements = 0;
  std::size_t outside = 0;  ///< elements further apart than the bound
  std::size_t differ = 0;   ///< elements whose bits differ
};

/// Compares `got` with `want` element by element, `magnitude[k]` being the sum of |term| of element
/// k's n-term sum.
agreement compare(std::span<const float> got, std::span<const float> want,
                  const std::vector<double>& magnitude, std::size_t n) {
  agreement a;
  a.elements = got.size();
  for (std::size_t k = 0; k < got.size(); ++k) {
    const double diff = std::abs(static_cast<double>(got[k]) - static_cast<double>(want[k]));
    if (diff > two_gamma(n) * magnitude[k]) ++a.outside;
    if (std::memcmp(&got[k], &want[k], sizeof(float)) != 0) ++a.differ;
  }
  return a;
}

struct dims {
  std::size_t rows, in, out;
};

// Odd sizes for the kernels' edge cases, and sizes past OpenBLAS's blocking of each dimension.
const dims shapes[] = {{1, 1, 1},     {3, 5, 7},   {37, 129, 65},
                       {300, 64, 96}, {5, 700, 3}, {64, 513, 257}};

}  // namespace

TEST_CASE("with ppipe::blas the linear layer multiplies on OpenBLAS, on one thread") {
  layers::linear l(8, 4, 1);
  const payload x = random_payload(16, 8, 2);
  payload y{host_tensor(shape{16, 4})};
  l.forward(ctx, x, y);
  // A pipeline's ranks are the parallelism: OpenBLAS threads would compete with them for the cores.
  CHECK(openblas_get_num_threads() == 1);
}

TEST_CASE("the BLAS forward matches the loops within the rounding bound of a float sum") {
  std::size_t differ = 0;
  for (const dims d : shapes) {
    INFO("rows " << d.rows << ", in " << d.in << ", out " << d.out);
    const layers::linear l(static_cast<int>(d.in), static_cast<int>(d.out), 3);
    const payload x = random_payload(d.rows, d.in, 4);
    payload y{
        host_tensor(shape{static_cast<std::int64_t>(d.rows), static_cast<std::int64_t>(d.out)})};
    l.forward(ctx, x, y);

    std::vector<float> want(d.rows * d.out);
    loops::forward(x[0].data(), l.weight().data(), l.bias().data(), want.data(),
                   {d.rows, d.in, d.out});
    std::vector<double> magnitude(want.size());
    for (std::size_t r = 0; r < d.rows; ++r) {
      for (std::size_t o = 0; o < d.out; ++o) {
        double m = std::abs(static_cast<double>(l.bias()[o]));
        for (std::size_t i = 0; i < d.in; ++i) {
          m += std::abs(static_cast<double>(x[0][r * d.in + i]) *
                        static_cast<double>(l.weight()[o * d.in + i]));
        }
        magnitude[r * d.out + o] = m;
      }
    }
    const agreement a =
        compare(y[0].values(), want, magnitude, d.in + 1);  // the bias is a term too
    CHECK(a.outside == 0);
    differ += a.differ;
  }
  CHECK(differ > 0);  // it is not the loops: over these sizes some sums come out in another order
}

TEST_CASE("the BLAS input and weight gradients match the loops within the rounding bound") {
  std::size_t differ = 0;
  for (const dims d : shapes) {
    INFO("rows " << d.rows << ", in " << d.in << ", out " << d.out);
    layers::linear l(static_cast<int>(d.in), static_cast<int>(d.out), 5);
    const payload x = random_payload(d.rows, d.in, 6);
    const payload gy = random_payload(d.rows, d.out, 7);
    payload gx{
        host_tensor(shape{static_cast<std::int64_t>(d.rows), static_cast<std::int64_t>(d.in)})};
    l.backward(ctx, x, {}, gy, gx);

    const ppipe::layers::detail::matmul_dims md{d.rows, d.in, d.out};
    std::vector<float> want_gx(d.rows * d.in), want_gw(d.out * d.in), want_gb(d.out);
    loops::backward_input(gy[0].data(), l.weight().data(), want_gx.data(), md);
    loops::backward_weight(x[0].data(), gy[0].data(), want_gw.data(), want_gb.data(), md);

    std::vector<double> magnitude_gx(want_gx.size(), 0.0), magnitude_gw(want_gw.size(), 0.0);
    for (std::size_t r = 0; r < d.rows; ++r) {
      for (std::size_t o = 0; o < d.out; ++o) {
        const double g = std::abs(static_cast<double>(gy[0][r * d.out + o]));
        for (std::size_t i = 0; i < d.in; ++i) {
          magnitude_gx[r * d.in + i] += g * std::abs(static_cast<double>(l.weight()[o * d.in + i]));
          magnitude_gw[o * d.in + i] += g * std::abs(static_cast<double>(x[0][r * d.in + i]));
        }
      }
    }
    const agreement a_gx = compare(gx[0].values(), want_gx, magnitude_gx, d.out);
    const agreement a_gw =
        compare(l.grad_weight(), want_gw, magnitude_gw, d.rows);  // 0 + the gradient
    CHECK(a_gx.outside == 0);
    CHECK(a_gw.outside == 0);
    differ += a_gx.differ + a_gw.differ;
    // The bias gradient is the same loop over the rows on both paths.
    CHECK(same_bits(l.grad_bias(), want_gb));
  }
  CHECK(differ > 0);
}

TEST_CASE(
    "on the BLAS, backward is backward_input then backward_weight bit for bit, and each call's "
    "product adds itself to the weight gradient") {
  const layers::linear fresh(200, 150, 8);
  const payload x1 = random_payload(300, 200, 9), g1 = random_payload(300, 150, 10);
  const payload x2 = random_payload(7, 200, 11), g2 = random_payload(7, 150, 12);
  layers::linear joined = fresh, split = fresh, first = fresh, second = fresh;
  payload gx_joined{host_tensor(shape{300, 200})}, gx_split{host_tensor(shape{300, 200})};
  joined.backward(ctx, x1, {}, g1, gx_joined);
  split.backward_input(ctx, x1, {}, g1, gx_split);
  split.backward_weight(ctx, x1, {}, g1);
  CHECK(same_bits(gx_joined[0].values(), gx_split[0].values()));
  CHECK(same_bits(joined.grad_weight(), split.grad_weight()));
  CHECK(same_bits(joined.grad_bias(), split.grad_bias()));

  // The second call's product adds itself to the accumulator (sgemm, beta = 1): the bits of that
  // call made directly on the first call's gradient, and the bias gradient summed on its own, then
  // added.
  joined.backward_weight(ctx, x2, {}, g2);
  first.backward_weight(ctx, x1, {}, g1);
  second.backward_weight(ctx, x2, {}, g2);
  std::vector<float> direct(first.grad_weight().begin(), first.grad_weight().end());
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 150, 200, 7, 1.0f, g2[0].data(), 150, x2[0].data(), 200, 1.0f,
              direct.data(), 200);
  CHECK(same_bits(joined.grad_weight(), direct));
  std::vector<float> bias(first.grad_bias().size());
  for (std::size_t k = 0; k < bias.size(); ++k) bias[k] = first.grad_bias()[k] + second.grad_bias()[k];
  CHECK(same_bits(joined.grad_bias(), bias));
}

TEST_CASE(
    "on the BLAS, a call gives the same bits on any thread, while other threads multiply too") {
  const layers::linear l(257, 129, 13);
  const payload x = random_payload(96, 257, 14), gy = random_payload(96, 129, 15);
  const auto run = [&](payload& y, payload& gx, std::vector<float>& gw) {
    layers::linear mine = l;
    mine.forward(ctx, x, y);
    mine.backward(ctx, x, y, gy, gx);
    gw.assign(mine.grad_weight().begin(), mine.grad_weight().end());
  };
  payload y0{host_tensor(shape{96, 129})}, gx0{host_tensor(shape{96, 257})};
  std::vector<float> gw0;
  run(y0, gx0, gw0);

  constexpr int threads = 3;
  constexpr int repeats = 10;
  std::vector<int> mismatches(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int k = 0; k < repeats; ++k) {
        payload y{host_tensor(shape{96, 129})}, gx{host_tensor(shape{96, 257})};
        std::vector<float> gw;
        run(y, gx, gw);
        const bool same = same_bits(y[0].values(), y0[0].values()) &&
                          same_bits(gx[0].values(), gx0[0].values()) && same_bits(gw, gw0);
        if (!same) ++mismatches[static_cast<std::size_t>(t)];
      }
    });
  }
  for (std::thread& t : pool) t.join();
  for (int t = 0; t < threads; ++t) CHECK(mismatches[static_cast<std::size_t>(t)] == 0);
}

namespace {

template <class Schedule>
void check_pipelined(int p, int m, std::int64_t rows, const std::vector<int>& widths) {
  INFO(Schedule::name << " p=" << p << " m=" << m << " rows=" << rows);
  layers::sequential piped = layers::sequential::mlp(widths, 77);
  layers::sequential plain = layers::sequential::mlp(widths, 77);
  const layers::sgd sgd(0.01f);
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  ppipe::pipeline<layers::sequential, Schedule> pipe(
      piped, o, layers::mse_loss{}, [&](const ppipe::stage_info& s) { sgd.step(piped, s); });
  for (int step = 0; step < 3; ++step) {
    const payload x =
        random_payload(static_cast<std::size_t>(rows), static_cast<std::size_t>(widths.front()),
                       100 + static_cast<std::uint64_t>(step));
    const payload y =
        random_payload(static_cast<std::size_t>(rows), static_cast<std::size_t>(widths.back()),
                       200 + static_cast<std::uint64_t>(step));
    const double got = pipe.train_step(x, y);
    const double want = reference::accumulate(plain, x, y, m, layers::mse_loss{});
    sgd.step(plain, 0, plain.num_layers());
    CHECK(got == want);  // bitwise
    const auto a = piped.parameters(), b = plain.parameters();
    REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k) CHECK(same_bits(a[k], b[k]));
  }
}

}  // namespace

TEST_CASE("on the BLAS, a pipelined MLP trains bitwise like the unpipelined run") {
  // Microbatches of 300 and 301 rows: the weight gradient's sums run past OpenBLAS's blocking.
  check_pipelined<ppipe::schedules::one_f_one_b>(2, 2, 601, {40, 300, 300, 5});
  // Zero-bubble splits every backward into I and W and defers W: the same bits.
  check_pipelined<ppipe::schedules::zb_h1>(2, 4, 203, {24, 96, 96, 96, 3});
}
