#pragma once
// What every backend must do, written once (Kokkos's habit: one test body per backend). A test
// file defines its backend fixtures, lists them in PPIPE_CONTRACT_BACKENDS, and includes this
// header: each test case below then runs once per fixture, named "<case> - <fixture>".
//
// A fixture F is a type with:
//   static constexpr const char* name;        the backend, for messages
//   static bool can_run(int p);               whether it runs a pipeline of p ranks here (over
//                                             MPI: p is the job's size); the same on every process
//   template <class Schedule, class Model>
//   static auto make(Model&, ppipe::pipeline_options, ppipe::loss_function<> = {},
//                    ppipe::optimizer_hook = {});
//                                             a pipeline of the backend; options.ranks is p
//   static bool on_any_process(bool);         whether any process of the job says true (the
//                                             host: the one process); called by every process
// The bodies ask the pipeline itself which stages this process holds (is_local): parameters and
// memory are checked for those; losses, outputs and errors on every process. Over MPI every
// process runs every case in the same order, so a body builds the same pipelines everywhere.

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "ppipe/partition/predict.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/dualpipe_v.hpp"
#include "ppipe/schedule/gpipe.hpp"
#include "ppipe/schedule/interleaved_1f1b.hpp"
#include "ppipe/schedule/simulate.hpp"
#include "ppipe/schedule/zero_bubble.hpp"
#include "reference.hpp"
#include "toy_layers.hpp"
#include "toy_model.hpp"

#ifndef PPIPE_CONTRACT_BACKENDS
#error "define PPIPE_CONTRACT_BACKENDS (a comma-separated list of backend fixtures) before including backend_contract.hpp"
#endif

namespace contract {

inline ppipe::pipeline_options options(int p, int m, int v = 1, ppipe::recompute_policy recompute = {}) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  if (recompute.recomputes()) o.recompute = {recompute};
  return o;
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Runs `body(p)` for each p of `sizes` the fixture can run; says so when it ran none, so that a
// backend that silently runs nothing shows up as skipped rather than passed.
template <class F, class Body>
void for_each_size(std::initializer_list<int> sizes, Body&& body) {
  bool ran = false;
  for (const int p : sizes) {
    if (!F::can_run(p)) continue;
    ran = true;
    body(p);
  }
  if (!ran) WARN("SKIPPED: the " << F::name << " backend runs none of the pipeline sizes this case needs");
}

// The model a fixture trains: toy::model (the Model concept, dispatching on the layer index), or
// the fixture's model_type (toy::layered: the same layers as a ppipe::layer_stack).
template <class F>
struct model_of {
  using type = toy::model;
};
template <class F>
  requires requires { typename F::model_type; }
struct model_of<F> {
  using type = typename F::model_type;
};
template <class F>
using model_t = typename model_of<F>::type;

// Whether a failing layer is named by its action ("rank 1 in 1F2 (forward of stage 1, ...)").
// Not where layers enqueue their own work, as GPU kernels are launched: their failure shows on
// the stream, and the device's error names the rank and the work's own label instead.
template <class F>
constexpr bool names_failing_action = !ppipe::enqueues_own_work<model_t<F>>;

// Whether a failing loss is named as the rank's loss after its action. Not where the loss enqueues
// its own work (a fixture that says `loss_enqueues_work`): it fails on the stream, like the layers.
template <class F>
constexpr bool names_failing_loss = !requires { requires F::loss_enqueues_work; };

// Whether `e` or an exception nested in it (at any depth) says `text`.
inline bool nested_says(const std::exception& e, const std::string& text) {
  try {
    std::rethrow_if_nested(e);
  } catch (const std::exception& inner) {
    return contains(inner.what(), text) || nested_says(inner, text);
  } catch (...) {
  }
  return false;
}

// Whether this process's stages of `pipe` hold the same parameters as the reference model.
template <class Pipe, class Model>
void check_local_parameters(const Pipe& pipe, const Model& got, const Model& want) {
  for (int s = 0; s < pipe.split().num_stages(); ++s) {
    if (!pipe.is_local(s)) continue;
    for (int l = pipe.split().first(s); l < pipe.split().end(s); ++l) {
      INFO("layer " << l << " of stage " << s);
      CHECK(got.a()[static_cast<std::size_t>(l)] == want.a()[static_cast<std::size_t>(l)]);
      CHECK(got.b()[static_cast<std::size_t>(l)] == want.b()[static_cast<std::size_t>(l)]);
    }
  }
}

// Nothing of a step is held once it has returned or thrown.
template <class Pipe>
void check_nothing_held(const Pipe& pipe) {
  for (int s = 0; s < pipe.split().num_stages(); ++s) {
    if (!pipe.is_local(s)) continue;
    INFO("stage " << s);
    CHECK(pipe.memory(s).live_microbatches == 0);
    CHECK(pipe.memory(s).live_stashed == 0);
    CHECK(pipe.memory(s).live_bytes == 0);
  }
}

// Trains 3 steps with schedule S and through the unpipelined reference with the same
// microbatches: losses (every process) and local parameters bitwise equal.
template <class F, class S>
void trains_bitwise(int p, int m, int v, std::int64_t rows, int layers, ppipe::recompute_policy recompute = {}) {
  INFO(F::name << ": " << S::name << " p=" << p << " m=" << m << " v=" << v << " rows=" << rows << " layers=" << layers
               << ", recompute " << ppipe::to_string(recompute));
  contract::model_t<F> piped(layers);
  contract::model_t<F> plain(layers);
  const float lr = 0.02f;
  auto pipe = F::template make<S>(piped, options(p, m, v, recompute), toy::loss,
                                  [&](const ppipe::stage_info& s) { piped.sgd(s.first_layer, s.end_layer, lr); });
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    const auto x = toy::batch(rows, 3, static_cast<float>(step));
    const auto y = toy::batch(rows, 3, 10.0f + static_cast<float>(step));
    const double got = pipe.train_step(x, y);
    const double want = reference::accumulate(plain, x, y, m, toy::loss);
    plain.sgd(0, layers, lr);
    REQUIRE(std::isfinite(want));
    CHECK(got == want);
  }
  check_local_parameters(pipe, piped, plain);
  check_nothing_held(pipe);
}

