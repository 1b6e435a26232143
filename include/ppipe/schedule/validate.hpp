#pragma once
/// @file
/// @brief Proves a schedule complete and deadlock-free, or says where it goes wrong.
///
/// The communication model: a send is posted and never blocks its rank (MPI_Isend, or an NCCL
/// send on its own stream); a receive blocks its rank until the matching send has been posted.
/// Messages between two ranks travel on one FIFO channel per direction and kind (activations,
/// gradients), so both ranks must order a channel's messages the same way, as NCCL requires.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ppipe/detail/replay.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/grid.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief What is wrong with a schedule.
enum class problem_kind : unsigned char {
  inconsistent,         ///< the schedule's own numbers disagree (lists vs ranks, no microbatches)
  out_of_range,         ///< an action names a stage or microbatch that does not exist
  wrong_rank,           ///< an action sits on a rank that does not hold its stage
  wrong_mode,           ///< a backward-pass action in a forward-only (inference) schedule
  duplicate,            ///< an action appears twice, or B is mixed with I/W for one microbatch
  missing,              ///< a needed forward or backward never runs
  order,                ///< an action runs before something it needs on its own rank
  needless_transfer,    ///< a send or receive where no data crosses ranks
  unmatched_transfer,   ///< a send that is never received, or a receive that is never sent
  mismatched_transfer,  ///< two ranks order the messages of a channel differently
  deadlock,             ///< ranks wait on each other in a cycle
};

/// @brief The name of a problem kind, e.g. "deadlock".
constexpr std::string_view to_string(problem_kind kind) noexcept {
  switch (kind) {
    case problem_kind::inconsistent: return "inconsistent";
    case problem_kind::out_of_range: return "out_of_range";
    case problem_kind::wrong_rank: return "wrong_rank";
    case problem_kind::wrong_mode: return "wrong_mode";
    case problem_kind::duplicate: return "duplicate";
    case problem_kind::missing: return "missing";
    case problem_kind::order: return "order";
    case problem_kind::needless_transfer: return "needless_transfer";
    case problem_kind::unmatched_transfer: return "unmatched_transfer";
    case problem_kind::mismatched_transfer: return "mismatched_transfer";
    case problem_kind::deadlock: return "deadlock";
  }
  return "?";
}

/// @brief One edge of a deadlock cycle: `waiter` is stuck on the receive `waiting`, whose data
/// `sender` posts only later, with `awaited`.
struct wait_link {
  grid_cell waiter;
  action waiting;
  grid_cell sender;
  action awaited;
};

/// @brief The first problem found in a schedule.
struct schedule_problem {
  problem_kind kind = problem_kind::inconsistent;
  int rank = -1;  ///< the rank where it was found (-1: the schedule as a whole)
  int step = -1;  ///< the position in that rank's list (-1: the action is missing)
  action act{};   ///< the action at fault, or the one that is missing
  std::string what;               ///< what is wrong and how to fix it
  std::vector<wait_link> cycle;   ///< for deadlocks: every rank in the cycle
};

/// @brief The outcome of check_schedule().
struct validation_report {
  std::optional<schedule_problem> problem;  ///< empty when the schedule is valid
  std::string grid;                         ///< the rank-by-step grid around the problem

  [[nodiscard]] bool ok() const noexcept { return !problem.has_value(); }
  /// @brief The problem's explanation followed by the grid; empty when ok().
  [[nodiscard]] std::string message() const { return ok() ? std::string() : problem->what + "\n" + grid; }
};

