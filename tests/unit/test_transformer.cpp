// The layer kit's decoder: shapes, seeding, and the bits that token generation relies on. A row's
// logits must not depend on whether its keys came from the cache, on how its prompt was split, or
// on which other sequences shared its batch; reference::generate, the oracle of pipelined
// generation, must agree with greedy decoding by the cacheless forward.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch.hpp>

#include "error_message.hpp"
#include "float_bits.hpp"
#include <generation_reference.hpp>
#include <ppipe/inference/generative_model.hpp>
#include <ppipe/layers/layers.hpp>

using ppipe::host_tensor;
using ppipe::payload;
using ppipe::shape;
using ppipe_test::contains;
namespace layers = ppipe::layers;

static_assert(ppipe::generative_model<layers::decoder>);
static_assert(ppipe::model<layers::decoder>);
static_assert(ppipe::model_has_costs<layers::decoder>);

namespace {

using support::same_bits;

using view = ppipe::sequence_view<host_tensor>;

/// Small, with widths that are not multiples of 8 in the second, so the dot products' tails run.
layers::transformer_config small_config(int variant) {
  if (variant == 0) return {50, 32, 4, 48, 2, 64, 7};
  return {37, 36, 3, 20, 3, 64, 11};
}

payload token_payload(const std::vector<int>& tokens) {
  std::vector<std::int32_t> ids(tokens.begin(), tokens.end());
  return {host_tensor(shape({static_cast<std::int64_t>(tokens.size())}, ppipe::dtype::i32), std::move(ids))};
}

payload zeros(const std::vector<shape>& shapes) {
  payload p;
  for (const shape& s : shapes) p.emplace_back(s);
  return p;
}

/// Every layer of `m` with the plain (cacheless) forward: `tokens` as one sequence from position 0.
payload plain_logits(const layers::decoder& m, const std::vector<int>& tokens) {
  payload x = token_payload(tokens);
  const ppipe::layer_context ctx{0, 0, ppipe::pass_mode::inference};
  for (int layer = 0; layer < m.num_layers(); ++layer) {
    payload out = zeros(m.output_shapes(layer, ppipe::shapes_of(x)));
    m.forward(layer, ctx, x, out);
    x = std::move(out);
  }
  return x;
}

/// One sequence's state for every layer of `m`, zero-filled.
std::vector<payload> new_state(const layers::decoder& m, int capacity) {
  std::vector<payload> out;
  for (int layer = 0; layer < m.num_layers(); ++layer) out.push_back(zeros(m.state_shapes(layer, capacity)));
  return out;
}

/// A sequence's part of a generation batch: its new tokens, their first position, its state.
struct part {
  std::vector<int> tokens;
  int position = 0;
  std::vector<payload>* state = nullptr;
};

/// Every layer of `m` with the generation forward over `parts` batched in one call per layer.
payload generation_logits(const layers::decoder& m, const std::vector<part>& parts) {
  std::vector<int> all;
  for (const part& p : parts) all.insert(all.end(), p.tokens.begin(), p.tokens.end());
  payload x = token_payload(all);
  for (int layer = 0; layer < m.num_layers(); ++layer) {
    std::vector<view> views;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      views.push_back({static_cast<int>(i), parts[i].position, static_cast<int>(parts[i].tokens.size()),
                       &(*parts[i].state)[static_cast<std::size_t>(layer)]});
    }
    ppipe::generation_context<host_tensor> ctx;
    ctx.mode = ppipe::pass_mode::inference;
    ctx.sequences = views;
    payload out = zeros(m.output_shapes(layer, ppipe::shapes_of(x)));
    m.forward(layer, ctx, x, out);
    x = std::move(out);
  }
  return x;
}

/// Row `row` of out[0].
std::span<const float> row_of(const payload& p, std::int64_t row) {
  const auto width = static_cast<std::size_t>(p[0].shape()[1]);
  return p[0].values().subspan(static_cast<std::size_t>(row) * width, width);
}

bool same_state(const std::vector<payload>& a, const std::vector<payload>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t l = 0; l < a.size(); ++l) {
    if (a[l].size() != b[l].size()) return false;
    for (std::size_t t = 0; t < a[l].size(); ++t) {
      if (a[l][t].shape() != b[l][t].shape() || !same_bits(a[l][t].values(), b[l][t].values())) return false;
    }
  }
  return true;
}

using support::message_of;

}  // namespace

