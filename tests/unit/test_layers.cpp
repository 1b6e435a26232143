// The CPU layer kit: gradients against finite differences of double-precision reference math, the
// split backward's bits, accumulation, shape errors, seeding, SGD and a small training run.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <catch.hpp>

#include "error_message.hpp"
#include "float_bits.hpp"
#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>

using ppipe::host_tensor;
using ppipe::payload;
using ppipe::shape;
using ppipe_test::contains;
namespace layers = ppipe::layers;

static_assert(ppipe::trainable_model<layers::sequential>);
static_assert(ppipe::model_has_split_backward<layers::sequential, host_tensor>);
static_assert(ppipe::model_has_costs<layers::sequential>);
static_assert(std::is_convertible_v<layers::mse_loss, ppipe::loss_function<>>);

namespace {

using support::random_values;
using support::same_bits;

const ppipe::layer_context ctx{};

payload random_payload(shape s, std::uint64_t seed) {
  const std::size_t n = s.elements();
  return {host_tensor(std::move(s), random_values(n, seed))};
}

std::vector<double> to_double(std::span<const float> v) { return {v.begin(), v.end()}; }

/// Checks an analytic float gradient against a double-precision finite difference.
void check_close(float analytic, double numeric) {
  CHECK(std::abs(static_cast<double>(analytic) - numeric) <= 1e-5 + 1e-4 * std::abs(numeric));
}

/// Central difference of f at each element of `v` (in place, restored afterwards).
std::vector<double> finite_difference(std::vector<double>& v, const std::function<double()>& f, double h) {
  std::vector<double> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) {
    const double keep = v[k];
    v[k] = keep + h;
    const double up = f();
    v[k] = keep - h;
    const double down = f();
    v[k] = keep;
    out[k] = (up - down) / (2 * h);
  }
  return out;
}

// Double-precision references.
std::vector<double> ref_linear(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& b, std::size_t in, std::size_t out) {
  const std::size_t rows = x.size() / in;
  std::vector<double> y(rows * out);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t o = 0; o < out; ++o) {
      double acc = b[o];
      for (std::size_t i = 0; i < in; ++i) acc += x[r * in + i] * w[o * in + i];
      y[r * out + o] = acc;
    }
  }
  return y;
}
double ref_activation(layers::activation_kind kind, double x) {
  switch (kind) {
    case layers::activation_kind::relu: return x > 0 ? x : 0;
    case layers::activation_kind::tanh: return std::tanh(x);
    case layers::activation_kind::gelu: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  return 0;
}
double dot(const std::vector<double>& a, std::span<const float> b) {
  double s = 0;
  for (std::size_t k = 0; k < a.size(); ++k) s += a[k] * static_cast<double>(b[k]);
  return s;
}

payload allocate(const std::vector<shape>& shapes) {
  payload p;
  for (const shape& s : shapes) p.emplace_back(s);
  return p;
}

/// Every layer's input and, last, the model's output, as ppipe would keep them.
std::vector<payload> run_forward(layers::sequential& m, const payload& x) {
  std::vector<payload> acts{x};
  for (int i = 0; i < m.num_layers(); ++i) {
    payload out = allocate(m.output_shapes(i, ppipe::shapes_of(acts.back())));
    m.forward(i, ctx, acts.back(), out);
    acts.push_back(std::move(out));
  }
  return acts;
}

/// The backward of every layer, last first, joined or split; returns every layer's grad_in
/// (layer 0's only when `input_grad`).
std::vector<payload> run_backward(layers::sequential& m, const std::vector<payload>& acts, payload grad,
                                  bool split, bool input_grad) {
  std::vector<payload> grads(static_cast<std::size_t>(m.num_layers()));
  for (int i = m.num_layers() - 1; i >= 0; --i) {
    const auto k = static_cast<std::size_t>(i);
    payload grad_in = (i > 0 || input_grad) ? allocate(ppipe::shapes_of(acts[k])) : payload{};
    if (split) {
      m.backward_input(i, ctx, acts[k], acts[k + 1], grad, grad_in);
      m.backward_weight(i, ctx, acts[k], acts[k + 1], grad);
    } else {
      m.backward(i, ctx, acts[k], acts[k + 1], grad, grad_in);
    }
    grads[k] = grad_in;
    grad = std::move(grad_in);
  }
  return grads;
}

using support::message_of;

}  // namespace

