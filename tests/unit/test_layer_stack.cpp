// ppipe::layer_stack beyond the backend contract (which trains toy::layered on every backend):
// dispatch through single, repeated and variant elements, what the stack offers depending on its
// layers, materialization of a range, the kit's deferred MLP, and generation through a stack of
// the kit decoder's layers.

#include "catch.hpp"
#include "error_message.hpp"

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "generation_reference.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/layers/layers.hpp"
#include "ppipe/model/layer_stack.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/zero_bubble.hpp"
#include "reference.hpp"
#include "toy_layers.hpp"

namespace {

using ppipe_test::contains;

using support::error_of;

// A layer that adds `k` to one tensor; it records its name so that dispatch can be checked.
struct add {
  float k = 1.0f;
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const {
    if (in.size() != 1) ppipe::detail::fail(ppipe::errc::invalid_argument, "add takes one tensor, not ", in.size());
    return in;
  }
  void forward(const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = in[0][i] + k;
  }
  std::string describe() const { return "add " + std::to_string(static_cast<int>(k)); }
};

// A layer with no describe(), cost() or backward: the stack then has none of them either.
struct twice {
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const { return in; }
  void forward(const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = 2.0f * in[0][i];
  }
};

using add_or_twice = std::variant<add, twice>;

// toy's affine layer with its split backward hidden: a full backward only.
struct unsplit_affine : toy::affine<1> {
  using toy::affine<1>::affine;
  void backward_input() = delete;
  void backward_weight() = delete;
};

ppipe::payload one(float v) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{1, 1})};
  p[0][0] = v;
  return p;
}

float run_all(auto& model, float x) {
  ppipe::payload cur = one(x);
  for (int l = 0; l < model.num_layers(); ++l) {
    ppipe::payload out = one(0.0f);
    model.forward(l, ppipe::host_layer_context{}, cur, out);
    cur = out;
  }
  return cur[0][0];
}

}  // namespace

TEST_CASE("layer_stack: layers count through single, repeated and variant elements, in order") {
  ppipe::layer_stack model{add{1.0f}, ppipe::repeat(3, [](int i) { return add{10.0f * static_cast<float>(i + 1)}; }),
                           std::vector<add_or_twice>{twice{}, add{5.0f}}, twice{}};
  REQUIRE(model.num_layers() == 7);
  CHECK(model.describe(0) == "add 1");
  CHECK(model.describe(3) == "add 30");
  CHECK(model.describe(4) == "layer 4");  // twice has no describe()
  CHECK(model.describe(5) == "add 5");
  // ((((x + 1 + 10 + 20 + 30) * 2) + 5) * 2
  CHECK(run_all(model, 1.0f) == ((1.0f + 61.0f) * 2.0f + 5.0f) * 2.0f);
  CHECK_THAT(error_of([&] { (void)model.describe(7); }), contains("layer 7 is outside the model's 7 layers"));
  CHECK_THAT(error_of([&] { (void)model.output_shapes(1, {}); }), contains("layer 1: add takes one tensor, not 0"));
  // A repeated run may grow before the stack is used: the count follows it.
  model.element<1>().push_back(add{100.0f});
  CHECK(model.num_layers() == 8);
}

TEST_CASE("layer_stack: the stack offers what all its layers offer, and no more") {
  using forward_only = ppipe::layer_stack<add, twice>;
  STATIC_REQUIRE(ppipe::model<forward_only>);
  STATIC_REQUIRE_FALSE(ppipe::trainable_model<forward_only>);
  STATIC_REQUIRE_FALSE(ppipe::model_has_costs<forward_only>);

  using toy_stack = toy::layered;
  STATIC_REQUIRE(ppipe::trainable_model<toy_stack>);
  STATIC_REQUIRE(ppipe::model_has_split_backward<toy_stack, ppipe::host_tensor, ppipe::host_layer_context>);
  STATIC_REQUIRE(ppipe::model_has_parameters<toy_stack>);
  // One layer with a full backward only: the stack has no split backward.
  using mixed = ppipe::layer_stack<toy::affine<0>, unsplit_affine>;
  STATIC_REQUIRE(ppipe::trainable_model<mixed>);
  STATIC_REQUIRE_FALSE(ppipe::model_has_split_backward<mixed, ppipe::host_tensor, ppipe::host_layer_context>);

  using kit = ppipe::layers::sequential;
  STATIC_REQUIRE(ppipe::model_has_split_backward<kit, ppipe::host_tensor, ppipe::host_layer_context>);
  STATIC_REQUIRE(ppipe::model_has_materialize<kit, ppipe::host_layer_context>);
  STATIC_REQUIRE(ppipe::model_has_costs<kit>);
}

