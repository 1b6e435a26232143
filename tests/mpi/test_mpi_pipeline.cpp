// The SPMD pipeline over MPI, run by every process of the job (2 or 4 of them), beyond the backend
// contract (test_mpi_contract.cpp: numerics, memory, failures and timeouts): a process holds only
// its own stages; bf16/i32 and large two-tensor payloads train bitwise like the host backend; a
// layer writing the wrong shape is refused on every rank; the transport delivers payloads of every
// size and layout in the order they were posted; and (4 processes, tag [replicas]) two
// data-parallel replicas of a 2-stage pipeline average their gradients.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <ppipe/mpi.hpp>
#include <ppipe/layers/layers.hpp>

#include "catch.hpp"
#include "faulty_model.hpp"
#include "mixed_dtype_model.hpp"
#include "toy_model.hpp"
#include "world.hpp"

namespace {

using ppipe::layers::sequential;

using mpi_test::world_rank;
using mpi_test::world_size;

// Deterministic data; `salt` makes each step's batch different.
ppipe::payload filled(std::int64_t rows, std::int64_t cols, float salt) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{rows, cols})};
  for (std::size_t i = 0; i < p[0].size(); ++i) p[0][i] = std::sin(0.37f * static_cast<float>(i) + salt);
  return p;
}

std::vector<std::vector<float>> copy(const std::vector<std::span<const float>>& spans) {
  std::vector<std::vector<float>> out;
  for (const auto& s : spans) out.emplace_back(s.begin(), s.end());
  return out;
}

// How a rank's part of a run failed, as the executor reports it to the transport's conclude().
ppipe::rank_outcome failure(ppipe::errc code, std::string message) {
  ppipe::rank_outcome r;
  r.what = ppipe::rank_outcome::outcome::failed;
  r.code = code;
  r.message = std::move(message);
  return r;
}

// 11 layers (6 linear, 5 ReLU): enough for 4 ranks x 2 virtual stages.
sequential make_model() { return sequential::mlp({6, 16, 16, 16, 16, 16, 3}, 42); }

// What a process holds of an SPMD pipeline: v stages of its own, the same split as the host
// backend's, and nothing of the others' (their memory is asked of them, their layers never move
// here). Numerics, memory, failures and timeouts are the backend contract's (test_mpi_contract.cpp).
template <class Schedule>
void holds_only_its_own_stages(int v) {
  const int p = world_size();
  const ppipe::layers::sgd opt(0.05f);
  sequential untouched = make_model();
  sequential there = make_model();
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = 2 * p;
  o.virtual_stages = v;
  const ppipe::pipeline<sequential, Schedule> host(untouched, o, ppipe::layers::mse_loss{});
  o.ranks = 0;  // the transport's
  ppipe::mpi::pipeline<sequential, Schedule> net(there, o, ppipe::layers::mse_loss{},
                                                 [&](const ppipe::stage_info& s) { opt.step(there, s); },
                                                 ppipe::mpi::transport(MPI_COMM_WORLD));
  REQUIRE(net.options().ranks == p);
  REQUIRE(net.split() == host.split());
  (void)net.train_step(filled(8 * p + 1, 6, 0.0f), filled(8 * p + 1, 3, 0.5f));
  int local = 0;
  for (int s = 0; s < net.split().num_stages(); ++s) {
    const int first = net.split().first(s);
    const int end = net.split().end(s);
    if (net.is_local(s)) {
      ++local;
      CHECK_NOTHROW(net.memory(s));
    } else {
      // Another process trains these layers: this process's copy of them never moved.
      CHECK(copy(there.parameters(first, end)) == copy(untouched.parameters(first, end)));
      CHECK_THROWS_AS(net.memory(s), ppipe::error);
    }
  }
  CHECK(local == v);
}

}  // namespace

TEST_CASE("over MPI a process holds only its own stages: GPipe, 1F1B, interleaved 1F1B", "[layout]") {
  holds_only_its_own_stages<ppipe::schedules::gpipe>(1);
  holds_only_its_own_stages<ppipe::schedules::one_f_one_b>(1);
  holds_only_its_own_stages<ppipe::schedules::interleaved_1f1b>(2);
}