// Trains one step with schedule S: each local stage's pool peaks at the simulator's counts, held
// and (with recompute) stashed. Returns each local stage's peak bytes (0 for the others).
template <class F, class S>
std::vector<std::size_t> peaks_as_simulated(int p, int m, int v, ppipe::recompute_policy recompute = {},
                                            int layers_per_stage = 3) {
  INFO(F::name << ": " << S::name << " p=" << p << " m=" << m << " v=" << v << ", recompute "
               << ppipe::to_string(recompute));
  contract::model_t<F> model(layers_per_stage * p * v);
  auto pipe = F::template make<S>(model, options(p, m, v, recompute), toy::loss);
  (void)pipe.train_step(toy::batch(2 * m, 3, 0.0f), toy::batch(2 * m, 3, 1.0f));
  const ppipe::simulation sim = ppipe::simulate(pipe.training_schedule(), ppipe::cost_model::uniform(1, 2));
  int local = 0;
  std::vector<std::size_t> bytes(static_cast<std::size_t>(p * v), 0);
  for (int s = 0; s < p * v; ++s) {
    if (!pipe.is_local(s)) continue;
    ++local;
    INFO("stage " << s);
    CHECK(pipe.memory(s).peak_microbatches == sim.peak_stage_activations[static_cast<std::size_t>(s)]);
    CHECK(pipe.memory(s).peak_stashed == sim.peak_stage_stashed[static_cast<std::size_t>(s)]);
    CHECK(pipe.memory(s).live_microbatches == 0);
    CHECK(pipe.memory(s).live_stashed == 0);
    CHECK(pipe.memory(s).peak_bytes > 0);
    bytes[static_cast<std::size_t>(s)] = pipe.memory(s).peak_bytes;
  }
  CHECK(local > 0);  // a process that holds no stage would pass the loop above without a check
  return bytes;
}

// The first message that says "rank R waited T ms in RF0 ... from rank Q", with R, T and Q.
struct waited_report {
  bool found = false;
  int rank = -1, timeout_ms = -1, action_rank = -1, peer = -1;
};
inline waited_report parse_wait(const std::string& text) {
  static const std::regex said(
      R"(rank (\d+) waited (\d+) ms in (\d+)F0 \(forward of stage (\d+), microbatch 0\) for (\d+)RECV_F0 )"
      R"(\(recv_activation of stage (\d+), microbatch 0\) from rank (\d+))");
  std::smatch m;
  if (!std::regex_search(text, m, said)) return {};
  return {true, std::stoi(m[1]), std::stoi(m[2]), std::stoi(m[3]), std::stoi(m[7])};
}

}  // namespace contract

