// The CPU model of NCCL point-to-point (cpu_p2p_transport) on its own, and under the executor:
// matching in order per pair, groups, sends that wait for their receives, the hang that NCCL
// gives where a schedule's transfers are not grouped, and the schedules it refuses. The backend
// contract runs numerics, memory, failures and timeouts on it too.

#include <catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/runtime/cpu_stream_backend.hpp"
#include "ppipe/schedule/gpipe.hpp"
#include "ppipe/schedule/interleaved_1f1b.hpp"
#include "ppipe/transport/cpu_p2p.hpp"
#include "reference.hpp"
#include "schedule_text.hpp"
#include "toy_enqueuing.hpp"
#include "toy_model.hpp"

namespace {

using namespace std::chrono_literals;
using ppipe_test::contains;

// An exception's what(), with every exception nested in it.
std::string full_message(const std::exception& e) {
  std::string out = e.what();
  try {
    std::rethrow_if_nested(e);
  } catch (const std::exception& inner) {
    out += " / " + full_message(inner);
  }
  return out;
}

// Two ranks, each with a device and one stream for its transfers.
struct two_ranks {
  ppipe::cpu_stream_device d0{ppipe::cpu_device_options{}};
  ppipe::cpu_stream_device d1{ppipe::cpu_device_options{}};
  ppipe::cpu_stream_device::stream s0 = d0.create_stream("rank 0 send");
  ppipe::cpu_stream_device::stream s1 = d1.create_stream("rank 1 send");

  bool drained(std::chrono::milliseconds within) {
    const auto due = ppipe::deadline_clock::now() + within;
    return d0.synchronize(s0, due) == ppipe::wait_status::ready && d1.synchronize(s1, due) == ppipe::wait_status::ready;
  }
};

std::string error_of(ppipe::cpu_stream_device& d) {
  try {
    if (std::exception_ptr e = d.error()) std::rethrow_exception(e);
  } catch (const std::exception& e) {
    return full_message(e);
  }
  return {};
}

}  // namespace

TEST_CASE("cpu p2p: messages between a pair match in the order they were posted") {
  two_ranks t;
  ppipe::cpu_p2p_transport p2p(2);
  const std::vector<std::int32_t> a{1, 2, 3};
  const std::vector<std::int32_t> b{4, 5};
  std::vector<std::int32_t> got_a(3, 0);
  std::vector<std::int32_t> got_b(2, 0);
  // The receives are posted first, on their own stream: each waits there for its send.
  p2p.recv(0, 1, got_a.data(), 12, t.d1, t.s1, "first");
  p2p.recv(0, 1, got_b.data(), 8, t.d1, t.s1, "second");
  p2p.send(0, 1, a.data(), 12, t.d0, t.s0, "first");
  p2p.send(0, 1, b.data(), 8, t.d0, t.s0, "second");
  REQUIRE(t.drained(5s));
  CHECK(got_a == a);
  CHECK(got_b == b);
  CHECK(p2p.messages() == 2);
}

TEST_CASE("cpu p2p: a send waits for its receive, and a group lets neighbours cross") {
  // Each rank sends to the other, then receives: as separate groups, both sends wait for
  // receives queued behind them on the other stream, as ungrouped ncclSend/ncclRecv hang.
  std::int32_t x = 7;
  std::int32_t y = 9;
  std::int32_t into0 = 0;
  std::int32_t into1 = 0;
  SECTION("ungrouped: a hang, until abort() ends it with an error on both streams") {
    two_ranks t;
    ppipe::cpu_p2p_transport p2p(2);
    p2p.send(0, 1, &x, 4, t.d0, t.s0, "0SEND_F1");
    p2p.recv(1, 0, &into0, 4, t.d0, t.s0, "0RECV_B0");
    p2p.send(1, 0, &y, 4, t.d1, t.s1, "1SEND_B0");
    p2p.recv(0, 1, &into1, 4, t.d1, t.s1, "1RECV_F1");
    CHECK_FALSE(t.drained(200ms));
    CHECK(p2p.messages() == 0);
    p2p.abort();
    REQUIRE(t.drained(5s));
    CHECK_THAT(error_of(t.d0), contains("rank 0's transfer group: 0SEND_F1 to rank 1"));
    CHECK_THAT(error_of(t.d0), contains("aborted"));
    CHECK_THAT(error_of(t.d1), contains("rank 1's transfer group: 1SEND_B0 to rank 0"));
    CHECK(into0 == 0);
    CHECK(into1 == 0);
  }
  SECTION("grouped: both move") {
    two_ranks t;
    ppipe::cpu_p2p_transport p2p(2);
    p2p.begin_group(0);
    p2p.send(0, 1, &x, 4, t.d0, t.s0, "0SEND_F1");
    p2p.recv(1, 0, &into0, 4, t.d0, t.s0, "0RECV_B0");
    p2p.end_group(0);
    p2p.begin_group(1);
    p2p.begin_group(1);  // groups nest: the outermost end issues them
    p2p.send(1, 0, &y, 4, t.d1, t.s1, "1SEND_B0");
    p2p.end_group(1);
    p2p.recv(0, 1, &into1, 4, t.d1, t.s1, "1RECV_F1");
    p2p.end_group(1);
    REQUIRE(t.drained(5s));
    CHECK(into0 == 9);
    CHECK(into1 == 7);
    CHECK(p2p.messages() == 2);
  }
  SECTION("a rank may send to itself in one group") {
    two_ranks t;
    ppipe::cpu_p2p_transport p2p(2);
    p2p.begin_group(0);
    p2p.send(0, 0, &x, 4, t.d0, t.s0, "to myself");
    p2p.recv(0, 0, &into0, 4, t.d0, t.s0, "from myself");
    p2p.end_group(0);
    REQUIRE(t.drained(5s));
    CHECK(into0 == 7);
  }
}