namespace {

// A model whose boundaries carry bf16 activations and an i32 tensor (mixed_dtype_model.hpp),
// trained over MPI and on the host backend: losses, parameters and inference outputs bitwise alike.
template <class Schedule>
void mixed_dtypes_train_like_the_host_backend(int v) {
  const int p = world_size();
  const int m = 2 * p;
  const int width = 5;
  const float lr = 0.05f;
  mixed::model here(8, width);
  mixed::model there(8, width);
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  ppipe::pipeline<mixed::model, Schedule> host(here, o, mixed::loss,
                                               [&](const ppipe::stage_info& s) { here.sgd(s.first_layer, s.end_layer, lr); });
  o.ranks = 0;
  ppipe::mpi::pipeline<mixed::model, Schedule> net(
      there, o, mixed::loss, [&](const ppipe::stage_info& s) { there.sgd(s.first_layer, s.end_layer, lr); },
      ppipe::mpi::transport(MPI_COMM_WORLD));
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    const ppipe::payload x = mixed::batch(3 * m + 1, width, step);
    const ppipe::payload y = mixed::target(3 * m + 1, width, step);
    const double want = host.train_step(x, y);
    const double got = net.train_step(x, y);
    REQUIRE(std::isfinite(want));
    CHECK(got == want);
  }
  for (int s = 0; s < net.split().num_stages(); ++s) {
    if (!net.is_local(s)) continue;
    for (int l = net.split().first(s); l < net.split().end(s); ++l) {
      CHECK(there.weights()[static_cast<std::size_t>(l)] == here.weights()[static_cast<std::size_t>(l)]);
      CHECK(there.biases()[static_cast<std::size_t>(l)] == here.biases()[static_cast<std::size_t>(l)]);
    }
  }
  const ppipe::payload x = mixed::batch(2 * p + 3, width, 9);
  const ppipe::payload want = host.infer(x);
  const ppipe::payload got = net.infer(x);
  CHECK(ppipe::shapes_of(got) == ppipe::shapes_of(want));
  CHECK(got == want);
}

}  // namespace

TEST_CASE("bf16 and i32 payloads cross MPI boundaries bitwise like the host backend: GPipe", "[numerics][dtype]") {
  mixed_dtypes_train_like_the_host_backend<ppipe::schedules::gpipe>(1);
}

TEST_CASE("bf16 and i32 payloads cross MPI boundaries bitwise like the host backend: 1F1B", "[numerics][dtype]") {
  mixed_dtypes_train_like_the_host_backend<ppipe::schedules::one_f_one_b>(1);
}

TEST_CASE("bf16 and i32 payloads cross MPI boundaries bitwise like the host backend: interleaved 1F1B",
          "[numerics][dtype]") {
  mixed_dtypes_train_like_the_host_backend<ppipe::schedules::interleaved_1f1b>(2);
}