TEMPLATE_TEST_CASE("numerics: training is bitwise the unpipelined run, for every schedule", "[contract]",
                   PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  using namespace ppipe::schedules;
  contract::for_each_size<F>({1, 2, 3, 4}, [](int p) {
    // m not a multiple of p, rows not a multiple of m (microbatches of unequal size), and layer
    // counts that do not split evenly, next to even ones.
    contract::trains_bitwise<F, gpipe>(p, p + 2, 1, 2 * (p + 2) + 1, 2 * p + 1);
    contract::trains_bitwise<F, one_f_one_b>(p, p + 2, 1, 2 * (p + 2) + 1, 2 * p + 1);
    contract::trains_bitwise<F, one_f_one_b>(p, 2 * p, 1, 8 * p, 2 * p);
    if (p > 1) {  // interleaving needs several ranks to loop over
      contract::trains_bitwise<F, interleaved_1f1b>(p, 2 * p, 2, 4 * p + 1, 4 * p);
      contract::trains_bitwise<F, interleaved_1f1b>(p, p, 3, 2 * p, 3 * p);
    }
  });
}

TEMPLATE_TEST_CASE("numerics: with activation recomputation, training is bitwise the same", "[contract]",
                   PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  using namespace ppipe::schedules;
  const auto full = ppipe::recompute_policy::full;
  contract::for_each_size<F>({1, 2, 4}, [&](int p) {
    // One layer per stage (nothing to drop), and several.
    contract::trains_bitwise<F, gpipe>(p, p + 2, 1, 2 * (p + 2) + 1, p, full);
    contract::trains_bitwise<F, gpipe>(p, p + 2, 1, 2 * (p + 2) + 1, 3 * p + 1, full);
    contract::trains_bitwise<F, one_f_one_b>(p, 2 * p, 1, 8 * p, 3 * p, full);
    if (p > 1) contract::trains_bitwise<F, interleaved_1f1b>(p, 2 * p, 2, 4 * p + 1, 4 * p, full);
    // Every 2nd layer's input kept, over stages of 3 to 6 layers (more layers than 13 make the
    // toy model's reference overflow).
    const int layers = p <= 2 ? 5 * p + 1 : 3 * p + 1;
    contract::trains_bitwise<F, one_f_one_b>(p, 2 * p, 1, 8 * p, layers, ppipe::recompute_policy::every(2));
  });
}

TEMPLATE_TEST_CASE("numerics: zero-bubble schedules and DualPipeV, recomputing or not, are bitwise the same",
                   "[contract]", PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  using namespace ppipe::schedules;
  const auto full = ppipe::recompute_policy::full;
  contract::for_each_size<F>({1, 2, 4}, [&](int p) {
    // Split backwards (I, W), a V of two stages per rank, and DualPipeV's paired F&B; with
    // recomputation the R comes before the I, or before a pair's forward.
    contract::trains_bitwise<F, zb_h1>(p, 2 * p, 1, 8 * p + 1, 2 * p);
    contract::trains_bitwise<F, zb_h1>(p, 2 * p, 1, 8 * p, 3 * p, full);
    // Two stages on a rank hand over locally: with p = 1 the whole pipeline is one rank.
    contract::trains_bitwise<F, zb_v>(p, 2 * p, 2, 8 * p, 4 * p);
    contract::trains_bitwise<F, dualpipe_v>(p, 2 * p + 1, 2, 8 * p + 3, 4 * p);
    contract::trains_bitwise<F, dualpipe_v>(p, 2 * p, 2, 8 * p, 4 * p, full);
    // Inference on the V placement: stage p-1 hands its output to stage p locally, step after step.
    contract::model_t<F> model(4 * p);
    auto pipe = F::template make<zb_v>(model, contract::options(p, 2 * p, 2), toy::loss);
    const auto x = toy::batch(2 * p + 1, 3, 0.5f);
    const ppipe::payload want = reference::forward(model, x, 0, ppipe::pass_mode::inference).back();
    for (int call = 0; call < 3; ++call) {
      INFO(F::name << ": zb_v inference p=" << p << ", call " << call);
      CHECK(pipe.infer(x) == want);
    }
  });
}