TEST_CASE("cpu p2p: misuse is an error that names it") {
  two_ranks t;
  ppipe::cpu_p2p_transport p2p(2);
  std::int64_t big = 1;
  std::int32_t small = 0;
  SECTION("a receive of another size than its send fails on both streams") {
    p2p.send(0, 1, &big, 8, t.d0, t.s0, "0SEND_F0");
    p2p.recv(0, 1, &small, 4, t.d1, t.s1, "1RECV_F0");
    REQUIRE(t.drained(5s));
    const std::string why = "rank 0's 0SEND_F0 sends 8 bytes to rank 1, whose matching 1RECV_F0 receives 4";
    CHECK_THAT(error_of(t.d0), contains(why));
    CHECK_THAT(error_of(t.d1), contains(why));
    CHECK(small == 0);
  }
  SECTION("a group on two streams") {
    const auto other = t.d0.create_stream("rank 0 other");
    p2p.begin_group(0);
    p2p.send(0, 1, &big, 8, t.d0, t.s0, "first");
    CHECK_THROWS_WITH(p2p.send(0, 1, &big, 8, t.d0, other, "second"),
                      contains("rank 0 put transfers on two streams in one group (second after first)"));
  }
  SECTION("an end without a beginning, and a rank out of range") {
    CHECK_THROWS_WITH(p2p.end_group(1), contains("rank 1 ended a transfer group it never began"));
    CHECK_THROWS_WITH(p2p.begin_group(2), contains("rank 2 is not a rank of this 2-rank transport"));
  }
}

namespace {

ppipe::pipeline_options options(int p, int m, int v = 1) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  o.timeout = std::chrono::seconds(20);
  return o;
}

template <class Transport>
struct with_transport : ppipe::default_cpu_stream_config {
  using transport_type = Transport;
};

// The transport with every transfer a group of its own.
struct ungrouped_p2p : ppipe::cpu_p2p_transport {
  explicit ungrouped_p2p(int ranks) : cpu_p2p_transport(ranks, false) {}
};

}  // namespace

TEST_CASE("cpu p2p backend: every boundary crossing is one message of its transport, and the bits hold") {
  const int p = 4;
  const int m = 8;
  toy::model piped(8);
  toy::model plain(8);
  ppipe::pipeline<toy::model, ppipe::schedules::interleaved_1f1b, ppipe::partitioners::balanced,
                  ppipe::cpu_stream_backend_with<with_transport<ppipe::cpu_p2p_transport>>>
      pipe(piped, options(p, m, 2), toy::loss);
  const auto x = toy::batch(16, 3, 1.0f);
  const auto y = toy::batch(16, 3, 2.0f);
  const double got = pipe.train_step(x, y);
  CHECK(got == reference::accumulate(plain, x, y, m, toy::loss));
  // 7 boundaries between 8 stages, each crossed by one activation and one gradient per
  // microbatch, as one message per tensor (toy payloads carry two).
  const std::size_t tensors = 2;
  const auto crossings = static_cast<std::size_t>((p * 2 - 1) * m);
  CHECK(pipe.transport().messages() == 2 * crossings * tensors);
  const auto out = pipe.infer(x);
  REQUIRE(out.size() == tensors);
  CHECK(pipe.transport().messages() == 3 * crossings * tensors);
}

