// The runtime on the host backend, beyond the backend contract (test_backend_contract.cpp: numerics,
// memory, failures and timeouts): the trace, the watchdog's board, the pool, and bad input.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/runtime/cpu_stream_backend.hpp"
#include "ppipe/schedule/gpipe.hpp"
#include "ppipe/schedule/interleaved_1f1b.hpp"
#include "error_message.hpp"
#include "toy_model.hpp"

namespace {

using ppipe::pipeline_options;
using namespace std::chrono_literals;

pipeline_options options(int p, int m, int v = 1) {
  pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  return o;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("the trace has every action of every rank, and a bubble between 0 and 1") {
  toy::model model(8);
  ppipe::pipeline<toy::model> pipe(model, options(4, 8), toy::loss);
  pipe.train_step(toy::batch(16, 3, 0.0f), toy::batch(16, 3, 1.0f));
  const ppipe::run_trace& t = pipe.last_trace();
  const ppipe::schedule& s = pipe.training_schedule();
  REQUIRE(t.num_ranks() == 4);
  for (int r = 0; r < 4; ++r) {
    CHECK(t.ranks[static_cast<std::size_t>(r)].size() == s.ranks[static_cast<std::size_t>(r)].size());
    for (const auto& e : t.ranks[static_cast<std::size_t>(r)]) {
      CHECK(e.end >= e.start);
      CHECK(e.act == s.ranks[static_cast<std::size_t>(r)][static_cast<std::size_t>(e.step)]);
    }
  }
  CHECK(t.bubble_fraction() > 0.0);
  CHECK(t.bubble_fraction() < 1.0);
}

// The host's own part of a timeout report (the rest is the backend contract's): the rank threads
// share a board, so the report also says what every other rank was doing.
TEST_CASE("the watchdog's report says what every other rank was doing") {
  toy::model model(4);
  model.set_fault({1, 0, false, 600ms});  // layer 1 (stage 1, one layer per stage) stalls on microbatch 0
  pipeline_options o = options(4, 4);
  o.timeout = 150ms;
  ppipe::pipeline<toy::model> pipe(model, o, toy::loss);
  try {
    pipe.train_step(toy::batch(8, 3, 0.0f), toy::batch(8, 3, 1.0f));
    FAIL("train_step did not time out");
  } catch (const ppipe::error& e) {
    INFO(e.what());
    CHECK(contains(e.what(), "the other ranks:"));
    CHECK(contains(e.what(), "rank 1: running 1F0 (forward of stage 1, microbatch 0)"));
  }
}

TEST_CASE("bad input gets a ppipe::error with the values") {
  const auto fails = [](auto&& f, const std::string& id, const std::string& part) {
    try {
      f();
      FAIL("no error");
    } catch (const ppipe::error& e) {
      INFO(e.what());
      CHECK(e.id() == id);
      CHECK(contains(e.what(), part));
    }
  };
  toy::model model(8);
  fails([&] { ppipe::pipeline<toy::model> p(model, options(4, 8), toy::loss); p.train_step(toy::batch(6, 3, 0), toy::batch(6, 3, 0)); },
        "ppipe.invalid_argument", "the inputs have 6 rows but the pipeline splits them into m=8");
  fails([&] { ppipe::pipeline<toy::model, ppipe::schedules::interleaved_1f1b> p(model, options(4, 4, 3), toy::loss); },
        "ppipe.invalid_argument", "the model has 8 layers but the pipeline has 12 stages");
  fails([&] { ppipe::pipeline<toy::model> p(model, options(2, 2), toy::loss); p.train_step(toy::batch(4, 3, 0), toy::batch(5, 3, 0)); },
        "ppipe.invalid_argument", "the targets have 5 rows but the inputs 4");
  fails([&] { ppipe::pipeline<toy::model> p(model, options(2, 2)); p.train_step(toy::batch(4, 3, 0), toy::batch(4, 3, 0)); },
        "ppipe.invalid_argument", "train_step needs a loss");
  fails([&] { ppipe::pipeline<toy::model> p(model, options(0, 2)); }, "ppipe.invalid_argument", "ranks=0");
  // Refused before the transport's p x p channels are allocated.
  fails([&] { ppipe::pipeline<toy::model> p(model, options(100000, 2), toy::loss); }, "ppipe.invalid_argument",
        "the model has 8 layers but the pipeline has 100000 stages (p=100000 x v=1)");
  fails([&] {
    pipeline_options o = options(2, 2);
    o.split = ppipe::partition({0, 3, 7});
    ppipe::pipeline<toy::model> p(model, o, toy::loss);
  }, "ppipe.invalid_argument", "the split has 2 stages over 7 layers");
  fails([&] {
    ppipe::pipeline<toy::model> p(model, options(2, 2), toy::loss);
    ppipe::payload ragged{ppipe::host_tensor(ppipe::shape{4, 3}), ppipe::host_tensor(ppipe::shape{5})};
    p.train_step(ragged, ragged);
  }, "ppipe.invalid_argument", "[4, 3], [5]");

  // A layer that cannot take what the stage before it makes: found before anything runs.
  toy::model mismatched(8);
  mismatched.set_width(4, 5);
  ppipe::pipeline<toy::model> p(mismatched, options(4, 2), toy::loss);
  fails([&] { p.train_step(toy::batch(4, 3, 0), toy::batch(4, 3, 0)); }, "ppipe.invalid_argument",
        "stage 2 (layers 4..5): layer 4 cannot take inputs of shapes [2, 3], [2], which stage 1 produces");
  fails([&] { p.infer(toy::batch(4, 3, 0)); }, "ppipe.invalid_argument", "takes {[rows, 5], [rows]}");
}

TEST_CASE("an explicit split is used as given") {
  toy::model model(8);
  pipeline_options o = options(2, 2);
  o.split = ppipe::partition({0, 6, 8});
  ppipe::pipeline<toy::model> p(model, o, toy::loss);
  CHECK(p.split().sizes() == std::vector<int>{6, 2});
}

TEST_CASE("a rank that times out waiting for the others at the end of a step stops every optimizer hook") {
  toy::model model(2);
  model.set_fault({0, 3, true, 400ms});  // rank 0's last action, 0B3, stalls
  pipeline_options o = options(2, 4);
  o.timeout = 100ms;
  std::atomic<int> hooks{0};
  ppipe::pipeline<toy::model> pipe(model, o, toy::loss, [&](const ppipe::stage_info&) { ++hooks; });
  try {
    pipe.train_step(toy::batch(8, 3, 0.0f), toy::batch(8, 3, 1.0f));
    FAIL("train_step did not time out");
  } catch (const ppipe::error& e) {
    INFO(e.what());
    CHECK(e.id() == "ppipe.timeout");
    CHECK(contains(e.what(), "rank 1 finished its actions and waited 100 ms for the other ranks"));
    CHECK(contains(e.what(), "rank 0: running 0B3"));
  }
  CHECK(hooks.load() == 0);
}

TEST_CASE("timeouts: for ever is allowed, zero is refused") {
  toy::model model(4);
  pipeline_options o = options(2, 2);
  o.timeout = std::chrono::milliseconds::max();
  ppipe::pipeline<toy::model> forever(model, o, toy::loss);
  CHECK(std::isfinite(forever.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f))));
  o.timeout = 0ms;
  CHECK_THROWS_WITH((ppipe::pipeline<toy::model>(model, o, toy::loss)), Catch::Contains("the timeout is 0 ms"));
}