TEST_CASE("a model whose stages pass two tensors past the inline limit trains over MPI bitwise like the host backend",
          "[numerics]") {
  const int p = world_size();
  const int m = 2 * p;
  // 8000-value boundaries, past the inline limit (sent from the tensors' memory by one datatype);
  // the contract's toy model (width 3) covers boundaries sent back to back through a buffer.
  for (const int width : {2000}) {
    INFO("width " << width);
    const float lr = 1e-6f;  // the loss falls and every value stays finite
    toy::model here(2 * p, width);
    toy::model there(2 * p, width);
    ppipe::pipeline_options o;
    o.ranks = p;
    o.microbatches = m;
    ppipe::pipeline<toy::model> host(here, o, toy::loss,
                                     [&](const ppipe::stage_info& s) { here.sgd(s.first_layer, s.end_layer, lr); });
    o.ranks = 0;
    ppipe::mpi::pipeline<toy::model> net(there, o, toy::loss,
                                         [&](const ppipe::stage_info& s) { there.sgd(s.first_layer, s.end_layer, lr); },
                                         ppipe::mpi::transport(MPI_COMM_WORLD));
    for (int step = 0; step < 3; ++step) {
      const ppipe::payload x = toy::batch(4 * m + 1, width, static_cast<float>(step));
      const ppipe::payload y = toy::batch(4 * m + 1, width, 10.0f + static_cast<float>(step));
      const double want = host.train_step(x, y);
      const double got = net.train_step(x, y);
      REQUIRE(std::isfinite(want));
      CHECK(got == want);
    }
    for (int s = 0; s < net.split().num_stages(); ++s) {
      if (!net.is_local(s)) continue;
      for (int l = net.split().first(s); l < net.split().end(s); ++l) {
        CHECK(there.a()[static_cast<std::size_t>(l)] == here.a()[static_cast<std::size_t>(l)]);
        CHECK(there.b()[static_cast<std::size_t>(l)] == here.b()[static_cast<std::size_t>(l)]);
      }
    }
    const ppipe::payload x = toy::batch(2 * p + 3, width, 9.0f);
    const ppipe::payload want = host.infer(x);
    const auto finite = [](const ppipe::payload& q) {
      for (const ppipe::host_tensor& t : q) {
        for (std::size_t i = 0; i < t.size(); ++i) {
          if (!std::isfinite(t[i])) return false;
        }
      }
      return true;
    };
    REQUIRE(finite(want));  // NaN == NaN is false: the comparison below needs finite values
    CHECK(net.infer(x) == want);
  }
}

// Throwing layers and losses are the backend contract's (test_mpi_contract.cpp); a layer that writes
// the wrong shape is refused by its own stage, and that refusal must reach every process too.
TEST_CASE("a layer that writes the wrong shape is refused on every rank, and the next step runs clean", "[failure]") {
  const int p = world_size();
  const int m = 2 * p;
  const ppipe::layers::sgd opt(0.05f);
  sequential reference = make_model();
  mpi_test::faulty model(make_model());
  ppipe::pipeline_options o;
  o.ranks = 0;
  o.microbatches = m;
  o.timeout = std::chrono::seconds(30);
  ppipe::mpi::pipeline<mpi_test::faulty> net(model, o, ppipe::layers::mse_loss{},
                                             [&](const ppipe::stage_info& s) { opt.step(model.inner(), s); },
                                             ppipe::mpi::transport(MPI_COMM_WORLD));
  o.ranks = p;
  ppipe::pipeline<sequential> host(reference, o, ppipe::layers::mse_loss{},
                                   [&](const ppipe::stage_info& s) { opt.step(reference, s); });
  const ppipe::payload x = filled(3 * m, 6, 1.0f);
  const ppipe::payload y = filled(3 * m, 3, 2.0f);

  struct fault_case {
    int layer;
    int rank;              // the rank that fails
    std::string expected;  // in every process's message
  };
  // At a boundary (stage 0's last layer) and before the loss (the last stage's last layer).
  const int boundary = net.split().end(0) - 1;
  const int before_loss = model.num_layers() - 1;
  const std::vector<fault_case> cases{
      {boundary, 0, "stage 0: layer " + std::to_string(boundary) + " left an output of shapes"},
      {before_loss, p - 1, "layer " + std::to_string(before_loss) + " left an output of shapes"},
  };
  for (const fault_case& c : cases) {
    INFO("fault on rank " << c.rank << ": " << c.expected);
    model.arm(mpi_test::faulty::fault::wrong_shape_in_forward, c.layer, 1);
    try {
      net.train_step(x, y);
      FAIL("the step should have failed on rank " << c.rank);
    } catch (const ppipe::error& e) {
      const std::string what = e.what();
      CHECK(e.code() == ppipe::errc::invalid_argument);
      CHECK(what.find(c.expected) != std::string::npos);
      CHECK(what.find("rank " + std::to_string(c.rank)) != std::string::npos);
    }
    model.disarm();
    // The failed step ran no optimizer; gradients it accumulated are dropped by hand, as a user would.
    model.inner().zero_grad();
    // The next step runs clean, bitwise like the host's: nothing of the failed step is left in flight.
    const double want = host.train_step(x, y);
    const double got = net.train_step(x, y);
    CHECK(got == want);
  }
  for (int s = 0; s < net.split().num_stages(); ++s) {
    if (!net.is_local(s)) continue;
    CHECK(copy(model.inner().parameters(net.split().first(s), net.split().end(s))) ==
          copy(reference.parameters(net.split().first(s), net.split().end(s))));
  }
}

