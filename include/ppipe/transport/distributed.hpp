#pragma once
/// @file
/// @brief The distributed Transport: one pipeline rank per process (SPMD), and what the processes
/// tell each other at the end of a run.

#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/transport/stream_transport.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief How one rank's part of a run ended, as it tells the other processes.
struct rank_outcome {
  /// @brief The ways a rank's part of a run can end.
  enum class outcome : unsigned char {
    ok,       ///< every action ran and every send completed
    failed,   ///< an action, the loss or a transfer threw: `code` and `message` say what
    aborted,  ///< it stopped because another rank reported a failure
  };
  outcome what = outcome::ok;      ///< how the rank ended
  errc code = errc::stage_failed;  ///< for failed: the error's code
  std::string message;             ///< for failed: the whole message, "rank 1 in 1F3, step 7 of 24: ..."
};

/// @brief What every process concluded about a run: all of them conclude the same.
struct run_verdict {
  bool ok = true;                  ///< whether no rank failed (then the rest keep their defaults)
  int rank = -1;                   ///< the failed rank that is reported (the lowest that failed)
  errc code = errc::stage_failed;  ///< its error's code
  std::string message;             ///< its error's message
};

/// @brief One thing that every process of a distributed pipeline must hold alike before any payload
/// moves (the layer count, m, a boundary's shapes): what distributed_transport's agree() compares.
struct agreement_field {
  std::string name;       ///< what it is, for the message: "microbatches per step (m)"
  std::string value;      ///< its value in this process: "16"
  bool per_rank = false;  ///< alike only among the processes that run the same pipeline rank (replicas)
};

/// @brief A transport whose ranks are separate processes, each running one pipeline rank: every
/// process runs the same program (SPMD) and the executor runs only the rank `rank()` names.
///
/// Beyond ppipe::transport (or ppipe::stream_transport, whose transfers run on the rank's
/// streams) it provides:
/// - `int rank() const`: the pipeline rank this process runs;
/// - `run_verdict conclude(const rank_outcome&, deadline)`: called once per run by every process,
///   when its rank has stopped (done, failed or aborted). It tells the others how the rank ended,
///   learns how they did, and, when any failed, clears every message still in flight so that the
///   next run starts clean. Every process returns the same verdict;
/// - `wait_status broadcast(std::vector<std::byte>&, int root, deadline)`: gives every process the
///   bytes that rank `root` holds (the losses, the inference outputs);
/// - `void agree(const std::vector<agreement_field>&, std::string_view problem, deadline)`: called
///   by every process before a run with what it must hold alike, and what kept it from preparing
///   the run ("" when nothing did); returns when all agree and none has a problem, and otherwise
///   throws on every process a ppipe::error naming the process and its problem, or the first value
///   that differs and what each side holds;
/// - `std::string describe_rank(int) const`: a rank as messages name it, e.g. "rank 1 of replica 2
///   (process 5)", so that a user can find the process.
template <class T>
concept distributed_transport =
    pipeline_transport<T> && requires(T& t, const T& ct, const rank_outcome& report, deadline_clock::time_point deadline,
                             std::vector<std::byte>& bytes, int root, const std::vector<agreement_field>& fields) {
      { ct.rank() } -> std::convertible_to<int>;
      { t.conclude(report, deadline) } -> std::same_as<run_verdict>;
      { t.broadcast(bytes, root, deadline) } -> std::same_as<wait_status>;
      { t.agree(fields, std::string_view(), deadline) } -> std::same_as<void>;
      { ct.describe_rank(root) } -> std::convertible_to<std::string>;
    };

}  // namespace ppipe