TEST_CASE("decoder: layer count, output shapes and state shapes") {
  const layers::decoder m;  // the default config: vocab 64, d_model 32, 2 blocks
  REQUIRE(m.num_layers() == 6);
  CHECK(layers::decoder({.blocks = 3}).num_layers() == 8);
  CHECK(m.config().d_model == 32);
  CHECK(m.output_shapes(0, {shape({5}, ppipe::dtype::i32)}) == std::vector<shape>{{5, 32}});
  for (int layer = 1; layer <= 4; ++layer) CHECK(m.output_shapes(layer, {{5, 32}}) == std::vector<shape>{{5, 32}});
  CHECK(m.output_shapes(5, {{5, 32}}) == std::vector<shape>{{5, 64}});
  CHECK(m.describe(0) == "embedding");
  CHECK(m.describe(3) == "block 1 attention");
  CHECK(m.describe(4) == "block 1 mlp");
  CHECK(m.describe(5) == "head");

  for (const int layer : {1, 3}) CHECK(m.state_shapes(layer, 10) == std::vector<shape>{{10, 32}, {10, 32}});
  for (const int layer : {0, 2, 4, 5}) CHECK(m.state_shapes(layer, 10).empty());
  CHECK(ppipe::detail::state_bytes<layers::decoder, host_tensor>(m, 0, 6, 10) == 4 * 10 * 32 * sizeof(float));

  CHECK_THAT(message_of([&] { (void)m.output_shapes(0, {{5, 1}}); }),
             contains("layer 0 (embedding) takes one i32 tensor [rows] of token ids but got [5, 1]"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(0, {{5}}); }), contains("token ids but got [5];"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(3, {{5, 16}}); }),
             contains("layer 3 (block 1 attention) takes one tensor [rows, 32] but got [5, 16]"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(5, {{5, 32}, {5}}); }), contains("got [5, 32], [5]"));
  CHECK_THAT(message_of([&] { (void)m.output_shapes(6, {{5, 32}}); }), contains("layer 6 is outside the model's 6"));
  CHECK_THAT(message_of([&] { (void)m.state_shapes(-1, 4); }), contains("layer -1 is outside"));

  const ppipe::layer_context ctx{};
  payload bad_out{host_tensor(shape{3, 31})};
  CHECK_THAT(message_of([&] { m.forward(0, ctx, token_payload({1, 2, 3}), bad_out); }),
             contains("`out` has shapes [3, 31] but needs [3, 32]"));
}

TEST_CASE("decoder: the config is checked, naming the value and the fix") {
  CHECK_THAT(message_of([] { layers::decoder({.heads = 0}); }),
             contains("transformer_config.heads is 0; give heads >= 1"));
  CHECK_THAT(message_of([] { layers::decoder({.vocab = -3}); }), contains("vocab is -3"));
  CHECK_THAT(message_of([] { layers::decoder({.blocks = 0}); }), contains("blocks is 0"));
  CHECK_THAT(message_of([] { layers::decoder({.max_positions = 0}); }), contains("max_positions is 0"));
  CHECK_THAT(message_of([] { layers::decoder({.d_model = 30, .heads = 4}); }),
             contains("d_model 30 is not a multiple of heads 4"));
}

TEST_CASE("decoder: the weights are a function of the seed") {
  const std::vector<int> tokens{3, 1, 4, 1, 5, 9, 2, 6};
  const payload a = plain_logits(layers::decoder({.seed = 5}), tokens);
  const payload b = plain_logits(layers::decoder({.seed = 5}), tokens);
  const payload c = plain_logits(layers::decoder({.seed = 6}), tokens);
  REQUIRE(a[0].shape() == shape{8, 64});
  CHECK(same_bits(a[0].values(), b[0].values()));
  CHECK_FALSE(same_bits(a[0].values(), c[0].values()));
  // The positions matter: the same token at two positions gives two different rows.
  CHECK_FALSE(same_bits(row_of(a, 1), row_of(a, 3)));
  for (const float v : a[0].values()) REQUIRE(std::isfinite(v));
}

TEST_CASE("decoder: a row sees the tokens up to its own and none after") {
  const layers::decoder m(small_config(0));
  const std::vector<int> a{3, 1, 4, 1, 5, 9, 2, 6};
  std::vector<int> b = a;
  b[5] = 40;
  const payload la = plain_logits(m, a), lb = plain_logits(m, b);
  for (std::int64_t r = 0; r < 5; ++r) CHECK(same_bits(row_of(la, r), row_of(lb, r)));
  for (std::int64_t r = 5; r < 8; ++r) CHECK_FALSE(same_bits(row_of(la, r), row_of(lb, r)));
}