TEST_CASE("the MPI transport delivers payloads of every size in the order they were posted", "[transport]") {
  ppipe::mpi::transport net(MPI_COMM_WORLD);
  const int me = net.rank();
  const auto deadline = ppipe::deadline_after(std::chrono::seconds(30));
  // Sizes around the inline limit (16 KiB = 4096 floats), empty tensors and several tensors.
  const std::vector<std::vector<std::int64_t>> sizes{{0},    {1},           {4095},     {4096}, {4097},
                                                     {3, 0}, {100, 5000, 7}, {1 << 20}, {2}};
  const auto make = [](const std::vector<std::int64_t>& s, int k) {
    ppipe::payload p;
    for (std::size_t t = 0; t < s.size(); ++t) {
      ppipe::host_tensor x(ppipe::shape{s[t], 1});
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(k * 1000 + static_cast<int>(t)) + static_cast<float>(i % 97);
      p.push_back(std::move(x));
    }
    return p;
  };
  net.reset();
  if (me == 0) {
    std::vector<ppipe::payload> sent;
    std::vector<ppipe::mpi::transport::send_handle> handles;
    for (std::size_t k = 0; k < sizes.size(); ++k) sent.push_back(make(sizes[k], static_cast<int>(k)));
    for (const auto& s : sent) handles.push_back(net.post_send(0, 1, s));
    for (auto& h : handles) CHECK(net.complete_send(h, deadline) == ppipe::wait_status::ready);
  } else if (me == 1) {
    std::vector<ppipe::mpi::transport::recv_handle> handles;
    for (std::size_t k = 0; k < sizes.size(); ++k) handles.push_back(net.post_recv(0, 1));
    // Completed last first: each receive still gets its own send.
    for (std::size_t k = sizes.size(); k-- > 0;) {
      ppipe::payload got;
      REQUIRE(net.complete_recv(handles[k], got, deadline) == ppipe::wait_status::ready);
      CHECK(got == make(sizes[k], static_cast<int>(k)));
    }
  }
  const ppipe::run_verdict v = net.conclude(ppipe::rank_outcome{}, deadline);
  CHECK(v.ok);
  CHECK_THROWS_AS(net.post_send(me, me, ppipe::payload{}), ppipe::error);
}

