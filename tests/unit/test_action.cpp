#include <string>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>

using ppipe::action;
using ppipe::action_kind;

TEST_CASE("actions print in the <stage><kind><microbatch> form and read back") {
  CHECK(ppipe::to_string(action{2, 5, action_kind::forward}) == "2F5");
  CHECK(ppipe::to_string(action{1, 0, action_kind::send_gradient}) == "1SEND_B0");
  CHECK(ppipe::to_string(action{12, 340, action_kind::backward_weight}) == "12W340");
  for (int k = 0; k < ppipe::action_kind_count; ++k) {
    const action a{7, 13, static_cast<action_kind>(k)};
    CAPTURE(ppipe::to_string(a));
    CHECK(ppipe::parse_action(ppipe::to_string(a)) == a);
  }
}

TEST_CASE("action kinds fall into compute and transfer") {
  CHECK(ppipe::is_compute(action_kind::backward_input));
  CHECK_FALSE(ppipe::is_compute(action_kind::recv_activation));
  CHECK(ppipe::is_send(action_kind::send_activation));
  CHECK(ppipe::is_recv(action_kind::recv_gradient));
  CHECK_FALSE(ppipe::is_backward_pass(action_kind::send_activation));
  CHECK(ppipe::is_backward_pass(action_kind::recv_gradient));
  CHECK(ppipe::describe(action{2, 5, action_kind::forward}) == "2F5 (forward of stage 2, microbatch 5)");
}

TEST_CASE("unreadable actions name the column and the valid kinds") {
  const auto message_of = [](const char* text) {
    try {
      (void)ppipe::parse_action(text);
    } catch (const ppipe::error& e) {
      CHECK(e.code() == ppipe::errc::parse_error);
      return std::string(e.message());
    }
    FAIL("no error for " << text);
    return std::string();
  };
  CHECK(message_of("2X5").find("at column 2: unknown kind") != std::string::npos);
  CHECK(message_of("F5").find("at column 1: expected a non-negative number") != std::string::npos);
  CHECK(message_of("2F").find("at column 3") != std::string::npos);
  CHECK(message_of("2F5x").find("at column 4: unexpected text") != std::string::npos);
  CHECK(message_of("-1F0").find("column 1") != std::string::npos);
  CHECK(message_of("99999999999F0").find("number too large") != std::string::npos);
  CHECK(message_of("2Q5").find("SEND_F, RECV_F, SEND_B, RECV_B") != std::string::npos);
}

TEST_CASE("a row of actions reads back, with error columns counted from the row's start") {
  const auto row = ppipe::parse_actions("  0F0 0SEND_F0\t0RECV_B0  0B0 ");
  REQUIRE(row.size() == 4);
  CHECK(row[1] == action{0, 0, action_kind::send_activation});
  CHECK(row[3] == action{0, 0, action_kind::backward});
  CHECK(ppipe::parse_actions("   ").empty());
  CHECK_THROWS_WITH(ppipe::parse_actions("0F0 0B0 0Q1"),
                    ppipe_test::contains("cannot read action \"0Q1\" at column 10: unknown kind"));
}