TEST_CASE("linear gradients match finite differences of y = x W^T + b") {
  const std::size_t rows = 3, in = 4, out = 5;
  layers::linear l(static_cast<int>(in), static_cast<int>(out), 11);
  const payload x = random_payload({3, 4}, 1);
  const payload grad_out = random_payload({3, 5}, 2);  // d(loss)/dy, so loss = sum(grad_out * y)
  payload y{host_tensor(shape{3, 5})};
  payload grad_in{host_tensor(shape{3, 4})};
  l.forward(ctx, x, y);
  l.backward(ctx, x, y, grad_out, grad_in);

  std::vector<double> xd = to_double(x[0].values()), wd = to_double(l.weight()), bd = to_double(l.bias());
  const auto loss = [&] { return dot(ref_linear(xd, wd, bd, in, out), grad_out[0].values()); };
  const std::vector<double> y_ref = ref_linear(xd, wd, bd, in, out);
  for (std::size_t k = 0; k < rows * out; ++k) check_close(y[0][k], y_ref[k]);
  const std::vector<double> gx = finite_difference(xd, loss, 1e-3);
  const std::vector<double> gw = finite_difference(wd, loss, 1e-3);
  const std::vector<double> gb = finite_difference(bd, loss, 1e-3);
  for (std::size_t k = 0; k < gx.size(); ++k) check_close(grad_in[0][k], gx[k]);
  for (std::size_t k = 0; k < gw.size(); ++k) check_close(l.grad_weight()[k], gw[k]);
  for (std::size_t k = 0; k < gb.size(); ++k) check_close(l.grad_bias()[k], gb[k]);
}

TEST_CASE("relu, tanh and gelu gradients match finite differences") {
  for (const auto kind : {layers::activation_kind::relu, layers::activation_kind::tanh, layers::activation_kind::gelu}) {
    CAPTURE(layers::to_string(kind));
    const layers::activation act(kind);
    payload x = random_payload({4, 6}, 3);
    for (float& v : x[0].values()) v = v < 0 ? 2 * v - 0.05f : 2 * v + 0.05f;  // keep relu away from its kink
    const payload grad_out = random_payload({4, 6}, 4);
    payload y{host_tensor(shape{4, 6})};
    payload grad_in{host_tensor(shape{4, 6})};
    act.forward(ctx, x, y);
    act.backward(ctx, x, y, grad_out, grad_in);
    std::vector<double> xd = to_double(x[0].values());
    const auto loss = [&] {
      double s = 0;
      for (std::size_t k = 0; k < xd.size(); ++k) {
        s += ref_activation(kind, xd[k]) * static_cast<double>(grad_out[0][k]);
      }
      return s;
    };
    const std::vector<double> gx = finite_difference(xd, loss, 1e-6);
    for (std::size_t k = 0; k < gx.size(); ++k) {
      check_close(y[0][k], ref_activation(kind, xd[k]));
      check_close(grad_in[0][k], gx[k]);
    }
  }
}

TEST_CASE("mse loss and its scaled gradient match finite differences") {
  const payload output = random_payload({4, 3}, 5), target = random_payload({4, 3}, 6);
  payload grad{host_tensor(shape{4, 3})};
  const double loss = layers::mse_loss{}(output, target, grad, 0.25);
  std::vector<double> od = to_double(output[0].values());
  const auto ref_loss = [&] {
    double s = 0;
    for (std::size_t k = 0; k < od.size(); ++k) s += std::pow(od[k] - static_cast<double>(target[0][k]), 2);
    return s / static_cast<double>(od.size());
  };
  CHECK(loss == Approx(ref_loss()).epsilon(1e-12));
  const std::vector<double> g = finite_difference(od, ref_loss, 1e-4);
  for (std::size_t k = 0; k < g.size(); ++k) check_close(grad[0][k], 0.25 * g[k]);
  payload allocated;  // an empty grad_output is allocated in the output's shapes
  CHECK(layers::mse_loss{}(output, target, allocated, 0.25) == loss);
  CHECK(same_bits(allocated.at(0).values(), grad[0].values()));
}