TEST_CASE("a receive fills the buffers it is handed when their shapes match, and replaces them otherwise",
          "[transport]") {
  ppipe::mpi::transport net(MPI_COMM_WORLD);
  const int me = net.rank();
  const auto deadline = ppipe::deadline_after(std::chrono::seconds(30));
  const auto filled = [](std::vector<ppipe::shape> shapes, float first) {
    ppipe::payload p;
    for (ppipe::shape& s : shapes) {
      ppipe::host_tensor t(std::move(s));
      for (std::size_t i = 0; i < t.size(); ++i) t[i] = first + static_cast<float>(i);
      p.push_back(std::move(t));
    }
    return p;
  };
  // Inline (2 floats; two tensors) and separate (5000 floats) layouts.
  const std::vector<std::vector<ppipe::shape>> sent{{{1, 2}}, {{5000}}, {{2, 3}, {4}}};
  for (int run = 0; run < 2; ++run) {  // the second run reuses the first one's slots
    net.reset();
    if (me == 0) {
      // Each payload three times: into matching buffers, into mismatched ones, into nothing.
      std::vector<ppipe::payload> payloads;
      for (int k = 0; k < 9; ++k) payloads.push_back(filled(sent[static_cast<std::size_t>(k / 3)], 10.0f * static_cast<float>(k)));
      std::vector<ppipe::mpi::transport::send_handle> handles;
      for (const ppipe::payload& p : payloads) handles.push_back(net.post_send(0, 1, p));
      for (auto& h : handles) CHECK(net.complete_send(h, deadline) == ppipe::wait_status::ready);
      // A completed handle stays complete.
      CHECK(net.complete_send(handles.front(), deadline) == ppipe::wait_status::ready);
    } else if (me == 1) {
      for (int k = 0; k < 9; ++k) {
        const std::vector<ppipe::shape>& shapes = sent[static_cast<std::size_t>(k / 3)];
        ppipe::payload into;
        if (k % 3 == 0) {
          for (const ppipe::shape& s : shapes) into.emplace_back(s);
        } else if (k % 3 == 1) {
          into.emplace_back(ppipe::shape{static_cast<std::int64_t>(shapes[0].elements()) + 1});
        }
        std::vector<const float*> storage;
        for (const ppipe::host_tensor& t : into) storage.push_back(t.data());
        auto h = net.post_recv(0, 1);
        REQUIRE(net.complete_recv(h, into, deadline) == ppipe::wait_status::ready);
        CHECK(into == filled(shapes, 10.0f * static_cast<float>(k)));
        if (k % 3 == 0) {
          for (std::size_t t = 0; t < into.size(); ++t) CHECK(into[t].data() == storage[t]);
        }
        CHECK_THROWS_AS(net.complete_recv(h, into, deadline), ppipe::error);  // completed once already
      }
    }
    CHECK(net.conclude(ppipe::rank_outcome{}, deadline).ok);
  }
}