TEST_CASE("the pool's bytes count every buffer a stage holds, and its spare storage stops growing") {
  // GPipe, p=2, m=4, one toy layer per stage, 2 rows per microbatch: a payload {[2, 3], [2]} is
  // 32 bytes. The last stage holds, per microbatch, its input and output (64) and the loss
  // gradient (32); its first backward then takes a 32-byte input gradient: 4 * 96 + 32 = 416.
  toy::model model(2);
  ppipe::pipeline<toy::model, ppipe::schedules::gpipe> pipe(model, options(2, 4), toy::loss);
  const auto x = toy::batch(8, 3, 0.0f);
  const auto y = toy::batch(8, 3, 1.0f);
  pipe.train_step(x, y);
  CHECK(pipe.memory(1).peak_bytes == 416);
  pipe.train_step(x, y);
  const std::size_t spare0 = pipe.memory(0).spare_bytes;
  const std::size_t spare1 = pipe.memory(1).spare_bytes;
  for (int step = 0; step < 20; ++step) pipe.train_step(x, y);
  CHECK(pipe.memory(0).spare_bytes == spare0);
  CHECK(pipe.memory(1).spare_bytes == spare1);
  CHECK(spare1 <= pipe.memory(1).peak_bytes);
}

TEST_CASE("a receive's buffers come from the stage's spare storage, unzeroed and uncounted") {
  ppipe::buffer_pool<ppipe::host_tensor> pool;
  ppipe::payload held = pool.acquire(std::vector<ppipe::shape>{{2, 3}, {2}});
  held[0][5] = 7.0f;
  const float* storage = held[0].data();
  pool.release(held);
  CHECK(pool.stats().spare_bytes == 32);
  CHECK(pool.stats().live_bytes == 0);

  // [3, 2] has the 6 elements of the released [2, 3]: its storage comes back as it was (the
  // transport overwrites it whole), and it is not counted until the stage adopts it.
  ppipe::payload in = pool.for_receive({ppipe::shape{3, 2}, ppipe::shape{5}});
  REQUIRE(in.size() == 2);
  CHECK(in[0].shape() == ppipe::shape{3, 2});
  CHECK(in[0].data() == storage);
  CHECK(in[0][5] == 7.0f);
  CHECK(in[1].shape() == ppipe::shape{5});  // no spare storage of 5 elements: a new, zeroed one
  CHECK(in[1][4] == 0.0f);
  CHECK(pool.stats().live_bytes == 0);
  CHECK(pool.stats().spare_bytes == 8);
  pool.adopt(in);
  CHECK(pool.stats().live_bytes == 44);
  // The stage's own acquire still zeroes recycled storage.
  pool.release(in);
  CHECK(pool.acquire(ppipe::shape{6})[5] == 0.0f);
}