namespace detail {

/// Finds the step of `a` in rank `r`'s list, or -1.
inline int find_step(const schedule& s, int r, const action& a) {
  const auto& list = s.ranks[static_cast<std::size_t>(r)];
  const auto it = std::find(list.begin(), list.end(), a);
  return it == list.end() ? -1 : static_cast<int>(it - list.begin());
}

/// The bit of an action kind in a per-(stage, microbatch) set of kinds seen.
constexpr std::uint8_t kind_bit(action_kind k) noexcept {
  return static_cast<std::uint8_t>(1U << static_cast<unsigned>(k));
}

/// The structural checks: everything except deadlock. Each (stage, microbatch) pair lives on one
/// rank, so one pass over each rank's list, in order, settles what that rank may do when.
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
    return check_transfers();
  }

 private:
  static constexpr std::uint8_t F = kind_bit(action_kind::forward);
  static constexpr std::uint8_t B = kind_bit(action_kind::backward);
  static constexpr std::uint8_t I = kind_bit(action_kind::backward_input);
  static constexpr std::uint8_t W = kind_bit(action_kind::backward_weight);
  static constexpr std::uint8_t SF = kind_bit(action_kind::send_activation);
  static constexpr std::uint8_t RF = kind_bit(action_kind::recv_activation);
  static constexpr std::uint8_t SB = kind_bit(action_kind::send_gradient);
  static constexpr std::uint8_t RB = kind_bit(action_kind::recv_gradient);

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
    if (static_cast<long long>(s_.num_stages()) * s_.microbatches > (1LL << 28)) {
      return bad(concat("the schedule has ", s_.num_stages(), " stages and ", s_.microbatches,
                        " microbatches, more stage-microbatch pairs than ppipe supports (2^28)"));
    }
    return std::nullopt;
  }

  void setup() {
    stages_ = s_.num_stages();
    m_ = s_.microbatches;
    training_ = s_.mode == schedule_mode::training;
    rank_of_ = &s_.place.rank_table();
    const auto slots = static_cast<std::size_t>(stages_) * static_cast<std::size_t>(m_);
    state_.assign(slots, 0);
    keys_ = message_keys{static_cast<std::size_t>(m_), slots};
    send_seq_.assign(2 * slots, -1);
    recv_seq_.assign(2 * slots, -1);
    // One FIFO channel per (sender, receiver, kind); boundary b's activations use
    // act_channel_[b], its gradients grad_channel_[b].
    std::unordered_map<long long, int> ids;
    const auto channel = [&](int from, int to, int kind) {
      const long long id = (static_cast<long long>(from) * s_.num_ranks() + to) * 2 + kind;
      return ids.emplace(id, static_cast<int>(ids.size())).first->second;
    };
    act_channel_.assign(static_cast<std::size_t>(stages_), -1);
    grad_channel_.assign(static_cast<std::size_t>(stages_), -1);
    for (int b = 0; b + 1 < stages_; ++b) {
      if (rank(b) == rank(b + 1)) continue;
      act_channel_[static_cast<std::size_t>(b)] = channel(rank(b), rank(b + 1), 0);
      grad_channel_[static_cast<std::size_t>(b)] = channel(rank(b + 1), rank(b), 1);
    }
    sent_count_.assign(ids.size(), 0);
    received_count_.assign(ids.size(), 0);
  }

  [[nodiscard]] int rank(int stage) const { return (*rank_of_)[static_cast<std::size_t>(stage)]; }
  [[nodiscard]] std::uint8_t& state(int stage, int mb) {
    return state_[static_cast<std::size_t>(stage) * static_cast<std::size_t>(m_) +
                  static_cast<std::size_t>(mb)];
  }

  std::optional<schedule_problem> check_action(int r, int step, const action& a) {
    const auto problem = [&](problem_kind kind, auto&&... parts) {
      return schedule_problem{kind, r, step, a, concat("rank ", r, " step ", step, ": ", parts...), {}};
    };
    if (a.stage < 0 || a.stage >= stages_ || a.microbatch < 0 || a.microbatch >= m_) {
      return problem(problem_kind::out_of_range, describe(a), " is outside the schedule's stages 0..",
                     stages_ - 1, " and microbatches 0..", m_ - 1);
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
    std::uint8_t& st = state(s, mb);
    const std::uint8_t me = kind_bit(a.kind);
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
    const auto needs = [&](bool have, const action& need, const char* why) -> std::optional<schedule_problem> {
      if (have) return std::nullopt;
      const int at = find_step(s_, r, need);
      return problem(problem_kind::order, describe(a), " runs before ", to_string(need), " ", why,
                     at < 0 ? detail::concat(", which rank ", r, " never runs")
                            : detail::concat(", which rank ", r, " runs only at step ", at),
                     "; put ", to_string(need), " first");
    };
    switch (a.kind) {
      case action_kind::forward:
        if (same_rank_prev) {
          if (auto p = needs((state(s - 1, mb) & F) != 0, {s - 1, mb, action_kind::forward}, "(its input)")) return p;
        } else if (crosses_prev) {
          if (auto p = needs((st & RF) != 0, {s, mb, action_kind::recv_activation}, "(its input)")) return p;
        }
        break;
      case action_kind::backward:
      case action_kind::backward_input:
        if (auto p = needs((st & F) != 0, {s, mb, action_kind::forward}, "(its activations)")) return p;
        if (same_rank_next) {
          const bool have = (state(s + 1, mb) & (B | I)) != 0;
          const action_kind k = (state(s + 1, mb) & I) != 0 ? action_kind::backward_input : a.kind;
          if (auto p = needs(have, {s + 1, mb, k}, "(its output gradient)")) return p;
        } else if (crosses_next) {
          if (auto p = needs((st & RB) != 0, {s, mb, action_kind::recv_gradient}, "(its output gradient)")) return p;
        }
        break;
      case action_kind::backward_weight:
        if (auto p = needs((st & I) != 0, {s, mb, action_kind::backward_input}, "(the input-gradient half)")) return p;
        break;
      case action_kind::send_activation:
      case action_kind::recv_gradient:
        if (!crosses_next) {
          return problem(problem_kind::needless_transfer, describe(a),
                         s + 1 == stages_ ? " has no next stage to talk to"
                                          : " talks to a stage on the same rank, which needs no transfer",
                         "; remove it");
        }
        break;
      case action_kind::recv_activation:
      case action_kind::send_gradient:
        if (!crosses_prev) {
          return problem(problem_kind::needless_transfer, describe(a),
                         s == 0 ? " has no previous stage to talk to"
                                : " talks to a stage on the same rank, which needs no transfer",
                         "; remove it");
        }
        break;
    }
    if (a.kind == action_kind::send_activation) {
      if (auto p = needs((st & F) != 0, {s, mb, action_kind::forward}, "(the data it sends)")) return p;
    }
    if (a.kind == action_kind::send_gradient && (st & (B | I)) == 0) {
      const action_kind k = s_.splits_backward() ? action_kind::backward_input : action_kind::backward;
      if (auto p = needs(false, {s, mb, k}, "(the gradient it sends)")) return p;
    }
    if (is_transfer(a.kind)) {
      const std::size_t key = keys_.of(a);
      const int boundary = a.kind == action_kind::send_activation || a.kind == action_kind::recv_gradient ? s : s - 1;
      const bool activation = a.kind == action_kind::send_activation || a.kind == action_kind::recv_activation;
      const auto ch = static_cast<std::size_t>(
          (activation ? act_channel_ : grad_channel_)[static_cast<std::size_t>(boundary)]);
      if (is_send(a.kind)) {
        send_seq_[key] = sent_count_[ch]++;
      } else {
        recv_seq_[key] = received_count_[ch]++;
      }
    }
    st = static_cast<std::uint8_t>(st | me);
    return std::nullopt;
  }

  std::optional<schedule_problem> check_complete() {
    for (int s = 0; s < stages_; ++s) {
      for (int mb = 0; mb < m_; ++mb) {
        const std::uint8_t st = state(s, mb);
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

  std::optional<schedule_problem> check_transfers() {
    for (int b = 0; b + 1 < stages_; ++b) {
      if (rank(b) == rank(b + 1)) continue;
      for (int mb = 0; mb < m_; ++mb) {
        if (auto p = check_message({b, mb, action_kind::send_activation},
                                   {b + 1, mb, action_kind::recv_activation}, "activations")) {
          return p;
        }
        if (!training_) continue;
        if (auto p = check_message({b + 1, mb, action_kind::send_gradient},
                                   {b, mb, action_kind::recv_gradient}, "gradients")) {
          return p;
        }
      }
    }
    return std::nullopt;
  }

  std::optional<schedule_problem> check_message(const action& send, const action& recv,
                                                const char* what) {
    const std::size_t key = keys_.of(send);
    const bool sent = send_seq_[key] >= 0;
    const bool received = recv_seq_[key] >= 0;
    const int from = rank(send.stage);
    const int to = rank(recv.stage);
    if (sent && !received) {
      return schedule_problem{problem_kind::unmatched_transfer, from, find_step(s_, from, send), send,
                              concat("rank ", from, " sends ", describe(send), " but rank ", to,
                                     " never receives it; add ", to_string(recv), " on rank ", to),
                              {}};
    }
    if (received && !sent) {
      return schedule_problem{problem_kind::unmatched_transfer, to, find_step(s_, to, recv), recv,
                              concat("rank ", to, " receives ", describe(recv), " but rank ", from,
                                     " never sends it; add ", to_string(send), " on rank ", from),
                              {}};
    }
    if (sent && send_seq_[key] != recv_seq_[key]) {
      const int send_step = find_step(s_, from, send);
      return schedule_problem{
          problem_kind::mismatched_transfer, to, find_step(s_, to, recv), recv,
          concat("rank ", from, " sends ", what, " to rank ", to, " in a different order than rank ",
                 to, " receives them: ", to_string(send), " (rank ", from, " step ", send_step,
                 ") is message #", send_seq_[key], " on that channel, but rank ", to,
                 " takes it as message #", recv_seq_[key], " with ", to_string(recv),
                 "; order each pair of ranks' sends and receives the same way"),
          {}};
    }
    return std::nullopt;
  }

  const schedule& s_;
  int stages_ = 0;
  int m_ = 0;
  bool training_ = true;
  const std::vector<int>* rank_of_ = nullptr;
  std::vector<std::uint8_t> state_;
  message_keys keys_{};
  std::vector<int> send_seq_, recv_seq_;
  std::vector<int> act_channel_, grad_channel_;
  std::vector<int> sent_count_, received_count_;
};

/// The sender of the message that receive `a` waits for.
inline action awaited_send(const action& a) {
  return a.kind == action_kind::recv_activation
             ? action{a.stage - 1, a.microbatch, action_kind::send_activation}
             : action{a.stage + 1, a.microbatch, action_kind::send_gradient};
}

/// Explains a replay that did not finish: follows each blocked rank to the rank it waits on until
/// the walk closes into a cycle, and reports that cycle.
inline schedule_problem deadlock_problem(const schedule& s, const replay_result& stopped) {
  const auto& rank_of = s.place.rank_table();
  const auto blocked_at = [&](int r) {
    return s.ranks[static_cast<std::size_t>(r)][stopped.pc[static_cast<std::size_t>(r)]];
  };
  int start = 0;
  while (stopped.pc[static_cast<std::size_t>(start)] == s.ranks[static_cast<std::size_t>(start)].size()) {
    ++start;
  }
  std::vector<int> seen(s.ranks.size(), -1);
  std::vector<int> path;
  int r = start;
  while (seen[static_cast<std::size_t>(r)] < 0) {
    seen[static_cast<std::size_t>(r)] = static_cast<int>(path.size());
    path.push_back(r);
    const action send = awaited_send(blocked_at(r));
    r = rank_of[static_cast<std::size_t>(send.stage)];
    if (stopped.pc[static_cast<std::size_t>(r)] == s.ranks[static_cast<std::size_t>(r)].size()) break;
  }
  std::vector<int> cycle(path.begin() + std::max(0, seen[static_cast<std::size_t>(r)]), path.end());
  std::rotate(cycle.begin(), std::min_element(cycle.begin(), cycle.end()), cycle.end());

  schedule_problem p{problem_kind::deadlock, cycle.front(),
                     static_cast<int>(stopped.pc[static_cast<std::size_t>(cycle.front())]),
                     blocked_at(cycle.front()), {}, {}};
  std::string chain;
  for (const int waiter : cycle) {
    const action waiting = blocked_at(waiter);
    const action send = awaited_send(waiting);
    const int sender = rank_of[static_cast<std::size_t>(send.stage)];
    const int send_step = find_step(s, sender, send);
    const int wait_step = static_cast<int>(stopped.pc[static_cast<std::size_t>(waiter)]);
    p.cycle.push_back({{waiter, wait_step}, waiting, {sender, send_step}, send});
    chain += concat("\n  rank ", waiter, " waits at step ", wait_step, " in ", to_string(waiting),
                    " for ", to_string(send), ", which rank ", sender, " posts only at step ",
                    send_step);
  }
  p.what = concat("rank ", p.rank, " step ", p.step, ": ", cycle.size(),
                  cycle.size() == 1 ? " rank waits" : " ranks wait",
                  " for each other forever (receives block until their send is posted):", chain,
                  "\n  move one of these sends before the receive its rank waits in, or that "
                  "receive after it");
  return p;
}

/// The grid around a problem: a few steps either side, every rank involved marked.
inline std::string problem_grid(const schedule& s, const schedule_problem& p) {
  if (p.rank < 0 || static_cast<std::size_t>(p.rank) >= s.ranks.size()) return {};
  std::vector<grid_cell> marks;
  for (const wait_link& link : p.cycle) {
    marks.push_back(link.waiter);
    marks.push_back(link.sender);
  }
  int center = p.step;
  if (center < 0) {  // a missing action: show the end of the rank's list
    center = static_cast<int>(s.ranks[static_cast<std::size_t>(p.rank)].size());
  } else if (p.cycle.empty()) {
    marks.push_back({p.rank, p.step});
  }
  return render_step_grid(s, center - 4, center + 4, marks);
}

inline validation_report report(const schedule& s, schedule_problem p) {
  p.what = concat("schedule \"", s.name, "\": ", p.what);
  validation_report out;
  out.grid = problem_grid(s, p);
  out.problem = std::move(p);
  return out;
}

/// Throws the error that a failed report stands for.
[[noreturn]] inline void throw_report(const validation_report& r) {
  throw error(r.problem->kind == problem_kind::deadlock ? errc::deadlock : errc::invalid_schedule,
              r.message());
}

/// Replay hooks that do nothing: validation only needs to know whether every rank finishes.
struct no_hooks {
  void on_compute(int, int, const action&) noexcept {}
  void on_send(int, std::size_t) noexcept {}
  void on_recv(int, std::size_t) noexcept {}
};

}  // namespace detail

/// @brief Checks that `s` is complete (every forward, every backward or I+W, every transfer that
/// crosses ranks), that each rank's order respects the data it needs, that every send is matched
/// by a receive in the same per-channel order, and that no ranks wait on each other forever.
/// Returns the first problem with its location and the rank-by-step grid around it.
inline validation_report check_schedule(const schedule& s) {
  if (auto problem = detail::structure_checker(s).run()) return detail::report(s, std::move(*problem));
  detail::no_hooks hooks;
  const detail::replay_result run = detail::replay(s, s.place.rank_table(), hooks);
  if (!run.finished) return detail::report(s, detail::deadlock_problem(s, run));
  return {};
}

/// @brief Like check_schedule(), but throws ppipe::error (errc::invalid_schedule, or errc::deadlock)
/// carrying the report's message when the schedule is not valid.
inline void validate(const schedule& s) {
  const validation_report r = check_schedule(s);
  if (!r.ok()) detail::throw_report(r);
}

}  // namespace ppipe