TEST_CASE("payloads sent with agreed shapes arrive in the buffers their receives were posted with",
          "[transport]") {
  ppipe::mpi::transport net(MPI_COMM_WORLD);
  const int me = net.rank();
  const auto deadline = ppipe::deadline_after(std::chrono::seconds(30));
  // Values that differ from tensor to tensor, so a tensor delivered at another's offset shows.
  const auto make = [](const std::vector<ppipe::shape>& shapes, float first) {
    ppipe::payload p;
    for (std::size_t j = 0; j < shapes.size(); ++j) {
      ppipe::host_tensor t(shapes[j]);
      for (std::size_t i = 0; i < t.size(); ++i) t[i] = first + static_cast<float>(10000 * j + i % 997);
      p.push_back(std::move(t));
    }
    return p;
  };
  // One tensor: empty, one value, past the inline limit, and 4 MiB (rendezvous). Several tensors:
  // small ones (copied back to back), one of them empty, and large ones (a datatype of their
  // addresses, no copy).
  const std::vector<std::vector<ppipe::shape>> sent{{{0}, {3}, {2}}, {{0}},         {{1}}, {{3, 2000}}, {{1 << 20}},
                                                    {{2, 3}, {4}},   {{3, 2000}, {0}, {1 << 18}}};
  for (int run = 0; run < 2; ++run) {
    net.reset();
    if (me == 0) {
      std::vector<ppipe::payload> payloads;
      for (std::size_t k = 0; k < sent.size(); ++k) payloads.push_back(make(sent[k], 7.0f * static_cast<float>(k + 1)));
      std::vector<ppipe::mpi::transport::send_handle> handles;
      for (const ppipe::payload& p : payloads) handles.push_back(net.post_send(0, 1, p, ppipe::agreed_shapes));
      // Then a described send: the two forms share the pair's sequence numbers.
      const ppipe::payload described = make({{1}}, 99.0f);
      handles.push_back(net.post_send(0, 1, described));
      for (auto& h : handles) CHECK(net.complete_send(h, deadline) == ppipe::wait_status::ready);
    } else if (me == 1) {
      // The first message is the first payload's 5 values alone, back to back: 20 bytes, no header.
      int arrived = 0;
      MPI_Status first{};
      while (arrived == 0) MPI_Iprobe(0, MPI_ANY_TAG, net.communicator(), &arrived, &first);
      int first_bytes = -1;
      MPI_Get_count(&first, MPI_BYTE, &first_bytes);
      CHECK(first_bytes == 20);
      std::vector<ppipe::mpi::transport::recv_handle> handles;
      std::vector<std::vector<const float*>> storage;
      for (const auto& shapes : sent) {
        ppipe::payload buffers = make(shapes, -1.0f);
        storage.emplace_back();
        for (const ppipe::host_tensor& t : buffers) storage.back().push_back(t.data());
        handles.push_back(net.post_recv(0, 1, ppipe::agreed_shapes, std::move(buffers)));
      }
      auto described = net.post_recv(0, 1);
      for (std::size_t k = sent.size(); k-- > 0;) {  // last first
        ppipe::payload got{ppipe::host_tensor(ppipe::shape{5})};  // ignored: the posted buffers come back
        REQUIRE(net.complete_recv(handles[k], got, deadline) == ppipe::wait_status::ready);
        CHECK(got == make(sent[k], 7.0f * static_cast<float>(k + 1)));
        REQUIRE(got.size() == storage[k].size());
        for (std::size_t t = 0; t < got.size(); ++t) {
          if (got[t].size() != 0) CHECK(got[t].data() == storage[k][t]);
        }
      }
      ppipe::payload got;
      REQUIRE(net.complete_recv(described, got, deadline) == ppipe::wait_status::ready);
      CHECK(got == make({{1}}, 99.0f));
    }
    CHECK(net.conclude(ppipe::rank_outcome{}, deadline).ok);
  }

  // A sender that breaks the agreement is refused by the receiver, with the byte counts: 5 or 7 values
  // for a tensor of 6, 5 values for two tensors of 3, and the same past 1 MiB. The receiver then fails the run; the
  // drain finds that receive done, and the next run is clean.
  struct broken {
    std::vector<ppipe::shape> sent, posted;
    std::string said;
  };
  const std::vector<broken> cases{
      {{{5}}, {{6}}, "rank 0 sent 20 bytes for a tensor of shape [6]"},
      {{{7}}, {{6}}, "rank 0 sent 28 bytes for a tensor of shape [6] (24 bytes)"},
      {{{2}, {3}}, {{3}, {3}}, "rank 0 sent 20 bytes for tensors of shapes [3], [3] (24 bytes)"},
      // 1 MiB and more: Open MPI's shared-memory single-copy path writes a longer message whole,
      // whatever the receive posted, so its size is read before it is received.
      {{{(1 << 18) + 5}}, {{1 << 18}}, "rank 0 sent 1048596 bytes for a tensor of shape [262144] (1048576 bytes)"},
      {{{1 << 18}, {1 << 17}}, {{1 << 18}, {1 << 16}},
       "rank 0 sent 1572864 bytes for tensors of shapes [262144], [65536] (1310720 bytes)"},
      {{{(1 << 18) - 3}}, {{1 << 18}}, "rank 0 sent 1048564 bytes for a tensor of shape [262144]"},
  };
  const ppipe::rank_outcome failed = failure(ppipe::errc::backend, "the agreement was broken");
  for (const broken& c : cases) {
    INFO(c.said);
    net.reset();
    ppipe::rank_outcome mine;
    const ppipe::payload wrong = make(c.sent, 1.0f);
    if (me == 0) {
      (void)net.post_send(0, 1, wrong, ppipe::agreed_shapes);
    } else if (me == 1) {
      auto h = net.post_recv(0, 1, ppipe::agreed_shapes, make(c.posted, 0.0f));
      ppipe::payload got;
      try {
        (void)net.complete_recv(h, got, deadline);
        FAIL("a message that breaks the agreement must be refused");
      } catch (const ppipe::error& e) {
        CHECK(std::string(e.what()).find(c.said) != std::string::npos);
      }
      mine = failed;
    }
    const ppipe::run_verdict v = net.conclude(mine, deadline);
    CHECK_FALSE(v.ok);
    CHECK(v.message == "the agreement was broken");
  }
  net.reset();
  const ppipe::payload x = make({{6}}, 3.0f);
  if (me == 0) {
    auto h = net.post_send(0, 1, x, ppipe::agreed_shapes);
    CHECK(net.complete_send(h, deadline) == ppipe::wait_status::ready);
  } else if (me == 1) {
    auto h = net.post_recv(0, 1, ppipe::agreed_shapes, make({{6}}, 0.0f));
    ppipe::payload got;
    REQUIRE(net.complete_recv(h, got, deadline) == ppipe::wait_status::ready);
    CHECK(got == x);
  }
  CHECK(net.conclude(ppipe::rank_outcome{}, deadline).ok);
}