TEST_CASE("layer_stack: for_each_parameter walks a range of layers, each layer's parameters in order") {
  toy::layered model(5);
  std::vector<float> seen;
  model.for_each_parameter(1, 3, [&](ppipe::tensor_view value, ppipe::tensor_view) { seen.push_back(value.as<float>()[0]); });
  REQUIRE(seen.size() == 4);
  CHECK(seen[0] == model.a()[1]);
  CHECK(seen[1] == model.b()[1]);
  CHECK(seen[2] == model.a()[2]);
  CHECK(seen[3] == model.b()[2]);
  CHECK_THAT(error_of([&] { model.for_each_parameter(2, 6, [](ppipe::tensor_view, ppipe::tensor_view) {}); }),
             contains("for_each_parameter(2, 6) is not a range of the model's 5 layers"));
}

TEST_CASE("layer_stack: materialize gives weights to the layers of a range only") {
  using ppipe::layers::activation_kind;
  auto model = ppipe::layers::sequential::mlp({4, 8, 8, 2}, 3, activation_kind::relu, ppipe::layers::deferred);
  const auto eager = ppipe::layers::sequential::mlp({4, 8, 8, 2}, 3);
  REQUIRE(model.num_layers() == 5);
  CHECK(model.parameters().empty() == false);  // spans exist, empty until materialized
  for (const auto& p : model.parameters()) CHECK(p.empty());
  // Costs, for the partitioner, are known before any weight is.
  CHECK(model.cost(0).parameter_memory == eager.cost(0).parameter_memory);

  model.materialize(0, 2, ppipe::host_layer_context{});
  const auto got = model.parameters(0, 2);
  const auto want = eager.parameters(0, 2);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK(std::vector<float>(got[i].begin(), got[i].end()) == std::vector<float>(want[i].begin(), want[i].end()));
  }
  for (const auto& p : model.parameters(2, 5)) CHECK(p.empty());
  ppipe::payload in{ppipe::host_tensor(ppipe::shape{1, 8})};
  ppipe::payload out{ppipe::host_tensor(ppipe::shape{1, 8})};
  CHECK_THAT(error_of([&] { model.forward(2, ppipe::host_layer_context{}, in, out); }),
             contains("linear 8->8 was made deferred and holds no weights in this process"));
}

TEST_CASE("layer_stack: a deferred MLP trains through a pipeline bitwise as the eager one") {
  using ppipe::layers::activation_kind;
  auto piped = ppipe::layers::sequential::mlp({6, 16, 16, 16, 3}, 11, activation_kind::tanh, ppipe::layers::deferred);
  auto plain = ppipe::layers::sequential::mlp({6, 16, 16, 16, 3}, 11, activation_kind::tanh);
  ppipe::pipeline_options o;
  o.ranks = 3;
  o.microbatches = 4;
  ppipe::layers::sgd sgd(0.05f);
  ppipe::pipeline<ppipe::layers::sequential, ppipe::schedules::zb_h1> pipe(
      piped, o, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& s) { sgd.step(piped, s); });
  for (int step = 0; step < 3; ++step) {
    ppipe::payload x{ppipe::host_tensor(ppipe::shape{8, 6})};
    ppipe::payload y{ppipe::host_tensor(ppipe::shape{8, 3})};
    for (std::size_t i = 0; i < x[0].size(); ++i) x[0][i] = 0.01f * static_cast<float>(i + step);
    for (std::size_t i = 0; i < y[0].size(); ++i) y[0][i] = 0.1f * static_cast<float>(i % 5);
    const double got = pipe.train_step(x, y);
    const double want = reference::accumulate(plain, x, y, 4, ppipe::layers::mse_loss{});
    sgd.step(plain, ppipe::stage_info{0, 0, 0, plain.num_layers()});
    INFO("step " << step);
    CHECK(got == want);
  }
  const auto got = piped.parameters();
  const auto want = plain.parameters();
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK(std::vector<float>(got[i].begin(), got[i].end()) == std::vector<float>(want[i].begin(), want[i].end()));
  }
}

