// The Transport contract, checked on the host transport. The checks are written once over any
// ppipe::transport so that the device and MPI transports can run the same ones.

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "ppipe/transport/host.hpp"

namespace {

using namespace std::chrono_literals;
using ppipe::deadline_clock;
using ppipe::wait_status;

ppipe::payload message(float value, std::int64_t rows = 2) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{rows, 3}), ppipe::host_tensor(ppipe::shape{rows})};
  for (auto& t : p) {
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = value;
  }
  return p;
}

template <class Transport>
void check_contract(Transport& t) {
  const auto soon = [] { return deadline_clock::now() + 2s; };

  SECTION("messages between two ranks arrive in the order they were sent, whatever their kind") {
    for (int k = 0; k < 5; ++k) {
      auto h = t.post_send(0, 1, message(static_cast<float>(k), k + 1));
      REQUIRE(t.complete_send(h, soon()) == wait_status::ready);
    }
    for (int k = 0; k < 5; ++k) {
      auto h = t.post_recv(0, 1);
      ppipe::payload got;
      REQUIRE(t.complete_recv(h, got, soon()) == wait_status::ready);
      CHECK(got == message(static_cast<float>(k), k + 1));
    }
  }

  SECTION("receives posted in order may complete in any order and still match their sends") {
    auto first = t.post_recv(0, 1);
    auto second = t.post_recv(0, 1);
    auto s0 = t.post_send(0, 1, message(10));
    auto s1 = t.post_send(0, 1, message(11));
    ppipe::payload a;
    ppipe::payload b;
    REQUIRE(t.complete_recv(second, b, soon()) == wait_status::ready);
    REQUIRE(t.complete_recv(first, a, soon()) == wait_status::ready);
    CHECK(a == message(10));
    CHECK(b == message(11));
    CHECK(t.complete_send(s0, soon()) == wait_status::ready);
    CHECK(t.complete_send(s1, soon()) == wait_status::ready);
  }

  SECTION("a sent buffer may change once its send is complete, without changing what arrives") {
    ppipe::payload data = message(1);
    auto h = t.post_send(0, 1, data);
    REQUIRE(t.complete_send(h, soon()) == wait_status::ready);
    data[0][0] = 42.0f;
    auto r = t.post_recv(0, 1);
    ppipe::payload got;
    REQUIRE(t.complete_recv(r, got, soon()) == wait_status::ready);
    CHECK(got == message(1));
  }

  SECTION("channels are per ordered pair: a message for rank 2 is not received by rank 1") {
    auto h = t.post_send(0, 2, message(5));
    (void)h;
    auto r = t.post_recv(0, 1);
    ppipe::payload got;
    CHECK(t.complete_recv(r, got, deadline_clock::now() + 20ms) == wait_status::timed_out);
    auto r2 = t.post_recv(0, 2);
    REQUIRE(t.complete_recv(r2, got, soon()) == wait_status::ready);
    CHECK(got == message(5));
  }

  SECTION("a receive waits for a send from another thread") {
    std::thread sender([&] {
      std::this_thread::sleep_for(30ms);
      auto h = t.post_send(2, 0, message(7));
      (void)t.complete_send(h, deadline_clock::now() + 2s);
    });
    auto r = t.post_recv(2, 0);
    ppipe::payload got;
    const wait_status st = t.complete_recv(r, got, soon());
    sender.join();
    CHECK(st == wait_status::ready);
    CHECK(got == message(7));
  }

  SECTION("abort wakes a waiting receive, and reset readies the transport again") {
    auto r = t.post_recv(1, 0);
    std::thread aborter([&] {
      std::this_thread::sleep_for(30ms);
      t.abort();
    });
    ppipe::payload got;
    const auto start = deadline_clock::now();
    const wait_status st = t.complete_recv(r, got, deadline_clock::now() + 10s);
    aborter.join();
    CHECK(st == wait_status::aborted);
    CHECK(deadline_clock::now() - start < 5s);
    t.reset();
    auto h = t.post_send(1, 0, message(3));
    (void)h;
    auto r2 = t.post_recv(1, 0);
    REQUIRE(t.complete_recv(r2, got, soon()) == wait_status::ready);
    CHECK(got == message(3));
  }
}

}  // namespace

TEST_CASE("the host transport keeps the Transport contract, blocking at once") {
  ppipe::host_transport t(3, std::chrono::microseconds(0));
  CHECK(t.spin().count() == 0);
  check_contract(t);
}

TEST_CASE("the host transport keeps the Transport contract, polling before it blocks") {
  ppipe::host_transport t(3, std::chrono::microseconds(200));
  CHECK(t.spin().count() == 200);
  check_contract(t);
}

TEST_CASE("the host transport polls only when every rank can have a core") {
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores == 0) return;
  CHECK(ppipe::host_transport(static_cast<int>(cores)).spin().count() == 50);
  CHECK(ppipe::host_transport(static_cast<int>(cores) + 1).spin().count() == 0);
}

TEST_CASE("the host transport refuses channels that do not exist") {
  ppipe::host_transport t(2);
  CHECK_THROWS_WITH(t.post_send(0, 2, message(1)), Catch::Contains("no host channel from rank 0 to rank 2"));
  CHECK_THROWS_WITH(t.post_recv(1, 1), Catch::Contains("no host channel from rank 1 to rank 1"));
  CHECK_THROWS_WITH(ppipe::host_transport(0), Catch::Contains("ranks=0"));
  auto h = t.post_send(0, 1, message(1));
  (void)h;
  CHECK(t.undelivered() == 1);
  t.reset();
  CHECK(t.undelivered() == 0);
}
