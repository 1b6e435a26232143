#pragma once
/// @file
/// @brief Lowering: insert the sends and receives that a compute-only schedule implies.

#include <algorithm>
#include <limits>
#include <string_view>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief When a transfer lets its rank go on. The validator proves a schedule deadlock-free under
/// the model it is given, and the simulator times transfers by it.
///
/// Under both, each run of consecutive transfer actions on a rank is one group, posted together.
/// - `rendezvous` (the default, and the strict one): the rank goes on once every transfer of the
///   group has met its other end; a message moves once both its send and its receive are posted.
///   This is what NCCL point-to-point gives when each run is issued as one
///   ncclGroupStart/ncclGroupEnd group (Megatron's batched send_forward_recv_backward), and it
///   holds for any backend.
/// - `buffered`: sends never hold their rank up; the rank waits in each receive of the group until
///   its send has been posted. This is what mailboxes (the host backend) or MPI_Isend with
///   MPI_Wait on the receives give.
///
/// A schedule that is deadlock-free under `rendezvous` is deadlock-free under `buffered` too.
/// Under both, the messages between two ranks in one direction form one FIFO channel whatever
/// their kind (NCCL matches point-to-point messages by order, with no tag): both ranks must order
/// them the same way.
enum class transfer_model : unsigned char { rendezvous, buffered };

/// @brief "rendezvous" or "buffered".
/// @param model the transfer model to name
/// @return the enumerator's name, a view of a static string
constexpr std::string_view to_string(transfer_model model) noexcept {
  return model == transfer_model::rendezvous ? "rendezvous" : "buffered";
}

namespace detail {

/// Inserts the transfers of a compute-only schedule, one group between consecutive units of each
/// rank's compute actions: the sends of the unit before, then the receives of the unit after.
/// `unit_sizes(rank)` gives the rank's unit sizes, which must add up to its compute actions.
template <class UnitSizes>
schedule lower_in_units(schedule compute_only, UnitSizes&& unit_sizes) {
  if (compute_only.has_transfers()) {
    fail(errc::invalid_argument, "schedule \"", compute_only.name,
         "\" already has transfers; add_communication() takes a compute-only schedule");
  }
  const std::vector<int>& rank_of = compute_only.place.rank_table();
  const int last = compute_only.place.num_stages() - 1;
  std::vector<action> sends;
  for (std::size_t r = 0; r < compute_only.ranks.size(); ++r) {
    const int rank = static_cast<int>(r);
    std::vector<action>& list = compute_only.ranks[r];
    for (const action& a : list) {
      if (a.stage < 0 || a.stage > last) {
        fail(errc::invalid_argument, "rank ", rank, " has ", to_string(a), ", but stages run 0..", last,
             "; fix the action or the placement");
      }
    }
    // What crosses ranks around a compute action: the receive it needs and the send it makes.
    const auto from_prev = [&](const action& a) { return a.stage > 0 && rank_of[static_cast<std::size_t>(a.stage - 1)] != rank; };
    const auto to_next = [&](const action& a) { return a.stage < last && rank_of[static_cast<std::size_t>(a.stage + 1)] != rank; };
    const auto add_recv = [&](std::vector<action>& out, const action& a) {
      if (a.kind == action_kind::forward && from_prev(a)) {
        out.push_back({a.stage, a.microbatch, action_kind::recv_activation});
      } else if ((a.kind == action_kind::backward || a.kind == action_kind::backward_input) && to_next(a)) {
        out.push_back({a.stage, a.microbatch, action_kind::recv_gradient});
      }
    };
    const auto add_send = [&](const action& a) {
      if (a.kind == action_kind::forward && to_next(a)) {
        sends.push_back({a.stage, a.microbatch, action_kind::send_activation});
      } else if ((a.kind == action_kind::backward || a.kind == action_kind::backward_input) && from_prev(a)) {
        sends.push_back({a.stage, a.microbatch, action_kind::send_gradient});
      }
    };
    std::vector<action> lowered;
    lowered.reserve(list.size() * 3);
    sends.clear();
    std::size_t next = 0;
    for (const int size : unit_sizes(rank)) {
      const std::size_t end = std::min(list.size(), next + static_cast<std::size_t>(std::max(size, 0)));
      lowered.insert(lowered.end(), sends.begin(), sends.end());
      sends.clear();
      for (std::size_t i = next; i < end; ++i) add_recv(lowered, list[i]);
      for (std::size_t i = next; i < end; ++i) {
        lowered.push_back(list[i]);
        add_send(list[i]);
      }
      next = end;
    }
    if (next != list.size()) {
      fail(errc::invalid_argument, "rank ", rank, "'s transfer units cover ", next, " of its ",
           list.size(), " compute actions; make them add up");
    }
    lowered.insert(lowered.end(), sends.begin(), sends.end());
    list = std::move(lowered);
  }
  return compute_only;
}

/// Unit sizes for `list` where an R belongs to the unit of the compute action after it (it makes
/// and needs no data across ranks): a transfer group then never sits between an R and its
/// backward, and a forward's send still pairs with the next backward's receive. A paired forward
/// (F+) and its backward are always one unit. `pair_forward` 2 also makes any forward and the
/// backward (B or I) after it one unit; 1 does not.
inline std::vector<int> compute_units(const std::vector<action>& list, int pair_forward) {
  std::vector<int> units;
  std::size_t i = 0;
  const auto skip_r = [&](std::size_t k) {
    while (k < list.size() && list[k].kind == action_kind::recompute) ++k;
    return k;
  };
  while (i < list.size()) {
    std::size_t end = skip_r(i);
    if (end < list.size()) ++end;  // the compute action the R's (if any) lead to
    if (list[end - 1].paired && end < list.size()) {
      ++end;  // its backward
    } else if (pair_forward == 2 && list[end - 1].kind == action_kind::forward) {
      const std::size_t b = skip_r(end);
      if (b < list.size() && (list[b].kind == action_kind::backward || list[b].kind == action_kind::backward_input)) {
        end = b + 1;
      }
    }
    units.push_back(static_cast<int>(end - i));
    i = end;
  }
  return units;
}

}  // namespace detail