TEST_CASE("decoder: decoding from the cache gives the cacheless forward's bits at every step") {
  const int variant = GENERATE(0, 1);
  const layers::decoder m(small_config(variant));
  std::vector<int> tokens{3, 17, 5, 30, 8};
  const int steps = 10;
  std::vector<payload> state = new_state(m, static_cast<int>(tokens.size()) + steps);

  payload logits = generation_logits(m, {{tokens, 0, &state}});
  const payload prefill_plain = plain_logits(m, tokens);
  REQUIRE(logits[0].shape() == prefill_plain[0].shape());
  CHECK(same_bits(logits[0].values(), prefill_plain[0].values()));

  for (int step = 0; step < steps; ++step) {
    const int next = layers::greedy(logits, static_cast<int>(logits[0].shape()[0]) - 1);
    const int position = static_cast<int>(tokens.size());
    tokens.push_back(next);
    logits = generation_logits(m, {{{next}, position, &state}});
    const payload plain = plain_logits(m, tokens);
    INFO("variant " << variant << ", step " << step);
    REQUIRE(logits[0].shape()[0] == 1);
    CHECK(same_bits(row_of(logits, 0), row_of(plain, position)));
  }
}

TEST_CASE("decoder: a sequence's rows have the same bits whatever else is in its batch") {
  const int variant = GENERATE(0, 1);
  const layers::decoder m(small_config(variant));
  const int capacity = 16;
  // B has 4 tokens cached and decodes one; C has 2 cached and prefills 3 more; A joins with its prompt.
  std::vector<payload> b_state = new_state(m, capacity), c_state = new_state(m, capacity);
  (void)generation_logits(m, {{{7, 2, 9, 4}, 0, &b_state}});
  (void)generation_logits(m, {{{11, 12}, 0, &c_state}});
  const part a{{1, 5, 2, 8, 3, 13}, 0, nullptr};
  const part b{{6}, 4, nullptr};
  const part c{{20, 21, 22}, 2, nullptr};

  std::vector<payload> a_alone = new_state(m, capacity), b_alone = b_state, c_alone = c_state;
  const payload la = generation_logits(m, {{a.tokens, a.position, &a_alone}});
  const payload lb = generation_logits(m, {{b.tokens, b.position, &b_alone}});
  const payload lc = generation_logits(m, {{c.tokens, c.position, &c_alone}});

  const bool b_first = GENERATE(true, false);
  std::vector<payload> a_batched = new_state(m, capacity), b_batched = b_state, c_batched = c_state;
  const std::vector<part> batch = b_first ? std::vector<part>{{b.tokens, b.position, &b_batched},
                                                               {a.tokens, a.position, &a_batched},
                                                               {c.tokens, c.position, &c_batched}}
                                          : std::vector<part>{{c.tokens, c.position, &c_batched},
                                                               {a.tokens, a.position, &a_batched},
                                                               {b.tokens, b.position, &b_batched}};
  const payload all = generation_logits(m, batch);
  REQUIRE(all[0].shape()[0] == 10);
  const std::int64_t a_at = b_first ? 1 : 3, b_at = b_first ? 0 : 9, c_at = b_first ? 7 : 0;
  INFO("variant " << variant << ", b first " << b_first);
  for (std::int64_t r = 0; r < 6; ++r) CHECK(same_bits(row_of(all, a_at + r), row_of(la, r)));
  CHECK(same_bits(row_of(all, b_at), row_of(lb, 0)));
  for (std::int64_t r = 0; r < 3; ++r) CHECK(same_bits(row_of(all, c_at + r), row_of(lc, r)));
  CHECK(same_state(a_batched, a_alone));
  CHECK(same_state(b_batched, b_alone));
  CHECK(same_state(c_batched, c_alone));
}

