// The backend type: what a layer is handed (rank, stage, the stage's device context and its slot),
// and the backend's per-rank start hook, on the host backend.

#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ppipe/runtime/backend.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/gpipe.hpp"

namespace {

// Every layer adds 1; each call records what its context said.
struct context_model {
  struct seen {
    int rank = -1;
    int stage = -1;
    const void* device = nullptr;
    const int* slot = nullptr;
    int device_rank = -1;  // checked on the test's thread: Catch2's assertions are not thread-safe
    std::thread::id thread;
  };
  int layers = 4;
  std::mutex mutex;
  std::vector<seen> calls;
  std::atomic<int> slots_made{0};

  int num_layers() const { return layers; }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::host_layer_context& ctx, const ppipe::payload& in, ppipe::payload& out) {
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = in[0][i] + 1.0f;
    seen s;
    s.rank = ctx.rank;
    s.stage = ctx.stage;
    if (ctx.device != nullptr) {
      s.device = ctx.device->device;
      s.slot = &ctx.device->slot<int>([&] { return ++slots_made; });
      s.device_rank = ctx.device->rank;
    }
    s.thread = std::this_thread::get_id();
    const std::lock_guard lock(mutex);
    calls.push_back(s);
  }
};

ppipe::pipeline_options options(int p, int v) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = 4;
  o.virtual_stages = v;
  return o;
}

ppipe::payload batch() { return {ppipe::host_tensor(ppipe::shape{8, 2})}; }

// A host backend that records on which thread each rank started, and can refuse to start one.
std::mutex started_mutex;
std::map<int, std::vector<std::thread::id>> started;
int refuse_rank = -1;

struct recording_backend : ppipe::host_backend {
  static void start_rank(int rank, device_type&) {
    if (rank == refuse_rank) throw std::runtime_error("no device for this rank");
    const std::lock_guard lock(started_mutex);
    started[rank].push_back(std::this_thread::get_id());
  }
};
static_assert(ppipe::backend<recording_backend>);

}  // namespace

TEST_CASE("layers get their rank, stage and the stage's device context") {
  context_model model;
  ppipe::pipeline<context_model, ppipe::schedules::interleaved_1f1b> pipe(model, options(2, 2));
  for (int call = 0; call < 2; ++call) (void)pipe.infer(batch());

  std::map<int, const int*> slot_of_stage;
  std::map<int, const void*> device_of_rank;
  for (const auto& c : model.calls) {
    REQUIRE(c.device != nullptr);
    CHECK(c.rank == pipe.training_schedule().place.rank_of(c.stage));
    CHECK(c.device_rank == c.rank);
    // One slot per stage, made once and handed to every call of that stage.
    const auto [slot, fresh] = slot_of_stage.emplace(c.stage, c.slot);
    if (!fresh) CHECK(slot->second == c.slot);
    // One device per rank, shared by the rank's stages.
    const auto [device, new_rank] = device_of_rank.emplace(c.rank, c.device);
    if (!new_rank) CHECK(device->second == c.device);
  }
  CHECK(slot_of_stage.size() == 4);
  CHECK(model.slots_made == 4);
  CHECK(device_of_rank.size() == 2);
  CHECK(device_of_rank[0] != device_of_rank[1]);
}

TEST_CASE("a context built by hand has no device, and a slot holds one type") {
  ppipe::host_layer_context hand;
  CHECK(hand.device == nullptr);
  ppipe::device_context<ppipe::inline_device> context;
  CHECK(context.slot<int>([] { return 7; }) == 7);
  CHECK(context.slot<int>([] { return 8; }) == 7);  // made once
  try {
    (void)context.slot<double>([] { return 1.0; });
    FAIL("a slot of another type was handed out");
  } catch (const ppipe::error& e) {
    CHECK(std::string(e.message()).find("one type per stage slot") != std::string::npos);
  }
}

TEST_CASE("the backend starts each rank once, on the thread that runs it") {
  {
    const std::lock_guard lock(started_mutex);
    started.clear();
    refuse_rank = -1;
  }
  context_model model;
  ppipe::pipeline<context_model, ppipe::schedules::gpipe, ppipe::partitioners::balanced, recording_backend> pipe(
      model, options(3, 1));
  for (int call = 0; call < 3; ++call) (void)pipe.infer(batch());
  const std::lock_guard lock(started_mutex);
  REQUIRE(started.size() == 3);
  for (const auto& c : model.calls) {
    REQUIRE(started[c.rank].size() == 1);
    CHECK(started[c.rank].front() == c.thread);
  }
}

TEST_CASE("a rank the backend cannot start fails every call, naming the rank") {
  {
    const std::lock_guard lock(started_mutex);
    started.clear();
    refuse_rank = 1;
  }
  context_model model;
  ppipe::pipeline<context_model, ppipe::schedules::gpipe, ppipe::partitioners::balanced, recording_backend> pipe(
      model, options(2, 1));
  for (int call = 0; call < 2; ++call) {
    try {
      (void)pipe.infer(batch());
      FAIL("a call ran without rank 1");
    } catch (const ppipe::error& e) {
      const std::string what = e.what();
      CHECK(what.find("rank 1") != std::string::npos);
      CHECK(what.find("no device for this rank") != std::string::npos);
    }
  }
  refuse_rank = -1;
}