TEST_CASE("a failed infer leaves nothing counted") {
  toy::model model(4);
  model.set_fault({1, 0, false, 0ms});
  ppipe::pipeline<toy::model> pipe(model, options(2, 2));
  CHECK_THROWS_WITH(pipe.infer(toy::batch(4, 3, 0.0f)), Catch::Contains("injected fault in layer 1"));
  for (int s = 0; s < 2; ++s) {
    CHECK(pipe.memory(s).live_microbatches == 0);
    CHECK(pipe.memory(s).live_bytes == 0);
  }
  model.set_fault({});
  CHECK(pipe.infer(toy::batch(4, 3, 0.0f)).size() == 2);
}

TEST_CASE("a throwing loss and a throwing hook are named as such") {
  toy::model model(4);
  ppipe::pipeline<toy::model> pipe(model, options(2, 2), toy::loss, [](const ppipe::stage_info& s) {
    if (s.stage == 1) throw std::runtime_error("optimizer state corrupt");
  });
  try {
    pipe.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f));
    FAIL("no error");
  } catch (const ppipe::error& e) {
    CHECK(e.id() == "ppipe.stage_failed");
    CHECK(contains(e.what(), "rank 1's optimizer hook for stage 1 threw: optimizer state corrupt"));
  }
}

TEST_CASE("a layer or loss that puts tensors of other shapes in place of its own is refused, last stage included") {
  const auto refused = [](auto&& run, const std::string& part) {
    try {
      run();
      FAIL("no error");
    } catch (const ppipe::error& e) {
      INFO(e.what());
      CHECK(e.id() == "ppipe.invalid_argument");
      CHECK(contains(e.what(), part));
    }
  };
  // Layers 0..5 on 3 ranks: layer 5 is the last stage's last layer, whose output reaches the loss.
  // The stages of both backends (host, CPU streams) say it in the same words.
  const auto on = [&]<class Backend>() {
    for (const int layer : {5, 3, 0}) {
      toy::model model(6);
      ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, Backend> pipe(
          model, options(3, 2), toy::loss);
      toy::fault f;
      f.layer = layer;
      f.microbatch = 1;
      f.misshape = true;
      model.set_fault(f);
      INFO("layer " << layer);
      const std::string said = "layer " + std::to_string(layer) + " left an output of shapes [3, 3], [2] for microbatch 1 "
                               "where it was handed [2, 3], [2]";
      refused([&] { pipe.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f)); }, said);
      refused([&] { (void)pipe.infer(toy::batch(4, 3, 0.0f)); }, said);
      f.in_backward = true;
      model.set_fault(f);
      if (layer > 0) {
        refused([&] { pipe.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f)); },
                "layer " + std::to_string(layer) + " left an input gradient of shapes [3, 3], [2]");
      }
      // Nothing is left held, and the next step runs.
      model.set_fault({});
      CHECK(std::isfinite(pipe.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f))));
    }
  };
  on.template operator()<ppipe::host_backend>();
  on.template operator()<ppipe::cpu_stream_backend>();
  toy::model model(4);
  const auto swaps = [](const ppipe::payload& out, const ppipe::payload& t, ppipe::payload& g, double scale) {
    const double l = toy::loss(out, t, g, scale);
    g.pop_back();
    return l;
  };
  ppipe::pipeline<toy::model> pipe(model, options(2, 2), swaps);
  refused([&] { pipe.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f)); },
          "the loss left a gradient of shapes [2, 3] for an output of shapes [2, 3], [2]");
}