TEMPLATE_TEST_CASE("numerics: inference returns what the unpipelined forward does", "[contract]",
                   PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  contract::for_each_size<F>({1, 2, 4}, [](int p) {
    INFO(F::name << ": p=" << p);
    contract::model_t<F> model(2 * p);
    ppipe::pipeline_options o = contract::options(p, 3);
    o.inference_microbatches = p + 1;  // not the training m: infer() takes its own
    auto pipe = F::template make<ppipe::schedules::one_f_one_b>(model, o);
    const auto x = toy::batch(2 * p + 3, 3, 0.5f);
    const ppipe::payload got = pipe.infer(x);
    const ppipe::payload want = reference::forward(model, x, 0, ppipe::pass_mode::inference).back();
    REQUIRE(got.size() == 2);
    CHECK(got == want);
    CHECK(pipe.last_trace().schedule_name == "forward_only");
    for (int s = 0; s < p; ++s) {
      if (!pipe.is_local(s)) continue;
      CHECK(pipe.memory(s).peak_microbatches == 1);
      CHECK(pipe.memory(s).live_microbatches == 0);
    }
  });
}

TEMPLATE_TEST_CASE("memory: activations held per stage peak where the simulator says", "[contract]",
                   PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  using namespace ppipe::schedules;
  contract::for_each_size<F>({2, 3, 4}, [](int p) {
    contract::peaks_as_simulated<F, gpipe>(p, 2 * p, 1);
    contract::peaks_as_simulated<F, one_f_one_b>(p, 2 * p, 1);
    contract::peaks_as_simulated<F, one_f_one_b>(p, p - 1, 1);  // fewer microbatches than ranks
    contract::peaks_as_simulated<F, interleaved_1f1b>(p, 2 * p, 2);
  });
}

TEMPLATE_TEST_CASE("memory: with recomputation, stages hold and stash what the simulator says, in less memory",
                   "[contract]", PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  using namespace ppipe::schedules;
  const auto full = ppipe::recompute_policy::full;
  const auto every2 = ppipe::recompute_policy::every(2);
  contract::for_each_size<F>({2, 4}, [&](int p) {
    const auto kept = contract::peaks_as_simulated<F, gpipe>(p, 2 * p, 1, {}, 5);
    const auto half = contract::peaks_as_simulated<F, gpipe>(p, 2 * p, 1, every2, 5);
    const auto recomputed = contract::peaks_as_simulated<F, gpipe>(p, 2 * p, 1, full, 5);
    // What the planner predicts each policy saves, in layer inputs (the toy's are all one size).
    const ppipe::schedule plan = gpipe::generate({p, 2 * p, 1});
    std::vector<int> bounds;
    for (int s = 0; s <= p; ++s) bounds.push_back(5 * s);
    const std::vector<ppipe::layer_cost> unit(static_cast<std::size_t>(5 * p), ppipe::layer_cost{1.0, 2.0, 0.0, 1.0});
    const auto predicted = [&](ppipe::recompute_policy policy) {
      return ppipe::predict(plan, ppipe::partition_problem::for_schedule(plan, unit, {}, {policy}),
                            ppipe::partition(bounds))
          .rank_memory;
    };
    const auto none_units = predicted(ppipe::recompute_policy::none);
    const auto half_units = predicted(every2);
    const auto full_units = predicted(full);
    for (std::size_t s = 0; s < kept.size(); ++s) {
      INFO("stage " << s);
      // Five layers a stage: a stashed microbatch keeps its input and output, and under every(2)
      // the inputs of layers 2 and 4, not the others, so GPipe's 2p microbatches in flight cost
      // less, and less again in full: by the predicted number of layer inputs, each the same bytes.
      if (kept[s] > 0) {
        CHECK(half[s] < kept[s]);
        CHECK(recomputed[s] < half[s]);
        const double input_bytes = static_cast<double>(kept[s] - recomputed[s]) / (none_units[s] - full_units[s]);
        CHECK(input_bytes > 0);
        CHECK(static_cast<double>(kept[s] - half[s]) == input_bytes * (none_units[s] - half_units[s]));
      }
    }
    (void)contract::peaks_as_simulated<F, one_f_one_b>(p, 2 * p, 1, full);
    (void)contract::peaks_as_simulated<F, interleaved_1f1b>(p, 2 * p, 2, full);
  });
}

