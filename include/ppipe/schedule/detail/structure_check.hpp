#pragma once
/// @file
/// @brief The validator's structural checks: everything except deadlock.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ppipe/schedule/detail/channels.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/problem.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::detail {

/// The step of `a` in rank `r`'s list, or -1.
inline int find_step(const schedule& s, int r, const action& a) {
  const auto& list = s.ranks[static_cast<std::size_t>(r)];
  const auto it = std::find(list.begin(), list.end(), a);
  return it == list.end() ? -1 : static_cast<int>(it - list.begin());
}

/// The bit of an action kind in a per-(stage, microbatch) set of kinds seen.
constexpr std::uint16_t kind_bit(action_kind k) noexcept {
  return static_cast<std::uint16_t>(1U << static_cast<unsigned>(k));
}

/// Each (stage, microbatch) pair lives on one rank, so one pass over each rank's list, in order,
/// settles what that rank may do when. Memory: two bytes per (stage, microbatch) and one entry per
/// transfer.
class structure_checker {
 public:
  explicit structure_checker(const schedule& s) : s_(s) {}

  std::optional<schedule_problem> run() {
    if (auto p = check_shape()) return p;
    setup();
    for (int r = 0; r < static_cast<int>(s_.ranks.size()); ++r) {
      const auto& list = s_.ranks[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (auto p = check_action(r, static_cast<int>(i), list[i])) return p;
      }
    }
    if (auto p = check_complete()) return p;
    if (auto p = check_transfers()) return p;
    return check_channel_order();
  }

 private:
  static constexpr std::uint16_t F = kind_bit(action_kind::forward);
  static constexpr std::uint16_t B = kind_bit(action_kind::backward);
  static constexpr std::uint16_t I = kind_bit(action_kind::backward_input);
  static constexpr std::uint16_t W = kind_bit(action_kind::backward_weight);
  static constexpr std::uint16_t R = kind_bit(action_kind::recompute);
  static constexpr std::uint16_t SF = kind_bit(action_kind::send_activation);
  static constexpr std::uint16_t RF = kind_bit(action_kind::recv_activation);
  static constexpr std::uint16_t SB = kind_bit(action_kind::send_gradient);
  static constexpr std::uint16_t RB = kind_bit(action_kind::recv_gradient);

  std::optional<schedule_problem> check_shape() const {
    const auto bad = [](std::string what) {
      return schedule_problem{problem_kind::inconsistent, -1, -1, {}, std::move(what), {}};
    };
    if (s_.num_stages() < 1) return bad("the schedule's placement has no stages; give it one");
    if (static_cast<int>(s_.ranks.size()) != s_.num_ranks()) {
      return bad(concat("the schedule has ", s_.ranks.size(), " action lists but its placement has ",
                        s_.num_ranks(), " ranks; give every rank exactly one list"));
    }
    if (s_.microbatches < 1) {
      return bad(concat("the schedule has microbatches=", s_.microbatches, "; it needs at least 1"));
    }
    constexpr long long max_slots = 1LL << 26;
    if (static_cast<long long>(s_.num_stages()) * s_.microbatches > max_slots) {
      return bad(concat("the schedule has ", s_.num_stages(), " stages and ", s_.microbatches,
                        " microbatches, more stage-microbatch pairs than ppipe supports (", max_slots,
                        "); use fewer microbatches per step"));
    }
    return std::nullopt;
  }

  void setup() {
    stages_ = s_.num_stages();
    m_ = s_.microbatches;
    training_ = s_.mode == schedule_mode::training;
    rank_of_ = &s_.place.rank_table();
    state_.assign(static_cast<std::size_t>(stages_) * static_cast<std::size_t>(m_), 0);
    keys_ = message_keys(stages_, m_);
    channels_.emplace(s_.place);
    sent_.assign(channels_->size(), {});
    received_.assign(channels_->size(), {});
  }

  [[nodiscard]] int rank(int stage) const { return (*rank_of_)[static_cast<std::size_t>(stage)]; }
  [[nodiscard]] std::uint16_t& state(int stage, int mb) {
    return state_[static_cast<std::size_t>(stage) * static_cast<std::size_t>(m_) +
                  static_cast<std::size_t>(mb)];
  }