TEST_CASE("cpu p2p backend: without groups 1F1B hangs as on NCCL, and the watchdog names who waits") {
  toy::model model(4);
  ppipe::pipeline_options o = options(2, 4);
  o.timeout = std::chrono::milliseconds(300);
  ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                  ppipe::cpu_stream_backend_with<with_transport<ungrouped_p2p>>>
      pipe(model, o, toy::loss);
  try {
    pipe.train_step(toy::batch(8, 3, 0.0f), toy::batch(8, 3, 1.0f));
    FAIL("the step did not hang");
  } catch (const ppipe::error& e) {
    const std::string what = full_message(e);
    INFO(what);
    CHECK(e.id() == "ppipe.timeout");
    // Rank 0 sends activation 1 while rank 1 sends gradient 0: each waits for the other's
    // receive, which its own stream holds behind its send.
    // Whichever rank's watchdog fires first reports it.
    CHECK_THAT(what, contains("rank 0 waited 300 ms in 0B0 (backward of stage 0, microbatch 0) for 0RECV_B0 "
                              "(recv_gradient of stage 0, microbatch 0) from rank 1 (on its transfer stream)") ||
                         contains("rank 1 waited 300 ms in 1F1 (forward of stage 1, microbatch 1) for 1RECV_F1 "
                                  "(recv_activation of stage 1, microbatch 1) from rank 0 (on its transfer stream)"));
    CHECK_THAT(what, contains("runs 'rank 0's transfer group: 0SEND_F1 (send_activation of stage 0, microbatch 1) to rank 1'"));
    CHECK_THAT(what, contains("runs 'rank 1's transfer group: 1SEND_B0 (send_gradient of stage 1, microbatch 0) to rank 0'"));
  }
  // Grouped, the same step runs (the transport is the only difference).
  toy::model again(4);
  ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                  ppipe::cpu_stream_backend_with<with_transport<ppipe::cpu_p2p_transport>>>
      grouped(again, o, toy::loss);
  CHECK(std::isfinite(grouped.train_step(toy::batch(8, 3, 0.0f), toy::batch(8, 3, 1.0f))));
}

TEST_CASE("cpu p2p backend: a schedule that would hang under NCCL is refused before it runs") {
  // Fine where sends never wait (the host backend runs it). Under sends that wait for their
  // receives, rank 0 waits in 0SEND_F2 for rank 1 to post 1RECV_F2, which comes after 1SEND_B0,
  // which waits for 0RECV_B0, which comes after 0SEND_F2.
  const auto s = ppipe_test::from_rows(
      ppipe::placement::looped(2), 4,
      {"0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0F3 0SEND_F3 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_B2 0B2 0RECV_B3 0B3",
       "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1 1RECV_F2 1F2 1B2 1SEND_B2 1RECV_F3 1F3 1B3 1SEND_B3"});
  ppipe::pipeline_options o = options(2, 4);
  o.schedule = s;
  toy::model host_model(4);
  ppipe::pipeline<toy::model> host(host_model, o, toy::loss);
  CHECK(std::isfinite(host.train_step(toy::batch(6, 3, 0.0f), toy::batch(6, 3, 1.0f))));
  toy::model model(4);
  try {
    ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                    ppipe::cpu_stream_backend_with<with_transport<ppipe::cpu_p2p_transport>>>
        refused(model, o, toy::loss);
    FAIL("the schedule was accepted");
  } catch (const ppipe::error& e) {
    INFO(e.what());
    CHECK(e.id() == "ppipe.deadlock");
    CHECK_THAT(std::string(e.what()), contains("under the rendezvous transfer model"));
    CHECK_THAT(std::string(e.what()), contains("rank 0 waits at step 5 in 0SEND_F2 for 1RECV_F2"));
  }
}

namespace {

// Layers that enqueue their work, whose backward of layer 1 for microbatch 0 throws on the host:
// the rank stops enqueueing while its transfer groups are on the streams.
struct throws_on_host : toy::enqueuing<toy::model> {
  using base = toy::enqueuing<toy::model>;
  using base::base;
  using base::backward;
  template <class Device, class Tensor>
  void backward(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::basic_payload<Tensor>& in,
                const ppipe::basic_payload<Tensor>& out, const ppipe::basic_payload<Tensor>& g,
                ppipe::basic_payload<Tensor>& gin) {
    if (layer == 1 && ctx.microbatch == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      throw std::runtime_error("host-side failure in layer 1");
    }
    base::backward(layer, ctx, in, out, g, gin);
  }
};

}  // namespace

TEST_CASE("cpu p2p backend: a host that throws mid-step leaves no group reading or writing freed tensors") {
  // Rank 1 stalls in its first forward, so rank 0's groups are still waiting on their streams
  // when its host throws and lets go of the step's tensors; under AddressSanitizer a group that
  // wrote into one of them afterwards fails this test.
  throws_on_host model(4);
  model.set_fault({2, 0, false, std::chrono::milliseconds(500)});
  ppipe::pipeline_options o = options(2, 4);
  ppipe::pipeline<throws_on_host, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                  ppipe::cpu_stream_backend_with<with_transport<ppipe::cpu_p2p_transport>>>
      pipe(model, o, toy::loss);
  try {
    pipe.train_step(toy::batch(8, 3, 0.0f), toy::batch(8, 3, 1.0f));
    FAIL("the step did not fail");
  } catch (const ppipe::error& e) {
    INFO(e.what());
    CHECK(e.id() == "ppipe.stage_failed");
    CHECK_THAT(std::string(e.what()), contains("rank 0 in 0B0 (backward of stage 0, microbatch 0)"));
    CHECK_THAT(full_message(e), contains("host-side failure in layer 1"));
  }
}