TEMPLATE_TEST_CASE("failure: a layer that throws stops the step on every rank, naming its rank and action",
                   "[contract]", PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  contract::for_each_size<F>({2, 4}, [](int p) {
    const int m = p + 2;
    const std::int64_t rows = 2 * m + 1;
    const int layers = 2 * p;
    const float lr = 0.02f;
    contract::model_t<F> piped(layers);
    contract::model_t<F> plain(layers);
    std::atomic<int> hooks{0};
    auto pipe = F::template make<ppipe::schedules::one_f_one_b>(piped, contract::options(p, m), toy::loss,
                                                                [&](const ppipe::stage_info& s) {
                                                                  ++hooks;
                                                                  piped.sgd(s.first_layer, s.end_layer, lr);
                                                                });
    const ppipe::partition& split = pipe.split();
    struct fault_case {
      int stage;
      int layer;
      int microbatch;
      bool backward;
    };
    const int middle = p / 2;
    // The first, a middle and the last rank; forward and backward; first and last microbatch.
    const fault_case cases[] = {
        {0, split.first(0), 1, false},
        {middle, split.first(middle), m / 2, false},
        {middle, split.first(middle), 1, true},
        {p - 1, split.end(p - 1) - 1, 0, true},
        {0, 0, m - 1, true},
    };
    for (int k = 0; k < static_cast<int>(std::size(cases)); ++k) {
      const fault_case& c = cases[k];
      // v = 1: stage s runs on rank s.
      const std::string where = "rank " + std::to_string(c.stage) + " in " + std::to_string(c.stage) +
                                (c.backward ? "B" : "F") + std::to_string(c.microbatch) + " (" +
                                (c.backward ? "backward" : "forward") + " of stage " + std::to_string(c.stage) +
                                ", microbatch " + std::to_string(c.microbatch) + ")";
      INFO(F::name << ": p=" << p << ", fault in layer " << c.layer << ": " << where);
      const auto x = toy::batch(rows, 3, static_cast<float>(k));
      const auto y = toy::batch(rows, 3, 10.0f + static_cast<float>(k));
      piped.set_fault({c.layer, c.microbatch, c.backward, std::chrono::milliseconds(0)});
      hooks = 0;
      try {
        (void)pipe.train_step(x, y);
        FAIL("train_step did not throw");
      } catch (const ppipe::error& e) {
        INFO(e.what());
        CHECK(e.id() == "ppipe.stage_failed");
        if constexpr (contract::names_failing_action<F>) {
          CHECK(contract::contains(e.what(), where));
        } else {
          // The device's error names the stream its failing work ran on, which names the rank.
          CHECK(contract::contains(e.what(), "layers or loss enqueued"));
          CHECK(contract::contains(e.what(), "stream 'rank " + std::to_string(c.stage) + " compute'"));
        }
        CHECK(contract::contains(e.what(), "injected fault in layer " + std::to_string(c.layer)));
        // Where the failing stage ran, the kernel's own exception is nested in the report.
        if (pipe.is_local(c.stage)) CHECK(contract::nested_says(e, "injected fault"));
      }
      CHECK(hooks.load() == 0);  // no stage is updated by a step that failed
      contract::check_nothing_held(pipe);
      // The pipeline runs again once the fault is gone, bitwise like the reference that never
      // saw the failed step (whose partial gradients the caller drops).
      piped.set_fault({});
      piped.zero_grad();
      const double got = pipe.train_step(x, y);
      const double want = reference::accumulate(plain, x, y, m, toy::loss);
      plain.sgd(0, layers, lr);
      CHECK(got == want);
      contract::check_local_parameters(pipe, piped, plain);
      contract::check_nothing_held(pipe);
    }
  });
}