  std::optional<schedule_problem> check_action(int r, int step, const action& a) {
    const auto problem = [&](problem_kind kind, const auto&... parts) {
      return schedule_problem{kind, r, step, a, concat("rank ", r, " step ", step, ": ", parts...), {}};
    };
    if (static_cast<int>(a.kind) >= action_kind_count) {
      return problem(problem_kind::out_of_range, "an action has kind ", static_cast<int>(a.kind),
                     ", which does not exist; use one of the ", action_kind_count, " ppipe::action_kind values");
    }
    if (a.stage < 0 || a.stage >= stages_ || a.microbatch < 0 || a.microbatch >= m_) {
      return problem(problem_kind::out_of_range, describe(a), " is outside the schedule's stages 0..",
                     stages_ - 1, " and microbatches 0..", m_ - 1,
                     "; fix the action or the schedule's placement and microbatch count");
    }
    if (rank(a.stage) != r) {
      return problem(problem_kind::wrong_rank, describe(a), " belongs on rank ", rank(a.stage),
                     ", which holds stage ", a.stage, "; move it there");
    }
    if (!training_ && is_backward_pass(a.kind)) {
      return problem(problem_kind::wrong_mode, describe(a),
                     " is a backward-pass action in a forward-only (inference) schedule; remove it "
                     "or make the schedule a training one");
    }
    const int s = a.stage;
    const int mb = a.microbatch;
    std::uint16_t& st = state(s, mb);
    const std::uint16_t me = kind_bit(a.kind);
    const bool full_vs_split = (a.kind == action_kind::backward && (st & (I | W)) != 0) ||
                               ((a.kind == action_kind::backward_input ||
                                 a.kind == action_kind::backward_weight) && (st & B) != 0);
    if ((st & me) != 0 || full_vs_split) {
      return problem(problem_kind::duplicate, describe(a),
                     full_vs_split ? " mixes a full backward (B) with its split halves (I, W); use "
                                     "either B or I and W for each microbatch"
                                   : " appears twice; keep one");
    }
    const bool same_rank_prev = s > 0 && rank(s - 1) == r;
    const bool same_rank_next = s + 1 < stages_ && rank(s + 1) == r;
    const bool crosses_prev = s > 0 && !same_rank_prev;
    const bool crosses_next = s + 1 < stages_ && !same_rank_next;
    // The hot path only tests bits; a problem is built only when one is found.
    const auto order = [&](const action& need, const char* why) -> std::optional<schedule_problem> {
      const int at = find_step(s_, r, need);
      return problem(problem_kind::order, describe(a), " runs before ", to_string(need), " ", why,
                     at < 0 ? concat(", which rank ", r, " never runs")
                            : concat(", which rank ", r, " runs only at step ", at),
                     "; put ", to_string(need), " first");
    };
    const auto needless = [&](bool at_end, const char* side) -> std::optional<schedule_problem> {
      return problem(problem_kind::needless_transfer, describe(a),
                     at_end ? concat(" has no ", side, " stage to talk to")
                            : std::string(" talks to a stage on the same rank, which needs no transfer"),
                     "; remove it");
    };
    if (a.paired) {  // F&B: the B must follow directly, so that one unit runs both
      const auto& list = s_.ranks[static_cast<std::size_t>(r)];
      const auto next = static_cast<std::size_t>(step) + 1;
      if (a.kind != action_kind::forward) {
        return problem(problem_kind::unpaired, describe(a), " is marked paired, but only a forward pairs with "
                       "the full backward after it; unmark it");
      }
      if (next >= list.size() || list[next].kind != action_kind::backward) {
        return problem(problem_kind::unpaired, describe(a), " is paired with the action right after it, but ",
                       next >= list.size() ? std::string("it is the rank's last")
                                           : concat("that is ", describe(list[next])),
                       "; put the full backward (B) it pairs with right after it, or unmark it");
      }
    }
    switch (a.kind) {
      case action_kind::forward:
        if (same_rank_prev && (state(s - 1, mb) & F) == 0) {
          return order({s - 1, mb, action_kind::forward}, "(its input)");
        }
        if (crosses_prev && (st & RF) == 0) return order({s, mb, action_kind::recv_activation}, "(its input)");
        break;
      case action_kind::backward:
      case action_kind::backward_input:
        if ((st & F) == 0) return order({s, mb, action_kind::forward}, "(its activations)");
        if (same_rank_next) {
          const std::uint16_t next = state(s + 1, mb);
          if ((next & (B | I)) == 0) return order({s + 1, mb, a.kind}, "(its output gradient)");
        } else if (crosses_next && (st & RB) == 0) {
          return order({s, mb, action_kind::recv_gradient}, "(its output gradient)");
        }
        break;
      case action_kind::backward_weight:
        if ((st & I) == 0) return order({s, mb, action_kind::backward_input}, "(the input-gradient half)");
        break;
      case action_kind::recompute:
        if ((st & F) == 0) return order({s, mb, action_kind::forward}, "(the forward it re-runs)");
        if ((st & (B | I)) != 0) {
          return problem(problem_kind::order, describe(a), " runs after the backward of its microbatch, which "
                         "needed the activations it rebuilds; put it before ",
                         to_string(action{s, mb, (st & B) != 0 ? action_kind::backward : action_kind::backward_input}));
        }
        break;
      case action_kind::send_activation:
      case action_kind::recv_gradient:
        if (!crosses_next) return needless(s + 1 == stages_, "next");
        if (a.kind == action_kind::send_activation && (st & F) == 0) {
          return order({s, mb, action_kind::forward}, "(the data it sends)");
        }
        break;
      case action_kind::recv_activation:
      case action_kind::send_gradient:
        if (!crosses_prev) return needless(s == 0, "previous");
        if (a.kind == action_kind::send_gradient && (st & (B | I)) == 0) {
          return order({s, mb, s_.splits_backward() ? action_kind::backward_input : action_kind::backward},
                       "(the gradient it sends)");
        }
        break;
    }
    if (is_transfer(a.kind)) {
      const auto ch = static_cast<std::size_t>(channels_->of(a));
      (is_send(a.kind) ? sent_ : received_)[ch].push_back(keys_.of(a));
    }
    st = static_cast<std::uint16_t>(st | me);
    return std::nullopt;
  }