TEST_CASE("layer_stack: a stack of the decoder's layers keeps their state and generates the decoder's tokens") {
  namespace layers = ppipe::layers;
  STATIC_REQUIRE_FALSE(ppipe::model_has_state<ppipe::layer_stack<layers::embedding, add>>);
  STATIC_REQUIRE(ppipe::generative_model<layers::decoder_stack>);

  const layers::transformer_config cfg{.vocab = 29, .d_model = 12, .heads = 3, .d_ff = 20, .blocks = 2, .seed = 5};
  // Made one statement at a time, in the decoder's order, so that they draw the decoder's seeds.
  std::uint64_t seeds = cfg.seed;
  layers::embedding embed(cfg, seeds);
  std::vector<layers::decoder_block_layer> blocks;
  for (int b = 0; b < cfg.blocks; ++b) {
    blocks.emplace_back(std::in_place_type<layers::attention>, cfg, b, seeds);
    blocks.emplace_back(std::in_place_type<layers::mlp_block>, cfg, b, seeds);
  }
  layers::lm_head head(cfg, seeds);
  ppipe::layer_stack stack(std::move(embed), std::move(blocks), std::move(head));
  const layers::decoder model(cfg);

  REQUIRE(stack.num_layers() == 6);
  CHECK(stack.state_shapes(3, 7) == std::vector<ppipe::shape>{{7, 12}, {7, 12}});
  for (const int layer : {0, 2, 4, 5}) CHECK(stack.state_shapes(layer, 7).empty());
  CHECK_THAT(error_of([&] { (void)stack.state_shapes(0, -1); }), contains("state capacity -1 for layer 0 is negative"));
  CHECK_THAT(error_of([&] { (void)stack.state_shapes(6, 1); }), contains("layer 6 is outside the model's 6 layers"));

  std::vector<ppipe::generation_request> reqs;
  for (int i = 0; i < 5; ++i) reqs.push_back({{1 + i, 7, (3 * i) % 29}, 3 + i});
  std::vector<std::vector<int>> expected;
  for (const auto& q : reqs) {
    expected.push_back(reference::generate(model, q.prompt, q.max_new_tokens));
    CHECK(reference::generate(stack, q.prompt, q.max_new_tokens) == expected.back());
  }
  ppipe::pipeline_options o;
  o.ranks = 2;
  o.microbatches = 2;
  ppipe::pipeline<decltype(stack)> pipe(stack, o);
  ppipe::generation_options g;
  g.sampler = layers::greedy;
  CHECK(pipe.generate(reqs, g).tokens == expected);
}

namespace {
struct computes_now {
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const { return in; }
  void forward(const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) { out = in; }
};
struct launches_kernels : computes_now {
  static constexpr bool enqueues_work = true;
};
}  // namespace

TEST_CASE("layer_stack: enqueues its own work when its layers do", "[layer_stack]") {
  using gpu_like = ppipe::layer_stack<launches_kernels, std::vector<launches_kernels>>;
  using cpu_like = ppipe::layer_stack<computes_now, std::vector<computes_now>>;
  static_assert(ppipe::enqueues_own_work<launches_kernels>);
  static_assert(!ppipe::enqueues_own_work<computes_now>);
  static_assert(ppipe::enqueues_own_work<gpu_like>);
  static_assert(!ppipe::enqueues_own_work<cpu_like>);
  gpu_like stack(launches_kernels{}, std::vector<launches_kernels>(2));
  CHECK(stack.num_layers() == 3);
}

TEST_CASE("layer_stack: linear, layer norm and GELU train through 1F1B and ZB-H1 bitwise as unpipelined") {
  namespace layers = ppipe::layers;
  using block = std::variant<layers::linear, layers::layer_norm, layers::activation>;
  using net = ppipe::layer_stack<std::vector<block>>;
  const auto make = [] {
    const layers::activation gelu(layers::activation_kind::gelu);
    return net(std::vector<block>{layers::linear(6, 16, 1), layers::layer_norm(16), gelu, layers::linear(16, 16, 2),
                                  layers::layer_norm(16), gelu, layers::linear(16, 3, 3)});
  };
  const auto parameters = [](net& m) {
    std::vector<std::vector<float>> out;
    m.for_each_parameter(0, m.num_layers(), [&](ppipe::tensor_view v, ppipe::tensor_view) {
      const auto values = v.as<float>();
      out.emplace_back(values.begin(), values.end());
    });
    return out;
  };
  const auto train = [&]<class Schedule>(Schedule) {
    INFO(Schedule::name);
    net piped = make();
    net plain = make();
    ppipe::pipeline_options o;
    o.ranks = 3;
    o.microbatches = 4;
    const layers::sgd sgd(0.05f);
    ppipe::pipeline<net, Schedule> pipe(piped, o, layers::mse_loss{},
                                        [&](const ppipe::stage_info& s) { sgd.step(piped, s); });
    for (int step = 0; step < 3; ++step) {
      ppipe::payload x{ppipe::host_tensor(ppipe::shape{9, 6})};
      ppipe::payload y{ppipe::host_tensor(ppipe::shape{9, 3})};
      for (std::size_t i = 0; i < x[0].size(); ++i) x[0][i] = 0.05f * static_cast<float>((i * 7 + step) % 11) - 0.2f;
      for (std::size_t i = 0; i < y[0].size(); ++i) y[0][i] = 0.1f * static_cast<float>(i % 5);
      const double got = pipe.train_step(x, y);
      const double want = reference::accumulate(plain, x, y, 4, layers::mse_loss{});
      sgd.step(plain, 0, plain.num_layers());
      INFO("step " << step);
      CHECK(got == want);
    }
    CHECK(parameters(piped) == parameters(plain));
  };
  train(ppipe::schedules::one_f_one_b{});
  train(ppipe::schedules::zb_h1{});
}