TEST_CASE("a failed run takes in what was sent with agreed shapes and never received, and cancels what was never sent",
          "[transport][failure]") {
  ppipe::mpi::transport net(MPI_COMM_WORLD);
  const int me = net.rank();
  const auto deadline = ppipe::deadline_after(std::chrono::seconds(30));
  const ppipe::rank_outcome failed = failure(ppipe::errc::stage_failed, "rank 1 gave up");
  const auto make = [](std::int64_t n, float first) {
    ppipe::host_tensor t(ppipe::shape{n});
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = first + static_cast<float>(i % 1000);
    return ppipe::payload{std::move(t)};
  };
  // Run 1: rank 0 sends five payloads (small, 4 MiB, two small tensors, small, two large tensors);
  // rank 1 posts a receive for the first only and fails: the drain takes in the other four,
  // whatever their size and number of tensors.
  // Run 2: rank 0 sends one payload; rank 1 posts two receives and fails: the second is cancelled.
  for (int run = 0; run < 2; ++run) {
    net.reset();
    std::vector<ppipe::payload> payloads;
    if (run == 0) {
      payloads = {make(3, 1.0f), make(1 << 20, 2.0f), make(2, 3.0f), make(4, 6.0f), make(1 << 18, 7.0f)};
      payloads[2].push_back(make(5, 4.0f).front());
      payloads[4].push_back(make(3, 8.0f).front());
    } else {
      payloads = {make(3, 5.0f)};
    }
    ppipe::rank_outcome mine;
    std::vector<ppipe::mpi::transport::recv_handle> posted;
    if (me == 0) {
      for (const ppipe::payload& p : payloads) (void)net.post_send(0, 1, p, ppipe::agreed_shapes);
    } else if (me == 1) {
      posted.push_back(net.post_recv(0, 1, ppipe::agreed_shapes, make(3, 0.0f)));
      if (run == 1) posted.push_back(net.post_recv(0, 1, ppipe::agreed_shapes, make(3, 0.0f)));
      mine = failed;
    }
    const ppipe::run_verdict v = net.conclude(mine, deadline);
    CHECK_FALSE(v.ok);
    CHECK(v.rank == 1);
    CHECK(v.message == "rank 1 gave up");
    // Every message rank 0 sent was taken in, small ones too (their sends complete without a
    // receiver, so only this says so): nothing is left to match on ppipe's communicator. (Rank 0
    // sent its report after them, and rank 1 has that report.) The barrier keeps rank 0 from
    // sending the next run's payloads before rank 1 has looked.
    int left = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, net.communicator(), &left, MPI_STATUS_IGNORE);
    CHECK(left == 0);
    MPI_Barrier(net.communicator());
  }
  // Nothing of either run is left in flight: the next run delivers its own payload.
  net.reset();
  const ppipe::payload x = make(3, 8.0f);
  if (me == 0) {
    auto h = net.post_send(0, 1, x, ppipe::agreed_shapes);
    CHECK(net.complete_send(h, deadline) == ppipe::wait_status::ready);
  } else if (me == 1) {
    auto h = net.post_recv(0, 1, ppipe::agreed_shapes, make(3, 0.0f));
    ppipe::payload got;
    REQUIRE(net.complete_recv(h, got, deadline) == ppipe::wait_status::ready);
    CHECK(got == x);
  }
  CHECK(net.conclude(ppipe::rank_outcome{}, deadline).ok);
}

