// Processes that disagree on what their pipeline is (its layers, m, a replica's parameters), or on
// a call (its batch, its shapes, which call it is), are refused on every process before any
// payload moves, with a message that names the value on both sides; afterwards the pipeline and
// its transport work as before. Run by 2 and 4 processes, and (tag [replicas]) by 4 processes as 2
// replicas of a 2-rank pipeline.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/mpi.hpp>

#include "catch.hpp"
#include "mixed_dtype_model.hpp"
#include "world.hpp"

namespace {

using ppipe::layers::sequential;

using mpi_test::world_rank;
using mpi_test::world_size;

ppipe::payload filled(std::int64_t rows, std::int64_t cols) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{rows, cols})};
  for (std::size_t i = 0; i < p[0].size(); ++i) p[0][i] = static_cast<float>(i % 7) * 0.25f - 0.5f;
  return p;
}

// An MLP from 6 inputs to 3 outputs through `hidden` layers of `width`: 2 * hidden + 1 layers.
sequential mlp(int hidden, int width) {
  std::vector<int> widths{6};
  for (int i = 0; i < hidden; ++i) widths.push_back(width);
  widths.push_back(3);
  return sequential::mlp(widths, 42);
}

// `ranks` stages of mlp(4, width)'s 9 layers, split after activations whatever the width (the
// balanced split follows the layers' costs, which the width changes).
ppipe::pipeline_options options(int m, int ranks = 0) {
  ppipe::pipeline_options o;
  o.ranks = 0;
  o.microbatches = m;
  o.timeout = std::chrono::seconds(30);
  if (ranks == 2) o.split = ppipe::partition({0, 4, 9});
  if (ranks == 4) o.split = ppipe::partition({0, 2, 4, 6, 9});
  return o;
}

using pipe_type = ppipe::mpi::pipeline<sequential>;

pipe_type make_pipe(sequential& model, int m, int replicas = 1) {
  return pipe_type(model, options(m, world_size() / replicas), ppipe::layers::mse_loss{}, {},
                   ppipe::mpi::replicated(MPI_COMM_WORLD, replicas));
}

// `f` throws, on this process, a ppipe::error (invalid_argument) whose message has every part.
void refused(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL("the processes disagree, but the call went on");
  } catch (const ppipe::error& e) {
    INFO(e.what());
    CHECK(e.code() == ppipe::errc::invalid_argument);
    for (const std::string& part : parts) CHECK(std::string(e.what()).find(part) != std::string::npos);
  }
}

// No message of the pipeline's waits to be received: nothing crossed before the refusal.
template <class Pipe>
void nothing_sent(const Pipe& pipe) {
  MPI_Barrier(MPI_COMM_WORLD);
  int pending = 1;
  MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, pipe.transport().communicator(), &pending, MPI_STATUS_IGNORE);
  CHECK(pending == 0);
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace

TEST_CASE("processes that build different pipelines are refused when they build them", "[agreement]") {
  const int p = world_size();
  const bool odd = world_rank() == p - 1;  // the process that disagrees
  const std::string last = "rank " + std::to_string(p - 1) + " has ";
  SECTION("microbatches") {
    sequential model = mlp(4, 8);
    refused([&] { (void)make_pipe(model, odd ? 4 * p : 2 * p); },
            {"the processes disagree on microbatches per train_step (m): rank 0 has " + std::to_string(2 * p),
             last + std::to_string(4 * p), "every process must build the same pipeline"});
  }
  SECTION("models of different layer counts") {
    sequential model = mlp(odd ? 6 : 4, 8);
    refused([&] { pipe_type pipe(model, options(2 * p), ppipe::layers::mse_loss{}, {}, ppipe::mpi::transport(MPI_COMM_WORLD)); },
            {"the processes disagree on the model's layer count: rank 0 has 9, " + last + "13"});
  }
  SECTION("a process that cannot build its part is named on every process") {
    sequential model = mlp(4, 8);
    ppipe::pipeline_options o = options(2 * p);
    if (odd) o.virtual_stages = 50;  // more stages than layers: this process alone throws
    refused([&] { pipe_type pipe(model, o, ppipe::layers::mse_loss{}, {}, ppipe::mpi::transport(MPI_COMM_WORLD)); },
            {"rank " + std::to_string(p - 1) + " could not go on: [ppipe.invalid_argument] the model has 9 layers but "
                                             "the pipeline has " + std::to_string(50 * p) + " stages"});
  }
  SECTION("schedules given as values, of one name but with other actions") {
    // As two processes that loaded different files: both schedules are named "csv".
    sequential model = mlp(4, 8);
    ppipe::pipeline_options o = options(2 * p);
    o.schedule = ppipe::make_schedule(odd ? "gpipe" : "1f1b", {p, 2 * p, 1});
    o.schedule->name = "csv";
    refused([&] { pipe_type pipe(model, o, ppipe::layers::mse_loss{}, {}, ppipe::mpi::transport(MPI_COMM_WORLD)); },
            {"the processes disagree on the schedule's actions (fingerprint): rank 0 has "});
  }
  SECTION("a schedule given as a value with another rank count than the processes") {
    sequential model = mlp(4, 8);
    ppipe::pipeline_options o = options(2 * p);
    o.schedule = ppipe::make_schedule("1f1b", {odd ? p - 1 : p, 2 * p, 1});
    refused([&] { pipe_type pipe(model, o, ppipe::layers::mse_loss{}, {}, ppipe::mpi::transport(MPI_COMM_WORLD)); },
            {"rank " + std::to_string(p - 1) + " could not go on: [ppipe.invalid_argument] pipeline_options::schedule "
             "\"1f1b\" has p=" + std::to_string(p - 1) + " ranks but the transport has " + std::to_string(p)});
  }
  // Alike, they build and train, a schedule given as a value too.
  sequential model = mlp(4, 8);
  pipe_type pipe = make_pipe(model, 2 * p);
  ppipe::pipeline_options given = options(2 * p);
  given.schedule = ppipe::make_schedule("zb_h1", {p, 2 * p, 1});
  sequential zb_model = mlp(4, 8);
  pipe_type zb(zb_model, given, ppipe::layers::mse_loss{}, {}, ppipe::mpi::transport(MPI_COMM_WORLD));
  CHECK(std::isfinite(zb.train_step(filled(4 * p, 6), filled(4 * p, 3))));
  CHECK(std::isfinite(pipe.train_step(filled(4 * p, 6), filled(4 * p, 3))));
}

TEST_CASE("a call whose batch, shapes or kind differ between processes is refused before any payload moves",
          "[agreement]") {
  const int p = world_size();
  const int m = 2 * p;
  const bool odd = world_rank() == p - 1;
  const std::string last = "rank " + std::to_string(p - 1) + " has ";
  sequential model = mlp(4, odd ? 10 : 8);  // hidden widths differ: the boundaries' shapes do
  sequential same = mlp(4, 8);
  pipe_type widths = make_pipe(model, m);
  pipe_type pipe = make_pipe(same, m);

  // Different hidden widths: every stage after the first takes another shape.
  refused([&] { (void)widths.train_step(filled(2 * m, 6), filled(2 * m, 3)); },
          {"the processes disagree on stage 1's input shapes: rank 0 has [2, 8] for all " + std::to_string(m) +
               " microbatches, " + last + "[2, 10] for all " + std::to_string(m) + " microbatches"});
  nothing_sent(widths);
  // Batches of different sizes.
  refused([&] { (void)pipe.train_step(filled((odd ? 3 : 2) * m, 6), filled((odd ? 3 : 2) * m, 3)); },
          {"the processes disagree on rows per microbatch: rank 0 has 2 for all " + std::to_string(m) + " microbatches, " +
           last + "3 for all"});
  nothing_sent(pipe);
  refused([&] { (void)pipe.train_step(filled(2 * m + (odd ? 1 : 0), 6), filled(2 * m + (odd ? 1 : 0), 3)); },
          {last + "3 for microbatches 0; 2 for 1.." + std::to_string(m - 1)});
  nothing_sent(pipe);
  // One process's batch cannot be split at all.
  refused([&] { (void)pipe.train_step(filled(odd ? m - 1 : m, 6), filled(odd ? m - 1 : m, 3)); },
          {"rank " + std::to_string(p - 1) + " could not go on: [ppipe.invalid_argument] the inputs have " +
           std::to_string(m - 1) + " rows"});
  nothing_sent(pipe);
  // Different calls.
  refused([&] {
    if (odd) {
      (void)pipe.infer(filled(m, 6));
    } else {
      (void)pipe.train_step(filled(m, 6), filled(m, 3));
    }
  }, {"the processes disagree on the call: rank 0 has train_step, " + last + "infer"});
  nothing_sent(pipe);
  // Agreeing again, they train, and infer.
  CHECK(std::isfinite(pipe.train_step(filled(2 * m, 6), filled(2 * m, 3))));
  CHECK(pipe.infer(filled(m, 6)).front().shape() == ppipe::shape{m, 3});
}