TEST_CASE("a tanh mlp with the mse loss matches finite differences of a double-precision reference") {
  layers::sequential m = layers::sequential::mlp({3, 5, 4, 2}, 21, layers::activation_kind::tanh);
  const payload x = random_payload({4, 3}, 7), target = random_payload({4, 2}, 8);
  const std::vector<payload> acts = run_forward(m, x);
  payload grad{host_tensor(shape{4, 2})};
  layers::mse_loss{}(acts.back(), target, grad, 1.0);
  run_backward(m, acts, grad, false, false);

  std::vector<std::vector<double>> params;
  for (const auto p : m.parameters()) params.push_back(to_double(p));
  const auto loss = [&] {
    std::vector<double> h = to_double(x[0].values());
    std::size_t p = 0;
    for (int i = 0; i < m.num_layers(); ++i) {
      if (const auto* l = std::get_if<layers::linear>(&m.at(i))) {
        h = ref_linear(h, params[p], params[p + 1], static_cast<std::size_t>(l->in_features()),
                       static_cast<std::size_t>(l->out_features()));
        p += 2;
      } else {
        for (double& v : h) v = std::tanh(v);
      }
    }
    double s = 0;
    for (std::size_t k = 0; k < h.size(); ++k) s += std::pow(h[k] - static_cast<double>(target[0][k]), 2);
    return s / static_cast<double>(h.size());
  };
  const auto grads = m.gradients();
  REQUIRE(grads.size() == params.size());
  for (std::size_t p = 0; p < params.size(); ++p) {
    const std::vector<double> numeric = finite_difference(params[p], loss, 1e-6);
    for (std::size_t k = 0; k < numeric.size(); ++k) check_close(grads[p][k], numeric[k]);
  }
}

TEST_CASE("backward_input then backward_weight gives the bits of backward") {
  for (const auto kind : {layers::activation_kind::relu, layers::activation_kind::tanh, layers::activation_kind::gelu}) {
    layers::sequential joined = layers::sequential::mlp({6, 9, 7, 3}, 5, kind);
    layers::sequential split = joined;
    const payload x = random_payload({5, 6}, 9), grad = random_payload({5, 3}, 10);
    const std::vector<payload> acts = run_forward(joined, x);
    const std::vector<payload> a = run_backward(joined, acts, grad, false, true);
    const std::vector<payload> b = run_backward(split, acts, grad, true, true);
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(same_bits(a[i].at(0).values(), b[i].at(0).values()));
    const auto ga = joined.gradients(), gb = split.gradients();
    for (std::size_t p = 0; p < ga.size(); ++p) CHECK(same_bits(ga[p], gb[p]));
  }
}

TEST_CASE("weight gradients accumulate over calls; grad_in is overwritten, or skipped when empty") {
  const layers::linear fresh(4, 3, 12);
  const payload x1 = random_payload({2, 4}, 13), g1 = random_payload({2, 3}, 14);
  const payload x2 = random_payload({5, 4}, 15), g2 = random_payload({5, 3}, 16);
  layers::linear both = fresh, first = fresh, second = fresh;
  both.backward_weight(ctx, x1, {}, g1);
  both.backward_weight(ctx, x2, {}, g2);
  first.backward_weight(ctx, x1, {}, g1);
  second.backward_weight(ctx, x2, {}, g2);
  for (std::size_t k = 0; k < both.grad_weight().size(); ++k) {
    CHECK(both.grad_weight()[k] == first.grad_weight()[k] + second.grad_weight()[k]);
  }
  for (std::size_t k = 0; k < both.grad_bias().size(); ++k) {
    CHECK(both.grad_bias()[k] == first.grad_bias()[k] + second.grad_bias()[k]);
  }
  CHECK_FALSE(same_bits(both.grad_weight(), second.grad_weight()));

  layers::linear skipped = fresh;
  payload empty;
  skipped.backward(ctx, x1, {}, g1, empty);
  CHECK(empty.empty());
  CHECK(same_bits(skipped.grad_weight(), first.grad_weight()));
  CHECK(same_bits(skipped.grad_bias(), first.grad_bias()));
  layers::activation(layers::activation_kind::relu).backward(ctx, x1, x1, x1, empty);
  CHECK(empty.empty());

  payload clean{host_tensor(shape{2, 4})};
  payload dirty{host_tensor(shape{2, 4}, std::vector<float>(8, 7.0f))};
  fresh.backward_input(ctx, x1, {}, g1, clean);
  fresh.backward_input(ctx, x1, {}, g1, dirty);
  CHECK(same_bits(clean[0].values(), dirty[0].values()));
}

