#pragma once
/// @file
/// @brief The group bookkeeping of a stream transport's CPU models: each rank's transfers, built
/// on its own thread between begin_group() and end_group(), handed over as one group to run.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"

namespace ppipe {

/// @brief One send or receive of a group: its peer, its bytes, and what it is for messages.
struct transfer_op {
  int peer = -1;          ///< the rank at the other end
  void* data = nullptr;   ///< what a send reads, or where a receive writes
  std::size_t bytes = 0;  ///< how many bytes
  bool is_send = false;   ///< a send (else a receive)
  std::string what;       ///< the transfer, e.g. "1SEND_F3 (send_activation of stage 1, microbatch 3)"
};

/// @brief Each rank's open group (ncclGroupStart/ncclGroupEnd semantics, groups nesting), kept
/// for a stream transport whose ranks each build theirs on their own thread.
/// @tparam Device the stream_device whose streams the groups run on
template <class Device>
class transfer_groups {
 public:
  /// @param ranks how many ranks build groups (each touches only its own)
  explicit transfer_groups(int ranks) : open_(static_cast<std::size_t>(ranks > 0 ? ranks : 0)) {}

  /// @brief Opens a group on rank `rank`.
  /// @param rank the rank
  void begin(int rank) { ++at(rank).depth; }

  /// @brief Closes rank `rank`'s group; the outermost one is handed to `launch`.
  /// @param rank the rank that opened it
  /// @param launch called as `launch(ops, device, stream)` with the group's transfers
  template <class Launch>
  void end(int rank, Launch&& launch) {
    open& g = at(rank);
    if (g.depth == 0) {
      detail::fail(errc::invalid_argument, "rank ", rank, " ended a transfer group it never began; call "
                   "begin_group() before end_group()");
    }
    if (--g.depth == 0) hand_over(g, launch);
  }

  /// @brief Adds a transfer to rank `rank`'s group, or, outside a group (or with `grouped`
  /// false), hands it to `launch` as a group of its own.
  /// @param rank the rank whose transfer it is
  /// @param op the transfer
  /// @param d the rank's device
  /// @param s the stream it runs on: every transfer of a group runs on one
  /// @param grouped whether groups are kept (false makes every transfer its own group)
  /// @param launch as in end()
  template <class Launch>
  void add(int rank, transfer_op op, Device& d, typename Device::stream s, bool grouped, Launch&& launch) {
    open& g = at(rank);
    if (!g.ops.empty() && (g.device != &d || !(g.stream == s))) {
      detail::fail(errc::invalid_argument, "rank ", rank, " put transfers on two streams in one group (", op.what,
                   " after ", g.ops.front().what, "); issue a group's transfers on one stream");
    }
    g.device = &d;
    g.stream = s;
    g.ops.push_back(std::move(op));
    if (g.depth == 0 || !grouped) hand_over(g, launch);
  }

  /// @brief Forgets every rank's open group (between runs, on every thread's behalf).
  void reset() {
    for (open& g : open_) g = open{};
  }

  /// @brief "rank 0's transfer group: 0SEND_F1 (...) to rank 1; 0RECV_B0 (...) from rank 1": the
  /// label of the stream item that runs a group, which a hang report shows.
  /// @param rank the group's rank
  /// @param ops its transfers
  /// @return the label
  [[nodiscard]] static std::string label(int rank, const std::vector<transfer_op>& ops) {
    std::string text = detail::concat("rank ", rank, "'s transfer group:");
    for (const transfer_op& o : ops) {
      text += detail::concat(" ", o.what, o.is_send ? " to rank " : " from rank ", o.peer, ";");
    }
    text.pop_back();
    return text;
  }

 private:
  struct open {
    int depth = 0;
    std::vector<transfer_op> ops;
    Device* device = nullptr;
    typename Device::stream stream{};
  };

  open& at(int rank) {
    if (rank < 0 || rank >= static_cast<int>(open_.size())) {
      detail::fail(errc::invalid_argument, "rank ", rank, " is not a rank of this ", open_.size(),
                   "-rank transport; ranks run 0..", static_cast<int>(open_.size()) - 1);
    }
    return open_[static_cast<std::size_t>(rank)];
  }

  template <class Launch>
  static void hand_over(open& g, Launch& launch) {
    if (g.ops.empty()) return;
    std::vector<transfer_op> ops;
    ops.swap(g.ops);
    launch(std::move(ops), *g.device, g.stream);
  }

  std::vector<open> open_;
};

}  // namespace ppipe