TEST_CASE("large payloads of different sizes are refused before any of them moves", "[agreement]") {
  // Layers without parameters, 2^16 values a row: a microbatch of 4 rows is 1 MiB, of 8 rows 2 MiB.
  const int p = world_size();
  const int m = 2 * p;
  const bool odd = world_rank() == p - 1;
  std::vector<ppipe::layers::any_layer> layers;
  for (int i = 0; i < 2 * p; ++i) layers.emplace_back(ppipe::layers::activation(ppipe::layers::activation_kind::relu));
  sequential model(std::move(layers));
  pipe_type pipe(model, options(m), {}, {}, ppipe::mpi::transport(MPI_COMM_WORLD));
  const std::int64_t rows = (odd ? 8 : 4) * m;
  refused([&] { (void)pipe.infer(filled(rows, 1 << 16)); },
          {"the processes disagree on rows per microbatch: rank 0 has 4 for all",
           "rank " + std::to_string(p - 1) + " has 8 for all"});
  nothing_sent(pipe);
  CHECK(pipe.infer(filled(4 * m, 1 << 16)).front().shape() == (ppipe::shape{4 * m, 1 << 16}));
}

TEST_CASE("replicas that hold different parameters, or pass other shapes, are refused", "[replicas]") {
  // 4 processes: replica 1 (processes 1 and 3) has hidden layers of width 10, replica 0 of 8.
  const bool other = world_rank() % 2 == 1;
  sequential model = mlp(4, other ? 10 : 8);
  refused([&] { (void)make_pipe(model, 4, 2); },
          {"the processes disagree on parameter values of stage ", " of replica 0 (process ", " of replica 1 (process "});
  // Only the last stage's layers differ: the replicas of pipeline rank 1 find it, and every
  // process, rank 0's too, is refused (none goes on to wait for the others).
  sequential tail = sequential::mlp({6, 8, 8, other ? 10 : 8, other ? 10 : 8, 3}, 42);
  refused([&] { (void)make_pipe(tail, 4, 2); },
          {"the processes disagree on parameter values of stage 1: rank 1 of replica 0 (process 2) has ",
           "rank 1 of replica 1 (process 3) has "});
  // Pipelines whose parameters match but whose batches do not.
  sequential same = mlp(4, 8);
  pipe_type pipe = make_pipe(same, 4, 2);
  const std::int64_t rows = other ? 12 : 8;
  refused([&] { (void)pipe.train_step(filled(rows, 6), filled(rows, 3)); },
          {"rows per microbatch: rank ", " of replica 0 (process ", ") has 2 for all 4 microbatches",
           " of replica 1 (process ", ") has 3 for all 4 microbatches"});
  CHECK(std::isfinite(pipe.train_step(filled(8, 6), filled(8, 3))));
}

TEST_CASE("processes whose boundaries differ only in dtype are refused before any payload moves", "[agreement]") {
  const int p = world_size();
  const int m = 2 * p;
  const bool odd = world_rank() == p - 1;
  const std::string last = "rank " + std::to_string(p - 1) + " has ";
  // 8 layers in stages of 8 / p; every stage after the first takes an odd layer's output, which is
  // f32 on every process but the last, whose odd layers write f16.
  mixed::model model(8, 5, ppipe::dtype::bf16, odd ? ppipe::dtype::f16 : ppipe::dtype::f32);
  ppipe::pipeline_options o;
  o.ranks = 0;
  o.microbatches = m;
  o.timeout = std::chrono::seconds(30);
  ppipe::mpi::pipeline<mixed::model> pipe(model, o, mixed::loss, {}, ppipe::mpi::transport(MPI_COMM_WORLD));
  refused([&] { (void)pipe.train_step(mixed::batch(2 * m, 5, 0), mixed::target(2 * m, 5, 0)); },
          {"the processes disagree on stage 1's input shapes: rank 0 has [2, 5], [2] i32 for all " +
               std::to_string(m) + " microbatches, " + last + "[2, 5] f16, [2] i32 for all"});
  nothing_sent(pipe);
}