TEMPLATE_TEST_CASE("failure: a loss that throws is reported from the last rank on every rank", "[contract]",
                   PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  contract::for_each_size<F>({2, 4}, [](int p) {
    INFO(F::name << ": p=" << p);
    const int m = 2;
    contract::model_t<F> piped(p);
    contract::model_t<F> plain(p);
    bool explode = true;
    std::atomic<int> hooks{0};
    const auto loss = [&](const ppipe::payload& out, const ppipe::payload& target, ppipe::payload& grad, double scale) {
      if (explode) throw std::domain_error("loss exploded");
      return toy::loss(out, target, grad, scale);
    };
    auto pipe = F::template make<ppipe::schedules::one_f_one_b>(piped, contract::options(p, m), loss,
                                                                [&](const ppipe::stage_info&) { ++hooks; });
    const auto x = toy::batch(4, 3, 0.0f);
    const auto y = toy::batch(4, 3, 1.0f);
    const std::string last = std::to_string(p - 1);
    try {
      (void)pipe.train_step(x, y);
      FAIL("train_step did not throw");
    } catch (const ppipe::error& e) {
      INFO(e.what());
      CHECK(e.id() == "ppipe.stage_failed");
      if constexpr (contract::names_failing_loss<F>) {
        CHECK(contract::contains(e.what(), "rank " + last + "'s loss, after " + last + "F0 (forward of stage " + last +
                                               ", microbatch 0)"));
      } else {  // a loss that enqueues its work fails on the stream, like the layers
        CHECK(contract::contains(e.what(), "layers or loss enqueued"));
        CHECK(contract::contains(e.what(), "stream 'rank " + last + " compute'"));
      }
      CHECK(contract::contains(e.what(), "loss exploded"));
    }
    CHECK(hooks.load() == 0);
    contract::check_nothing_held(pipe);
    explode = false;
    piped.zero_grad();
    CHECK(pipe.train_step(x, y) == reference::accumulate(plain, x, y, m, toy::loss));
    int local = 0;
    for (int s = 0; s < p; ++s) local += pipe.is_local(s) ? 1 : 0;
    CHECK(hooks.load() == local);  // one hook per stage, each on the process that holds it
  });
}

// Last: over MPI a transport that timed out refuses to run again, and its peers' messages may
// still be in flight; later cases build their own pipelines, but nothing needs to follow this one.
TEMPLATE_TEST_CASE("timeout: a stalled layer makes a waiting rank name itself, its peer and the action",
                   "[contract]", PPIPE_CONTRACT_BACKENDS) {
  using F = TestType;
  contract::for_each_size<F>({2, 4}, [](int p) {
    INFO(F::name << ": p=" << p);
    contract::model_t<F> model(2 * p);
    // Rank 0's first layer stalls in its first forward: every later rank waits for its
    // predecessor's first activation, and the first to give up names itself and that predecessor.
    model.set_fault({0, 0, false, std::chrono::milliseconds(600)});
    ppipe::pipeline_options o = contract::options(p, p);
    o.timeout = std::chrono::milliseconds(150);
    auto pipe = F::template make<ppipe::schedules::one_f_one_b>(model, o, toy::loss);
    const auto start = std::chrono::steady_clock::now();
    bool named_all_three = false;
    try {
      (void)pipe.train_step(toy::batch(2 * p, 3, 0.0f), toy::batch(2 * p, 3, 1.0f));
      FAIL_CHECK("train_step did not time out");
    } catch (const ppipe::error& e) {
      INFO(e.what());
      CHECK(e.id() == "ppipe.timeout");
      // Every process names a waiting rank, how long it waited, and the rank it waited for.
      CHECK(std::regex_search(std::string(e.what()), std::regex(R"(rank \d+ [^\n]*waited \d+ ms [^\n]*rank \d+)")));
      // Over several processes a rank whose wait was cut short by another's timeout reports
      // what it waited for next; the rank that timed out first reports the action it waited in.
      const contract::waited_report w = contract::parse_wait(e.what());
      if (w.found) {
        CHECK(w.timeout_ms == 150);
        CHECK(w.action_rank == w.rank);  // v = 1: the action it waited in is its own stage's
        CHECK(w.rank >= 1);
        CHECK(w.rank < p);
        CHECK(w.peer == w.rank - 1);
        if (p == 2) CHECK(w.peer == 0);  // one waiting rank: it waited for the stalled one
        named_all_three = true;
      }
    }
    CHECK(F::on_any_process(named_all_three));
    // Ranks give up at the timeout; the stalled kernel itself is waited for, not abandoned.
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  });
}