TEST_CASE("output_shapes chains through the model and names the layer and shapes it cannot take") {
  const layers::sequential m = layers::sequential::mlp({8, 16, 4}, 1);
  REQUIRE(m.num_layers() == 3);
  CHECK(m.output_shapes(0, {{8, 8}}) == std::vector<shape>{{8, 16}});
  CHECK(m.output_shapes(1, {{8, 16}}) == std::vector<shape>{{8, 16}});
  CHECK(m.output_shapes(2, {{8, 16}}) == std::vector<shape>{{8, 4}});

  const std::string wrong_width = message_of([&] { (void)m.output_shapes(2, {{8, 32}}); });
  CHECK_THAT(wrong_width, contains("layer 2 (linear 16->4) takes one tensor [rows, 16] but got [8, 32]"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(0, {{8, 8}, {8}}); }), contains("got [8, 8], [8]"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(0, {{8}}); }), contains("layer 0 (linear 8->16)"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(1, {}); }), contains("layer 1 (relu) takes one or more"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(3, {{8, 16}}); }), contains("layer 3 is outside the model's 3"));

  layers::sequential copy = m;
  payload bad_out{host_tensor(shape{8, 5})};
  CHECK_THAT(message_of([&] { copy.forward(0, ctx, random_payload({8, 8}, 1), bad_out); }),
             contains("`out` has shapes [8, 5] but needs one tensor [8, 16]"));
}

TEST_CASE("mse loss rejects a target of another shape, naming both") {
  payload grad;
  const std::string msg = message_of(
      [&] { (void)layers::mse_loss{}(random_payload({4, 2}, 1), random_payload({4, 3}, 2), grad, 1.0); });
  CHECK_THAT(msg, contains("[4, 2]"));
  CHECK_THAT(msg, contains("[4, 3]"));
}

TEST_CASE("mlp is the same for a seed, differs between seeds and layers, and stays in its bound") {
  const layers::sequential ma = layers::sequential::mlp({5, 5, 5}, 42), mb = layers::sequential::mlp({5, 5, 5}, 42),
                           mc = layers::sequential::mlp({5, 5, 5}, 43);
  const auto a = ma.parameters(), b = mb.parameters(), c = mc.parameters();  // spans into the models
  REQUIRE(a.size() == 4);
  for (std::size_t p = 0; p < a.size(); ++p) {
    CHECK(same_bits(a[p], b[p]));
    CHECK_FALSE(same_bits(a[p], c[p]));
  }
  CHECK_FALSE(same_bits(a[0], a[2]));  // both 5->5 linears, seeded apart
  const float bound = 1.0f / std::sqrt(5.0f);
  float lo = 1, hi = -1;
  for (const float w : a[0]) lo = std::min(lo, w), hi = std::max(hi, w);
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(lo < -bound / 2);
  CHECK(hi > bound / 2);
  CHECK_THAT(message_of([] { (void)layers::sequential::mlp({4}, 1); }), contains("at least 2 widths"));
  CHECK_THAT(message_of([] { (void)layers::linear(0, 3, 1); }), contains("linear 0->3"));
}

TEST_CASE("costs scale with the layer and the rows, and the partitioner takes them") {
  const layers::sequential m = layers::sequential::mlp({16, 256, 256, 4}, 1);
  const ppipe::layer_cost l0 = m.cost(0);
  CHECK(l0.forward == 2.0 * 16 * 256);
  CHECK(l0.backward == 2 * l0.forward);
  // W and b, their gradients, and on the loops a call's gradient
  CHECK(l0.parameter_memory == (ppipe::layers::uses_cblas ? 2.0 : 3.0) * (16 * 256 + 256) * 4);
  CHECK(l0.activation_memory == 256.0 * 4);
  CHECK(m.cost(0, 8).forward == 8 * l0.forward);
  CHECK(m.cost(0, 8).parameter_memory == l0.parameter_memory);
  CHECK(m.cost(1).forward == 256.0);
  CHECK(m.cost(1).parameter_memory == 0.0);
  // An activation before any linear takes the width of the linear after it.
  const layers::sequential built({layers::activation(layers::activation_kind::tanh), layers::linear(5, 3, 1)});
  CHECK(built.cost(0).forward == 5.0);
  CHECK(layers::sequential().add(layers::activation()).cost(0).forward == 1.0);

  std::vector<ppipe::layer_cost> costs;
  for (int i = 0; i < m.num_layers(); ++i) costs.push_back(m.cost(i));
  const auto pb = ppipe::partition_problem::for_schedule(ppipe::make_schedule("1f1b", {2, 4, 1}), costs);
  // Layer 2 (256x256) outweighs everything else, so it goes with the light tail.
  CHECK(ppipe::plan_partition(ppipe::partitioners::balanced{}, pb).split.sizes() == std::vector<int>{2, 3});
}

