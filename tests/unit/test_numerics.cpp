// Numerics of pipelined training with the layer kit's MLP: bitwise the unpipelined run with the
// same microbatches and accumulation order, for every schedule and several (p, m, v); and close
// to full-batch training.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <span>
#include <vector>

#include "ppipe/layers/layers.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/gpipe.hpp"
#include "ppipe/schedule/interleaved_1f1b.hpp"
#include "ppipe/schedule/simulate.hpp"
#include "reference.hpp"

namespace {

using ppipe::layers::sequential;

struct data {
  ppipe::payload x;
  ppipe::payload y;
};

data make_data(std::int64_t rows, int in, int out, int salt) {
  data d{{ppipe::host_tensor(ppipe::shape{rows, in})}, {ppipe::host_tensor(ppipe::shape{rows, out})}};
  for (std::size_t i = 0; i < d.x[0].size(); ++i) d.x[0][i] = std::sin(0.7f * static_cast<float>(i) + static_cast<float>(salt));
  for (std::size_t i = 0; i < d.y[0].size(); ++i) d.y[0][i] = std::cos(0.3f * static_cast<float>(i) - static_cast<float>(salt));
  return d;
}

std::vector<std::vector<float>> copy(const std::vector<std::span<const float>>& spans) {
  std::vector<std::vector<float>> out;
  for (const auto& s : spans) out.emplace_back(s.begin(), s.end());
  return out;
}

// ||a - b|| / ||b|| over one parameter tensor.
double relative(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0;
  double norm = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff += d * d;
    norm += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

// 1F1B with every backward split into I and W, each W run after the rank's next compute (as
// zero-bubble schedules defer W): exercises the split path of the stage and the executor.
struct split_backward_1f1b {
  static constexpr std::string_view name = "1f1b_split_backward";
  static ppipe::schedule generate(const ppipe::schedule_params& params) {
    ppipe::schedule s = ppipe::schedules::one_f_one_b::generate(params);
    s.name = std::string(name);
    for (auto& list : s.ranks) {
      std::vector<ppipe::action> out;
      std::optional<ppipe::action> deferred;
      for (const ppipe::action& a : list) {
        if (a.kind == ppipe::action_kind::backward) {
          if (deferred) out.push_back(*deferred);
          out.push_back({a.stage, a.microbatch, ppipe::action_kind::backward_input});
          deferred = ppipe::action{a.stage, a.microbatch, ppipe::action_kind::backward_weight};
          continue;
        }
        out.push_back(a);
        if (deferred && ppipe::is_compute(a.kind)) {
          out.push_back(*deferred);
          deferred.reset();
        }
      }
      if (deferred) out.push_back(*deferred);
      list = std::move(out);
    }
    return s;
  }
};

// GPipe over a custom placement where each rank holds two adjacent stages (2r and 2r+1), so data
// between them is handed over on the rank, with no transfer: exercises the executor's local
// hand-off of activations and gradients.
struct adjacent_pairs_gpipe {
  static constexpr std::string_view name = "gpipe_adjacent_pairs";
  static ppipe::schedule generate(const ppipe::schedule_params& params) {
    const int p = params.ranks;
    const int m = params.microbatches;
    std::vector<int> rank_of;
    for (int st = 0; st < 2 * p; ++st) rank_of.push_back(st / 2);
    ppipe::schedule s{std::string(name), ppipe::placement::custom(rank_of, p), m, ppipe::schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    for (int r = 0; r < p; ++r) {
      auto& list = s.ranks[static_cast<std::size_t>(r)];
      for (int mb = 0; mb < m; ++mb) {
        list.push_back({2 * r, mb, ppipe::action_kind::forward});
        list.push_back({2 * r + 1, mb, ppipe::action_kind::forward});
      }
      for (int mb = 0; mb < m; ++mb) {
        list.push_back({2 * r + 1, mb, ppipe::action_kind::backward});
        list.push_back({2 * r, mb, ppipe::action_kind::backward});
      }
    }
    return ppipe::add_communication(std::move(s));
  }
};

template <class Schedule>
void check(int p, int m, int v, std::int64_t rows, const std::vector<int>& widths, bool recompute = false) {
  INFO(Schedule::name << " p=" << p << " m=" << m << " v=" << v << (recompute ? ", recompute" : ""));
  const std::uint64_t seed = 42;
  const float lr = 0.05f;
  sequential piped = sequential::mlp(widths, seed);
  sequential plain = sequential::mlp(widths, seed);
  sequential full = sequential::mlp(widths, seed);
  const ppipe::layers::sgd sgd(lr);
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  if (recompute) o.recompute = {ppipe::recompute_policy::full};
  ppipe::pipeline<sequential, Schedule> pipe(piped, o, ppipe::layers::mse_loss{},
                                             [&](const ppipe::stage_info& s) { sgd.step(piped, s); });
  const ppipe::layers::mse_loss loss;
  for (int step = 0; step < 4; ++step) {
    INFO(Schedule::name << " p=" << p << " m=" << m << " v=" << v << " rows=" << rows << " step " << step);
    const data d = make_data(rows, widths.front(), widths.back(), step);
    const double got = pipe.train_step(d.x, d.y);
    const double want = reference::accumulate(plain, d.x, d.y, m, loss);
    sgd.step(plain, 0, plain.num_layers());
    const double whole = reference::accumulate(full, d.x, d.y, 1, loss);
    sgd.step(full, 0, full.num_layers());

    CHECK(got == want);  // bitwise, not approximately
    const auto a = copy(piped.parameters());
    const auto b = copy(plain.parameters());
    const auto c = copy(full.parameters());
    REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k) {
      CHECK(a[k] == b[k]);
      CHECK(relative(a[k], c[k]) < 1e-5);
    }
    CHECK(std::abs(got - whole) <= 1e-5 * std::abs(whole));
  }
  // Inference through the same pipeline: the unpipelined forward of the same microbatches (m of
  // them, as infer() splits by default), bit for bit. The loops compute every row on its own, but
  // a BLAS may sum a row in an order that depends on how many rows share its call.
  const data d = make_data(rows, widths.front(), widths.back(), 99);
  std::vector<ppipe::payload> parts;
  std::int64_t first = 0;
  for (const std::int64_t n : reference::rows_of(rows, m)) {
    parts.push_back(reference::forward(plain, ppipe::slice_rows(d.x, first, n), 0, ppipe::pass_mode::inference).back());
    first += n;
  }
  CHECK(pipe.infer(d.x) == ppipe::concat_rows(parts));
  // Activations held per stage in training: what the simulator predicts for this schedule.
  const ppipe::simulation sim = ppipe::simulate(pipe.training_schedule(), ppipe::cost_model::uniform(1, 2));
  for (int st = 0; st < pipe.split().num_stages(); ++st) {
    CHECK(pipe.memory(st).peak_microbatches == sim.peak_stage_activations[static_cast<std::size_t>(st)]);
    CHECK(pipe.memory(st).peak_stashed == sim.peak_stage_stashed[static_cast<std::size_t>(st)]);
    CHECK(pipe.memory(st).live_microbatches == 0);
  }
  if (recompute) CHECK(ppipe::stashed_peaks(pipe.training_schedule()) != std::vector<int>(sim.peak_stage_stashed.size(), 0));
}

}  // namespace

TEST_CASE("GPipe trains the MLP bitwise like the unpipelined run") {
  check<ppipe::schedules::gpipe>(2, 4, 1, 16, {8, 16, 16, 4});
  check<ppipe::schedules::gpipe>(4, 8, 1, 21, {8, 16, 16, 16, 16, 4});  // uneven microbatches
}

TEST_CASE("1F1B trains the MLP bitwise like the unpipelined run") {
  check<ppipe::schedules::one_f_one_b>(2, 2, 1, 8, {8, 16, 4});
  check<ppipe::schedules::one_f_one_b>(3, 6, 1, 30, {8, 16, 16, 16, 4});
  check<ppipe::schedules::one_f_one_b>(4, 16, 1, 35, {8, 12, 12, 12, 12, 4});
}

TEST_CASE("interleaved 1F1B trains the MLP bitwise like the unpipelined run") {
  check<ppipe::schedules::interleaved_1f1b>(2, 4, 2, 16, {8, 16, 16, 16, 4});
  check<ppipe::schedules::interleaved_1f1b>(2, 6, 3, 25, {8, 12, 12, 12, 12, 12, 4});
  check<ppipe::schedules::interleaved_1f1b>(4, 8, 2, 40, {8, 12, 12, 12, 12, 12, 4});
}

TEST_CASE("a schedule that splits the backward into I and W trains bitwise like the full backward") {
  REQUIRE(split_backward_1f1b::generate({3, 6, 1}).splits_backward());
  check<split_backward_1f1b>(3, 6, 1, 20, {8, 16, 16, 16, 4});
  check<split_backward_1f1b>(4, 8, 1, 32, {8, 12, 12, 12, 12, 4});
}

TEST_CASE("stages next to each other on one rank hand data over locally, with the same bits") {
  REQUIRE(adjacent_pairs_gpipe::generate({2, 4, 1}).num_stages() == 4);
  check<adjacent_pairs_gpipe>(2, 4, 1, 16, {8, 16, 16, 16, 4});
  check<adjacent_pairs_gpipe>(3, 5, 1, 23, {8, 12, 12, 12, 12, 12, 4});
}

TEST_CASE("ZB-H1 trains the MLP bitwise like the unpipelined run") {
  check<ppipe::schedules::zb_h1>(2, 4, 1, 16, {8, 16, 16, 4});
  check<ppipe::schedules::zb_h1>(3, 7, 1, 30, {8, 16, 16, 16, 4});
  check<ppipe::schedules::zb_h1>(4, 16, 1, 35, {8, 12, 12, 12, 12, 4});
}

TEST_CASE("with activation recomputation every schedule trains the MLP bitwise like the unpipelined run") {
  check<ppipe::schedules::gpipe>(4, 8, 1, 21, {8, 16, 16, 16, 16, 4}, true);
  check<ppipe::schedules::one_f_one_b>(3, 6, 1, 30, {8, 16, 16, 16, 4}, true);
  check<ppipe::schedules::interleaved_1f1b>(2, 4, 2, 16, {8, 16, 16, 16, 4}, true);
  check<split_backward_1f1b>(3, 6, 1, 20, {8, 16, 16, 16, 4}, true);
  check<adjacent_pairs_gpipe>(2, 4, 1, 16, {8, 16, 16, 16, 4}, true);
  check<ppipe::schedules::zb_h1>(3, 7, 1, 30, {8, 16, 16, 16, 4}, true);
  check<ppipe::schedules::zb_v>(3, 5, 2, 23, {8, 12, 12, 12, 12, 4}, true);
}

TEST_CASE("DualPipeV trains the MLP bitwise like the unpipelined run") {
  // Two stages per rank in a V, paired F&B actions run back to back, split backwards in the drain.
  check<ppipe::schedules::dualpipe_v>(2, 4, 2, 16, {8, 16, 16, 16, 4});
  check<ppipe::schedules::dualpipe_v>(3, 7, 2, 23, {8, 12, 12, 12, 12, 4});
  check<ppipe::schedules::dualpipe_v>(4, 8, 2, 40, {8, 12, 12, 12, 12, 12, 4});
  check<ppipe::schedules::dualpipe_v>(2, 5, 2, 16, {8, 16, 16, 16, 4}, true);  // R before a pair
}

TEST_CASE("ZB-V trains the MLP bitwise like the unpipelined run") {
  // Rank r holds stages r and 2p-1-r; stages p-1 and p share the last rank and hand over locally.
  check<ppipe::schedules::zb_v>(2, 4, 2, 16, {8, 16, 16, 16, 4});
  check<ppipe::schedules::zb_v>(3, 5, 2, 23, {8, 12, 12, 12, 12, 4});
  check<ppipe::schedules::zb_v>(4, 8, 2, 40, {8, 12, 12, 12, 12, 12, 4});
}