TEST_CASE("decoder: a prefill split into chunks gives the bits of one prefill") {
  const int variant = GENERATE(0, 1);
  const layers::decoder m(small_config(variant));
  const std::vector<int> prompt{4, 8, 15, 16, 23, 3, 1, 9, 2};
  std::vector<payload> whole = new_state(m, 12), split = new_state(m, 12);
  const payload one = generation_logits(m, {{prompt, 0, &whole}});
  const payload first = generation_logits(m, {{{prompt.begin(), prompt.begin() + 4}, 0, &split}});
  const payload second = generation_logits(m, {{{prompt.begin() + 4, prompt.end()}, 4, &split}});
  for (std::int64_t r = 0; r < 4; ++r) CHECK(same_bits(row_of(one, r), row_of(first, r)));
  for (std::int64_t r = 0; r < 5; ++r) CHECK(same_bits(row_of(one, 4 + r), row_of(second, r)));
  CHECK(same_state(whole, split));
  const payload next_whole = generation_logits(m, {{{6}, 9, &whole}});
  const payload next_split = generation_logits(m, {{{6}, 9, &split}});
  CHECK(same_bits(next_whole[0].values(), next_split[0].values()));
}

TEST_CASE("greedy picks the largest logit, the first of a tie, and rejects a bad row or shape") {
  const payload logits{host_tensor(shape{3, 5}, {0.1f, 3.0f, -1.0f, 3.0f, 2.0f,       //
                                                 -5.0f, -4.0f, -3.0f, -2.0f, -2.0f,   //
                                                 7.0f, 7.0f, 7.0f, 7.0f, 7.0f})};
  CHECK(layers::greedy(logits, 0) == 1);
  CHECK(layers::greedy(logits, 1) == 3);
  CHECK(layers::greedy(logits, 2) == 0);
  CHECK_THAT(message_of([&] { (void)layers::greedy(logits, 3); }), contains("row 3 is outside the logits' 3 rows"));
  CHECK_THAT(message_of([&] { (void)layers::greedy(logits, -1); }), contains("row -1"));
  CHECK_THAT(message_of([] { (void)layers::greedy(payload{host_tensor(shape{4})}, 0); }), contains("got [4]"));
  CHECK_THAT(message_of([] { (void)layers::greedy(payload{}, 0); }), contains("got (nothing)"));
}

TEST_CASE("decoder: bad tokens, capacities, positions and contexts are errors that name the values") {
  const layers::decoder m({.vocab = 10, .d_model = 8, .heads = 2, .d_ff = 8, .blocks = 1, .max_positions = 8});
  const ppipe::layer_context plain{};
  const auto embed = [&](const std::vector<std::int32_t>& ids) {
    const payload in{host_tensor(shape({static_cast<std::int64_t>(ids.size())}, ppipe::dtype::i32), ids)};
    payload out = zeros(m.output_shapes(0, ppipe::shapes_of(in)));
    m.forward(0, plain, in, out);
  };
  CHECK_THAT(message_of([&] { embed({1, 10}); }), contains("row 1 holds token id 10"));
  CHECK_THAT(message_of([&] { embed({-1, 2}); }), contains("row 0 holds token id -1"));
  CHECK_THAT(message_of([&] { embed({2147483647}); }), contains("token id 2147483647, which is not in [0, 10)"));
  CHECK_THAT(message_of([&] { (void)plain_logits(m, std::vector<int>(9, 1)); }),
             contains("9 rows are positions 0..8 of one sequence but the model has 8 positions"));

  // In a batch, the row is the batch's: sequence 1's first row is row 2.
  std::vector<payload> s0 = new_state(m, 8), s1 = new_state(m, 8);
  CHECK_THAT(message_of([&] { (void)generation_logits(m, {{{1, 2}, 0, &s0}, {{12}, 0, &s1}}); }),
             contains("row 2 holds token id 12"));

  std::vector<payload> small = new_state(m, 4);
  CHECK_THAT(message_of([&] { (void)generation_logits(m, {{{1, 2, 3, 4, 5}, 0, &small}}); }),
             contains("needs 5 cache rows but its state holds 4"));
  CHECK_THAT(message_of([&] { (void)generation_logits(m, {{{1, 2, 3}, 6, &s0}}); }),
             contains("at position 6 with 3 new rows needs 9 positions but the model has 8"));

  // Nothing is written when a later sequence of the batch is bad: sequence 0's cache stays zero.
  std::vector<payload> fresh = new_state(m, 8);
  const std::vector<payload> zero_state = fresh;
  CHECK_THAT(message_of([&] { (void)generation_logits(m, {{{1, 2}, 0, &fresh}, {{1, 2, 3, 4, 5}, 0, &small}}); }),
             contains("sequence 1"));
  CHECK(same_state(fresh, zero_state));

  // The context's rows must be the input's, and an attention layer needs its state.
  const payload x{host_tensor(shape{4, 8})};
  payload y = zeros(m.output_shapes(1, ppipe::shapes_of(x)));
  const auto attention = [&](std::vector<view> views) {
    ppipe::generation_context<host_tensor> ctx;
    ctx.sequences = views;
    m.forward(1, ctx, x, y);
  };
  CHECK_THAT(message_of([&] { attention({{0, 0, 3, &s0[1]}}); }),
             contains("the 1 sequences of the generation context hold 3 rows but the input has 4"));
  CHECK_THAT(message_of([&] { attention({{0, 0, 2, &s0[1]}, {5, 0, 2, nullptr}}); }),
             contains("sequence 5 (entry 1) has no state (null)"));
  payload wrong{host_tensor(shape{8, 4}), host_tensor(shape{8, 4})};
  CHECK_THAT(message_of([&] { attention({{0, 0, 4, &wrong}}); }),
             contains("has [8, 4], [8, 4] but the layer needs its keys and values, [capacity, 8] each"));
  CHECK_THAT(message_of([&] { attention({{0, -1, 4, &s0[1]}}); }), contains("has position -1"));
  // A row-wise layer checks the rows too.
  payload logits = zeros(m.output_shapes(3, ppipe::shapes_of(x)));
  ppipe::generation_context<host_tensor> two_rows;
  const std::vector<view> one{{0, 0, 2, nullptr}};
  two_rows.sequences = one;
  CHECK_THAT(message_of([&] { m.forward(3, two_rows, x, logits); }), contains("hold 2 rows but the input has 4"));
}