TEST_CASE("negative dimensions and element counts that overflow are refused, naming the shape") {
  using support::message_of;
  CHECK(message_of([] { (void)ppipe::shape{4, -4}; }) == "shape [4, -4] has a negative dimension (-4); every dimension must be >= 0");
  CHECK(message_of([] { (void)ppipe::shape(std::vector<std::int64_t>{-1}); }).find("shape [-1]") == 0);
  const std::int64_t big = std::int64_t{1} << 62;
  CHECK(message_of([&] { (void)ppipe::shape{16, big}; }).find("shape [16, 4611686018427387904] has more than") == 0);
  CHECK(message_of([] { (void)ppipe::shape{1 << 20, 1 << 20, 1 << 20}; }).find("has more than") != std::string::npos);
  // A zero anywhere makes an empty shape, however large the other dimensions.
  CHECK(ppipe::shape{0, big, big}.elements() == 0);
  CHECK(ppipe::shape{}.elements() == 1);
  // A dimension set afterwards is checked where the elements are counted (a tensor, a pool).
  ppipe::shape s{4, 3};
  s[1] = -4;
  CHECK(message_of([&] { ppipe::host_tensor t(s); }).find("negative dimension (-4)") != std::string::npos);
  CHECK(message_of([] { (void)ppipe::shape{4, 3}.with_batch(-2); }).find("shape [-2, 3]") == 0);

  // Through a pipeline: the step is refused, it does not return -nan.
  toy::model model(4);
  ppipe::pipeline<toy::model> pipe(model, options(2, 2), toy::loss);
  ppipe::payload bad = toy::batch(4, 3, 0.0f);
  const auto run = [&] {
    ppipe::shape odd = bad[0].shape();
    odd[1] = -3;
    bad[0] = ppipe::host_tensor(odd);
    (void)pipe.train_step(bad, toy::batch(4, 3, 1.0f));
  };
  CHECK(message_of(run).find("negative dimension") != std::string::npos);
}