TEST_CASE("sgd updates and zeroes only the layers it is given") {
  layers::sequential m = layers::sequential::mlp({3, 4, 4, 2}, 17);  // linear relu linear relu linear
  const payload x = random_payload({6, 3}, 18);
  const std::vector<payload> acts = run_forward(m, x);
  run_backward(m, acts, random_payload({6, 2}, 19), false, false);
  const layers::sequential before = m;

  layers::sgd(0.5f).step(m, 2, 5);
  const auto p0 = before.parameters(2, 5), g0 = before.gradients(2, 5), p1 = m.parameters(2, 5);
  for (std::size_t p = 0; p < p0.size(); ++p) {
    for (std::size_t k = 0; k < p0[p].size(); ++k) {
      CHECK(p1[p][k] == p0[p][k] - 0.5f * g0[p][k]);
      CHECK(m.gradients(2, 5)[p][k] == 0.0f);
    }
  }
  CHECK_FALSE(same_bits(p0[0], p1[0]));
  for (std::size_t p = 0; p < 2; ++p) {
    CHECK(same_bits(m.parameters(0, 2)[p], before.parameters(0, 2)[p]));
    CHECK(same_bits(m.gradients(0, 2)[p], before.gradients(0, 2)[p]));
  }

  const layers::sgd opt(0.5f);
  const ppipe::optimizer_hook hook = [&](const ppipe::stage_info& s) { opt.step(m, s); };
  hook(ppipe::stage_info{0, 0, 0, 2});
  const auto zeroed = m.gradients(0, 2);
  for (const float g : zeroed[0]) CHECK(g == 0.0f);
  CHECK_THAT(message_of([&] { opt.step(m, 2, 9); }), contains("for_each_parameter(2, 9) is not a range of the model's 5 layers"));
  CHECK_THAT(message_of([] { layers::sgd(-1.0f); }), contains("-1"));
}

TEST_CASE("an mlp learns a smooth function with sgd, the same way every run") {
  const auto train = [] {
    layers::sequential m = layers::sequential::mlp({2, 16, 1}, 3, layers::activation_kind::tanh);
    payload x = random_payload({64, 2}, 20);
    payload target{host_tensor(shape{64, 1})};
    for (std::size_t r = 0; r < 64; ++r) target[0][r] = std::sin(2 * x[0][2 * r]) * x[0][2 * r + 1];
    std::vector<double> losses;
    for (int step = 0; step < 300; ++step) {
      const std::vector<payload> acts = run_forward(m, x);
      payload grad{host_tensor(shape{64, 1})};
      losses.push_back(layers::mse_loss{}(acts.back(), target, grad, 1.0));
      run_backward(m, acts, grad, false, false);
      layers::sgd(0.2f).step(m, 0, m.num_layers());
    }
    return losses;
  };
  const std::vector<double> a = train(), b = train();
  CHECK(a.back() < 0.05 * a.front());  // 0.287 -> 0.0019 when written
  CHECK(a == b);
}

namespace {
// Layer normalization of one row in double, with gamma and beta.
std::vector<double> ref_layer_norm(const std::vector<double>& x, const std::vector<double>& g, const std::vector<double>& b,
                                   std::size_t width, double eps) {
  std::vector<double> y(x.size());
  for (std::size_t r = 0; r < x.size() / width; ++r) {
    double mean = 0, var = 0;
    for (std::size_t k = 0; k < width; ++k) mean += x[r * width + k];
    mean /= static_cast<double>(width);
    for (std::size_t k = 0; k < width; ++k) var += (x[r * width + k] - mean) * (x[r * width + k] - mean);
    var /= static_cast<double>(width);
    for (std::size_t k = 0; k < width; ++k) {
      y[r * width + k] = (x[r * width + k] - mean) / std::sqrt(var + eps) * g[k] + b[k];
    }
  }
  return y;
}
}  // namespace