TEST_CASE("reference::generate is greedy decoding by the cacheless forward, and stops at its limit or eos") {
  const layers::decoder m(small_config(1));
  const std::vector<int> prompt{2, 7, 1, 8};
  const std::vector<int> g = reference::generate(m, prompt, 12);
  REQUIRE(g.size() == 12);
  CHECK(reference::generate(m, prompt, 12) == g);

  std::vector<int> tokens = prompt;
  for (const int expected : g) {
    const payload logits = plain_logits(m, tokens);
    const int next = layers::greedy(logits, static_cast<int>(tokens.size()) - 1);
    CHECK(next == expected);
    tokens.push_back(next);
  }

  CHECK(reference::generate(m, prompt, 1) == std::vector<int>{g[0]});
  CHECK(reference::generate(m, prompt, 0).empty());
  for (const std::size_t at : {std::size_t{0}, std::size_t{5}, std::size_t{11}}) {
    const int eos = g[at];
    std::size_t first = 0;
    while (g[first] != eos) ++first;
    const std::vector<int> stopped = reference::generate(m, prompt, 12, eos);
    CHECK(stopped == std::vector<int>(g.begin(), g.begin() + static_cast<std::ptrdiff_t>(first) + 1));
  }
  CHECK_THROWS_AS(reference::generate(m, {}, 4), ppipe::error);
}

TEST_CASE("decoder: calls on several threads at once give the single-threaded bits") {
  const layers::decoder m(small_config(1));
  const std::vector<std::vector<int>> inputs{{1, 2, 3, 4, 5, 6}, {9, 8, 7}, {30, 0, 30, 0, 30, 0, 30, 0}};
  std::vector<payload> serial, parallel(inputs.size());
  for (const std::vector<int>& tokens : inputs) serial.push_back(plain_logits(m, tokens));
  {
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      threads.emplace_back([&, i] { parallel[i] = plain_logits(m, inputs[i]); });
    }
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) CHECK(same_bits(parallel[i][0].values(), serial[i][0].values()));
}

TEST_CASE("decoder: costs follow the flops of each kind of layer") {
  const layers::decoder m({.vocab = 256, .d_model = 64, .heads = 4, .d_ff = 256, .blocks = 4});
  const ppipe::layer_cost embedding = m.cost(0), attention = m.cost(1), mlp = m.cost(2), head = m.cost(9);
  CHECK(embedding.forward < attention.forward);
  CHECK(attention.forward < mlp.forward);             // 8 d^2 < 4 d d_ff
  CHECK(head.forward >= 2.0 * 64 * 256);              // the vocab-wide projection
  CHECK(m.cost(3).forward == attention.forward);      // every block costs the same
  CHECK(m.cost(4).forward == mlp.forward);
  CHECK(m.cost(2, 8).forward == 8 * mlp.forward);     // per row
  CHECK(embedding.parameter_memory == (256 + 256) * 64 * sizeof(float));
  CHECK(mlp.parameter_memory > attention.parameter_memory);
}