/// @brief Returns `compute_only` with a transfer wherever data crosses ranks: a send right after
/// the forward (backward) that produced it, a receive right before the forward (backward) that
/// needs it. Stages next to each other on the same rank hand data over locally, with no transfer.
///
/// A send and the receive that follows it with no compute in between form one transfer group (see
/// transfer_model): in 1F1B's steady state that pairs each forward's send with the next backward's
/// receive, as Megatron batches them. The receive's position is where the rank needs the data; a
/// runtime may post it earlier.
/// Throws ppipe::error if the schedule already has transfers or names a stage out of range.
/// An R (recompute) joins the group structure of the compute action after it, and a paired forward
/// (F+) and its backward form one unit: both receives before the pair, both sends after it.
/// @param compute_only a schedule with compute actions only (F, B, I, W, R), taken by value and moved from
/// @return the same schedule (name, placement, m and mode unchanged) with its sends and receives inserted
inline schedule add_communication(schedule compute_only) {
  std::vector<std::vector<int>> units;
  for (const auto& list : compute_only.ranks) units.push_back(detail::compute_units(list, 1));
  return detail::lower_in_units(std::move(compute_only), [&](int rank) { return units[static_cast<std::size_t>(rank)]; });
}

namespace detail {

/// Inserts the transfers of a compute-only schedule whose actions were given unit time slots
/// (`starts[r][k]`: when rank r's k-th action starts): after each slot every rank sends what it
/// has just made for other ranks and posts the receives of what the other ranks have just made for
/// it, both in one canonical order (by peer, kind, stage, microbatch). Every message's send and
/// receive are then posted at the same slot boundary on both ranks, in the same order per pair, so
/// the schedule is deadlock-free under the rendezvous model (NCCL's) when the slots are
/// consistent: strictly rising along each rank, and every consumer's slot after its producer's (as
/// unit_start_times() gives them, or the columns of a runnable schedule file). A paired forward
/// (F+) and its backward are emitted together, the transfers of the pair's first slot after both.
/// A runtime still completes each receive only before the compute that needs it.
inline schedule lower_by_time(schedule compute_only, const std::vector<std::vector<long>>& starts) {
  if (compute_only.has_transfers()) {
    fail(errc::invalid_argument, "schedule \"", compute_only.name,
         "\" already has transfers; lower_by_time() takes a compute-only schedule");
  }
  const std::vector<int>& rank_of = compute_only.place.rank_table();
  const int last = compute_only.place.num_stages() - 1;
  const auto p = compute_only.ranks.size();
  if (starts.size() != p) {
    fail(errc::invalid_argument, "lower_by_time got start times for ", starts.size(), " ranks, but schedule \"",
         compute_only.name, "\" has ", p, "; give one list per rank");
  }
  for (std::size_t r = 0; r < p; ++r) {
    const auto& times = starts[r];
    bool rising = times.size() == compute_only.ranks[r].size();
    for (std::size_t k = 0; rising && k < times.size(); ++k) rising = times[k] >= 0 && (k == 0 || times[k] > times[k - 1]);
    if (!rising) {
      fail(errc::invalid_argument, "lower_by_time: rank ", r, " has ", compute_only.ranks[r].size(),
           " actions and ", times.size(), " start times; give one per action, from 0, strictly rising");
    }
  }
  // The messages, each with the boundary (the slot of the compute that made it) it leaves at.
  struct message {
    long boundary;
    int from;
    int to;
    action send;
    action recv;
  };
  std::vector<message> messages;
  for (std::size_t r = 0; r < p; ++r) {
    const auto& list = compute_only.ranks[r];
    for (std::size_t k = 0; k < list.size(); ++k) {
      const action& a = list[k];
      const int rank = static_cast<int>(r);
      const long after = starts[r][k];
      if (a.stage < 0 || a.stage > last) {
        fail(errc::invalid_argument, "rank ", rank, " has ", to_string(a), ", but stages run 0..", last,
             "; fix the action or the placement");
      }
      if (a.kind == action_kind::forward && a.stage < last && rank_of[static_cast<std::size_t>(a.stage + 1)] != rank) {
        messages.push_back({after, rank, rank_of[static_cast<std::size_t>(a.stage + 1)],
                            {a.stage, a.microbatch, action_kind::send_activation},
                            {a.stage + 1, a.microbatch, action_kind::recv_activation}});
      } else if ((a.kind == action_kind::backward || a.kind == action_kind::backward_input) && a.stage > 0 &&
                 rank_of[static_cast<std::size_t>(a.stage - 1)] != rank) {
        messages.push_back({after, rank, rank_of[static_cast<std::size_t>(a.stage - 1)],
                            {a.stage, a.microbatch, action_kind::send_gradient},
                            {a.stage - 1, a.microbatch, action_kind::recv_gradient}});
      }
    }
  }
  // One canonical order, then each message into its sender's and its receiver's list.
  std::sort(messages.begin(), messages.end(), [](const message& x, const message& y) {
    if (x.boundary != y.boundary) return x.boundary < y.boundary;
    if (x.from != y.from) return x.from < y.from;
    if (x.to != y.to) return x.to < y.to;
    if (x.send.kind != y.send.kind) return x.send.kind < y.send.kind;
    if (x.send.stage != y.send.stage) return x.send.stage < y.send.stage;
    return x.send.microbatch < y.send.microbatch;
  });
  struct timed {
    long boundary;
    action act;
  };
  std::vector<std::vector<timed>> sends(p);
  std::vector<std::vector<timed>> recvs(p);
  for (const message& msg : messages) {
    sends[static_cast<std::size_t>(msg.from)].push_back({msg.boundary, msg.send});
    recvs[static_cast<std::size_t>(msg.to)].push_back({msg.boundary, msg.recv});
  }
  for (std::size_t r = 0; r < p; ++r) {
    const auto& list = compute_only.ranks[r];
    std::vector<action> out;
    out.reserve(list.size() + sends[r].size() + recvs[r].size());
    std::size_t k = 0;
    std::size_t si = 0;
    std::size_t ri = 0;
    // After each compute slot of this rank, and at every boundary where messages reach it.
    while (k < list.size() || si < sends[r].size() || ri < recvs[r].size()) {
      long t = std::numeric_limits<long>::max();
      if (k < list.size()) t = std::min(t, starts[r][k]);
      if (si < sends[r].size()) t = std::min(t, sends[r][si].boundary);
      if (ri < recvs[r].size()) t = std::min(t, recvs[r][ri].boundary);
      if (k < list.size() && starts[r][k] == t) {
        // A pair runs as one: its backward follows at once, and what would cross between them
        // waits until after it.
        const bool pair = list[k].paired && k + 1 < list.size();
        out.push_back(list[k++]);
        if (pair) out.push_back(list[k++]);
      }
      for (; si < sends[r].size() && sends[r][si].boundary == t; ++si) out.push_back(sends[r][si].act);
      for (; ri < recvs[r].size() && recvs[r][ri].boundary == t; ++ri) out.push_back(recvs[r][ri].act);
    }
    compute_only.ranks[r] = std::move(out);
  }
  return compute_only;
}

/// Start times of a compute-only schedule run with unit costs and instant transfers: each rank
/// runs its list in order, each action as soon as the rank is free and its data is there (a
/// forward after the previous stage's forward, an I or B after the next stage's, a W after its
/// I, an R after its forward); a paired forward (F+) waits for its backward's data too, which
/// then runs in the next slot. Fails if the order cannot run (it waits on itself).
inline std::vector<std::vector<long>> unit_start_times(const schedule& compute_only) {
  const int last = compute_only.place.num_stages() - 1;
  const auto m = static_cast<std::size_t>(compute_only.microbatches);
  const auto slot = [m](int stage, int mb) { return static_cast<std::size_t>(stage) * m + static_cast<std::size_t>(mb); };
  const std::size_t slots = static_cast<std::size_t>(last + 1) * m;
  std::vector<long> f_end(slots, -1);
  std::vector<long> b_end(slots, -1);  // I, or a full backward
  const std::size_t p = compute_only.ranks.size();
  std::vector<std::vector<long>> starts(p);
  std::vector<std::size_t> next(p, 0);
  std::vector<long> free_at(p, 0);
  for (bool moved = true; moved;) {
    moved = false;
    for (std::size_t r = 0; r < p; ++r) {
      const auto& list = compute_only.ranks[r];
      const auto ready_of = [&](const action& a) -> long {
        if (a.kind == action_kind::forward) return a.stage == 0 ? 0 : f_end[slot(a.stage - 1, a.microbatch)];
        if (a.kind == action_kind::backward || a.kind == action_kind::backward_input) {
          return a.stage == last ? f_end[slot(a.stage, a.microbatch)] : b_end[slot(a.stage + 1, a.microbatch)];
        }
        if (a.kind == action_kind::recompute) return f_end[slot(a.stage, a.microbatch)];
        return b_end[slot(a.stage, a.microbatch)];
      };
      const auto finish = [&](const action& a, long start) {
        starts[r].push_back(start);
        free_at[r] = start + 1;
        if (a.kind == action_kind::forward) f_end[slot(a.stage, a.microbatch)] = start + 1;
        if (a.kind == action_kind::backward || a.kind == action_kind::backward_input) {
          b_end[slot(a.stage, a.microbatch)] = start + 1;
        }
        ++next[r];
      };
      while (next[r] < list.size()) {
        const action& a = list[next[r]];
        const bool pair = a.paired && next[r] + 1 < list.size();
        long ready = ready_of(a);
        if (ready < 0) break;  // waits for another rank
        if (pair) {
          const action& b = list[next[r] + 1];
          // The backward may read the forward's output only where the pair is one stage's: then it
          // is ready once the forward is; otherwise it waits for its own data before the pair.
          const bool own = b.stage == a.stage && b.microbatch == a.microbatch;
          const long b_ready = own ? ready : ready_of(b);
          if (b_ready < 0) break;
          ready = std::max(ready, b_ready);
        }
        const long start = std::max(ready, free_at[r]);
        finish(a, start);
        if (pair) finish(list[next[r]], start + 1);
        moved = true;
      }
    }
  }
  for (std::size_t r = 0; r < p; ++r) {
    if (next[r] != compute_only.ranks[r].size()) {
      fail(errc::deadlock, "schedule \"", compute_only.name, "\": rank ", r, " cannot run ",
           to_string(compute_only.ranks[r][next[r]]), " (step ", next[r] + 1,
           "): its data never comes; reorder the compute");
    }
  }
  return starts;
}

}  // namespace detail
}  // namespace ppipe