TEST_CASE("bad MPI pipeline arguments are refused with the fix", "[errors]") {
  sequential model = make_model();
  ppipe::pipeline_options o;
  o.ranks = world_size() + 1;
  try {
    ppipe::mpi::pipeline<sequential> net(model, o, ppipe::layers::mse_loss{}, {}, ppipe::mpi::transport(MPI_COMM_WORLD));
    FAIL("ranks that differ from the communicator's size must be refused");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::invalid_argument);
    CHECK(std::string(e.what()).find("set ranks to " + std::to_string(world_size())) != std::string::npos);
  }
  CHECK_THROWS_AS(ppipe::mpi::replicated(MPI_COMM_WORLD, world_size() + 1), ppipe::error);
  CHECK_THROWS_AS(ppipe::mpi::transport(MPI_COMM_NULL), ppipe::error);
}

TEST_CASE("two replicas of a 2-stage pipeline average their gradients after every step", "[replicas]") {
  REQUIRE(world_size() == 4);
  const ppipe::layers::sgd opt(0.05f);
  const float lr = opt.learning_rate();
  ppipe::mpi::transport tr = ppipe::mpi::replicated(MPI_COMM_WORLD, 2);
  REQUIRE(tr.replicas() == 2);
  REQUIRE(tr.num_ranks() == 2);
  const int replica = tr.replica();
  CHECK(replica == world_rank() % 2);
  CHECK(tr.rank() == world_rank() / 2);

  sequential model = make_model();
  ppipe::pipeline_options o;
  o.ranks = 0;
  o.microbatches = 4;
  ppipe::mpi::pipeline<sequential> net(model, o, ppipe::layers::mse_loss{},
                                       [&](const ppipe::stage_info& s) { opt.step(model, s); }, std::move(tr));

  // The reference: both replicas' pipelines on the host, their gradients averaged as (a + b) * 0.5
  // (what an all-reduce of two values and a scale by 1/2 give, bit for bit), then SGD.
  sequential a = make_model();
  sequential b = make_model();
  o.ranks = 2;
  ppipe::pipeline<sequential> host_a(a, o, ppipe::layers::mse_loss{});
  ppipe::pipeline<sequential> host_b(b, o, ppipe::layers::mse_loss{});

  for (int step = 0; step < 3; ++step) {
    const ppipe::payload x = filled(16, 6, static_cast<float>(step));
    const ppipe::payload y = filled(16, 3, 1.0f + static_cast<float>(step));
    const ppipe::payload xa = ppipe::slice_rows(x, 0, 8);
    const ppipe::payload xb = ppipe::slice_rows(x, 8, 8);
    const ppipe::payload ya = ppipe::slice_rows(y, 0, 8);
    const ppipe::payload yb = ppipe::slice_rows(y, 8, 8);
    const double loss_a = host_a.train_step(xa, ya);
    const double loss_b = host_b.train_step(xb, yb);
    std::vector<std::vector<float>> grads_b;
    b.for_each_parameter(0, b.num_layers(), [&](ppipe::tensor_view, ppipe::tensor_view g) { grads_b.emplace_back(g.as<float>().begin(), g.as<float>().end()); });
    std::size_t k = 0;
    const auto update = [&](std::span<float> value, std::span<float> g, const std::vector<float>& other) {
      for (std::size_t i = 0; i < value.size(); ++i) {
        const float mean = (g[i] + other[i]) * 0.5f;
        value[i] -= lr * mean;
        g[i] = 0.0f;
      }
    };
    a.for_each_parameter(0, a.num_layers(), [&](ppipe::tensor_view v, ppipe::tensor_view g) { update(v.as<float>(), g.as<float>(), grads_b[k++]); });
    b = a;  // both replicas hold the same weights after the step

    const double got = net.train_step(replica == 0 ? xa : xb, replica == 0 ? ya : yb);
    CHECK(got == (replica == 0 ? loss_a : loss_b));
  }
  for (int s = 0; s < net.split().num_stages(); ++s) {
    if (!net.is_local(s)) continue;
    CHECK(copy(model.parameters(net.split().first(s), net.split().end(s))) ==
          copy(a.parameters(net.split().first(s), net.split().end(s))));
  }
}