TEST_CASE("layer_norm: forward and gradients match a double reference and finite differences") {
  constexpr std::size_t rows = 3, width = 7;
  layers::layer_norm l(static_cast<int>(width));
  CHECK(l.describe() == "layer_norm 7");
  // Away from the defaults, so that gamma and beta matter.
  const payload start = random_payload({2, width}, 21);
  for (std::size_t k = 0; k < width; ++k) {
    l.gamma()[k] = 1.0f + start[0][k];
    l.beta()[k] = start[0][width + k];
  }
  const payload x = random_payload({rows, width}, 22);
  const payload grad_out = random_payload({rows, width}, 23);
  payload y{host_tensor(shape{rows, width})};
  payload grad_in{host_tensor(shape{rows, width})};
  l.forward(ctx, x, y);
  l.backward(ctx, x, y, grad_out, grad_in);

  std::vector<double> xd = to_double(x[0].values());
  std::vector<double> gd = to_double(l.gamma());
  std::vector<double> bd = to_double(l.beta());
  const auto loss = [&] {
    const std::vector<double> yd = ref_layer_norm(xd, gd, bd, width, 1e-5);
    return dot(yd, grad_out[0].values());
  };
  const std::vector<double> y_ref = ref_layer_norm(xd, gd, bd, width, 1e-5);
  for (std::size_t k = 0; k < rows * width; ++k) check_close(y[0][k], y_ref[k]);
  const std::vector<double> gx = finite_difference(xd, loss, 1e-4);
  const std::vector<double> gg = finite_difference(gd, loss, 1e-4);
  const std::vector<double> gb = finite_difference(bd, loss, 1e-4);
  for (std::size_t k = 0; k < gx.size(); ++k) check_close(grad_in[0][k], gx[k]);
  for (std::size_t k = 0; k < gg.size(); ++k) check_close(l.grad_gamma()[k], gg[k]);
  for (std::size_t k = 0; k < gb.size(); ++k) check_close(l.grad_beta()[k], gb[k]);
}

TEST_CASE("layer_norm: split backward gives backward's bits; gradients add up over calls") {
  const layers::layer_norm fresh(5);
  const payload x1 = random_payload({2, 5}, 31), g1 = random_payload({2, 5}, 32);
  const payload x2 = random_payload({4, 5}, 33), g2 = random_payload({4, 5}, 34);
  layers::layer_norm joined = fresh, split = fresh, first = fresh, second = fresh;
  payload a{host_tensor(shape{2, 5})}, b{host_tensor(shape{2, 5})};
  joined.backward(ctx, x1, {}, g1, a);
  split.backward_input(ctx, x1, {}, g1, b);
  split.backward_weight(ctx, x1, {}, g1);
  CHECK(same_bits(a[0].values(), b[0].values()));
  CHECK(same_bits(joined.grad_gamma(), split.grad_gamma()));
  CHECK(same_bits(joined.grad_beta(), split.grad_beta()));

  joined.backward_weight(ctx, x2, {}, g2);
  first.backward_weight(ctx, x1, {}, g1);
  second.backward_weight(ctx, x2, {}, g2);
  for (std::size_t k = 0; k < 5; ++k) {
    CHECK(joined.grad_gamma()[k] == first.grad_gamma()[k] + second.grad_gamma()[k]);
    CHECK(joined.grad_beta()[k] == first.grad_beta()[k] + second.grad_beta()[k]);
  }
  payload empty;
  joined.backward_input(ctx, x1, {}, g1, empty);  // no input gradient wanted: nothing written
  CHECK(empty.empty());
  joined.zero_grad();
  CHECK(joined.grad_gamma()[0] == 0.0f);
}

TEST_CASE("layer_norm: bad widths and shapes are refused, naming them") {
  CHECK_THAT(message_of([] { layers::layer_norm l(0); }), contains("layer_norm of width 0") && contains("width >= 1"));
  const layers::layer_norm l(4);
  CHECK_THAT(message_of([&] { (void)l.output_shapes({shape{3, 5}}); }),
             contains("layer_norm 4 takes one tensor [rows, 4] but got [3, 5]"));
  payload x = random_payload({3, 4}, 41), y{host_tensor(shape{2, 4})};
  CHECK_THAT(message_of([&] { l.forward(ctx, x, y); }), contains("`out` has shapes [2, 4] but needs one f32 tensor [3, 4]"));
}