  std::optional<schedule_problem> check_complete() {
    for (int s = 0; s < stages_; ++s) {
      for (int mb = 0; mb < m_; ++mb) {
        const std::uint16_t st = state(s, mb);
        action need{s, mb, action_kind::forward};
        const char* why = "every stage runs a forward for every microbatch";
        if ((st & F) == 0) {
        } else if (!training_ || (st & B) != 0 || (st & (I | W)) == (I | W)) {
          continue;
        } else if ((st & I) != 0) {
          need.kind = action_kind::backward_weight;
          why = "a split backward needs its weight-gradient half (W) after the input half (I)";
        } else {
          need.kind = action_kind::backward;
          why = "a training schedule runs a backward (B, or I then W) for every forward";
        }
        const int r = rank(s);
        return schedule_problem{problem_kind::missing, r, -1, need,
                                concat("rank ", r, " never runs ", describe(need), ": ", why), {}};
      }
    }
    return std::nullopt;
  }

  // Every send has its receive and every receive its send.
  std::optional<schedule_problem> check_transfers() {
    for (int b = 0; b + 1 < stages_; ++b) {
      if (rank(b) == rank(b + 1)) continue;
      for (int mb = 0; mb < m_; ++mb) {
        if (auto p = check_pair({b, mb, action_kind::send_activation}, (state(b, mb) & SF) != 0,
                                {b + 1, mb, action_kind::recv_activation}, (state(b + 1, mb) & RF) != 0)) {
          return p;
        }
        if (!training_) continue;
        if (auto p = check_pair({b + 1, mb, action_kind::send_gradient}, (state(b + 1, mb) & SB) != 0,
                                {b, mb, action_kind::recv_gradient}, (state(b, mb) & RB) != 0)) {
          return p;
        }
      }
    }
    return std::nullopt;
  }

  std::optional<schedule_problem> check_pair(const action& send, bool sent, const action& recv, bool received) {
    if (sent == received) return std::nullopt;
    const int from = rank(send.stage);
    const int to = rank(recv.stage);
    if (sent) {
      return schedule_problem{problem_kind::unmatched_transfer, from, find_step(s_, from, send), send,
                              concat("rank ", from, " sends ", describe(send), " but rank ", to,
                                     " never receives it; add ", to_string(recv), " on rank ", to),
                              {}};
    }
    return schedule_problem{problem_kind::unmatched_transfer, to, find_step(s_, to, recv), recv,
                            concat("rank ", to, " receives ", describe(recv), " but rank ", from,
                                   " never sends it; add ", to_string(send), " on rank ", from),
                            {}};
  }

  // Both ends of a channel order its messages the same way: the k-th send is the k-th receive.
  std::optional<schedule_problem> check_channel_order() {
    for (std::size_t c = 0; c < sent_.size(); ++c) {
      const auto& out = sent_[c];
      const auto& in = received_[c];
      const auto [first_out, first_in] = std::mismatch(out.begin(), out.end(), in.begin(), in.end());
      // check_transfers made every message appear on both sides, so the sizes agree.
      if (first_out == out.end() || first_in == in.end()) continue;
      const std::size_t k = static_cast<std::size_t>(first_out - out.begin());
      const auto [from, to] = channels_->ends(static_cast<int>(c));
      const action send = keys_.ends(*first_out).first;
      const auto [expected, wrong] = keys_.ends(*first_in);  // rank `to`'s k-th receive, and its send
      const int wrong_step = find_step(s_, to, wrong);
      return schedule_problem{
          problem_kind::mismatched_transfer, to, wrong_step, wrong,
          concat("rank ", from, "'s message #", k, " to rank ", to, " is ", to_string(send), " (step ",
                 find_step(s_, from, send), "), but rank ", to, "'s receive #", k, " is ", to_string(wrong),
                 " (step ", wrong_step, "), which expects ", to_string(expected),
                 ": messages between two ranks are matched by order, whatever their kind, so order "
                 "each pair of ranks' sends and receives the same way"),
          {}};
    }
    return std::nullopt;
  }

  const schedule& s_;
  int stages_ = 0;
  int m_ = 0;
  bool training_ = true;
  const std::vector<int>* rank_of_ = nullptr;
  std::vector<std::uint16_t> state_;
  message_keys keys_{};
  std::optional<channel_map> channels_;
  std::vector<std::vector<std::size_t>> sent_, received_;  // per channel, message keys in order
};

}  // namespace ppipe::detail
