#pragma once
/// @file
/// @brief The MPI transport's collectives: a run's results broadcast over the pipeline, and over
/// the replicas of a pipeline rank, how each replica's run ended and the mean of their gradients.
///
/// Each takes `wait(request, what)`: it waits for the request and returns true, or, past the
/// deadline, reports that this rank waited for `what()` (a callable giving the text) and returns
/// false.

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ppipe/backend/mpi/error.hpp"
#include "ppipe/backend/mpi/message.hpp"
#include "ppipe/backend/mpi/roster.hpp"
#include "ppipe/device/wait.hpp"
#include "ppipe/error.hpp"
#include "ppipe/tensor/bytes.hpp"
#include "ppipe/transport/distributed.hpp"

namespace ppipe::mpi::detail {

/// Gives every process of `comm` the bytes its process `root` holds, their count first, then the
/// bytes; `who_root` names the root in what a timeout reports.
template <class Wait>
wait_status broadcast_over(MPI_Comm comm, std::vector<std::byte>& bytes, int root, const std::string& who_root,
                           Wait&& wait) {
  std::uint64_t n = bytes.size();
  MPI_Request req = MPI_REQUEST_NULL;
  PPIPE_MPI_CHECK(MPI_Ibcast(&n, 1, MPI_UINT64_T, root, comm, &req));
  if (!wait(req, [&] { return ppipe::detail::concat(who_root, " to broadcast"); })) return wait_status::timed_out;
  if (n > static_cast<std::uint64_t>(INT_MAX)) {
    ppipe::detail::fail(errc::unsupported, who_root, " broadcasts ", n, " bytes; the MPI transport broadcasts at "
                        "most ", INT_MAX, " bytes: run fewer rows per call");
  }
  bytes.resize(static_cast<std::size_t>(n));
  PPIPE_MPI_CHECK(MPI_Ibcast(bytes.data(), static_cast<int>(n), MPI_BYTE, root, comm, &req));
  if (!wait(req, [&] { return ppipe::detail::concat("the ", n, " bytes that ", who_root, " broadcasts"); })) {
    return wait_status::timed_out;
  }
  return wait_status::ready;
}

/// Gives every rank of the pipeline the bytes rank `root` holds.
template <class Wait>
wait_status broadcast(const roster& who, std::vector<std::byte>& bytes, int root, Wait&& wait) {
  return broadcast_over(who.pipeline(), bytes, root, who.describe_rank(root), std::forward<Wait>(wait));
}

/// Gives this pipeline rank in every replica the bytes replica `root` holds.
template <class Wait>
wait_status broadcast_to_replicas(const roster& who, std::vector<std::byte>& bytes, int root, Wait&& wait) {
  return broadcast_over(who.replica_comm(), bytes, root, who.describe_replica(root), std::forward<Wait>(wait));
}

/// Replaces `values` by their mean over the replicas (sum, then times 1/replicas), in place; throws
/// a timeout when `wait` gives up. Every replica calls it with the same number of values.
template <class Wait>
void allreduce_mean(const roster& who, std::span<float> values, Wait&& wait) {
  if (values.size() > static_cast<std::size_t>(INT_MAX)) {
    ppipe::detail::fail(errc::unsupported, "cannot all-reduce ", values.size(), " values at once; at most ", INT_MAX);
  }
  MPI_Request req = MPI_REQUEST_NULL;
  PPIPE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_FLOAT, MPI_SUM,
                                 who.replica_comm(), &req));
  if (!wait(req, [&] {
        return ppipe::detail::concat("the other replicas to all-reduce ", values.size(), " gradient values");
      })) {
    ppipe::detail::fail(errc::timeout, "the gradient all-reduce over the replicas timed out");
  }
  const float scale = 1.0f / static_cast<float>(who.replica_count());
  for (float& v : values) v *= scale;
}

/// Whether `mine` is true on any process of the job (every replica's pipeline); nothing when
/// `wait` gives up.
template <class Wait>
std::optional<bool> any_process(const roster& who, bool mine, Wait&& wait) {
  int in = mine ? 1 : 0;
  int out = 0;
  MPI_Request req = MPI_REQUEST_NULL;
  PPIPE_MPI_CHECK(MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_LOR, who.inquiry_comm(), &req));
  if (!wait(req, [] { return std::string("every process of the job to take part in a collective decision"); })) {
    return std::nullopt;
  }
  return out != 0;
}

/// Every replica learns whether the others' runs failed: a replica that succeeded while another
/// failed must not go on to the gradient all-reduce, which the failed one will not join. Returns
/// `verdict` when it failed or every replica succeeded, else the first failed replica's verdict;
/// nothing when `wait` gives up.
template <class Wait>
std::optional<run_verdict> replicas_verdict(const roster& who, const run_verdict& verdict, Wait&& wait) {
  constexpr std::size_t record = 1024;
  std::vector<std::byte> mine(record);
  std::vector<std::byte> all(record * static_cast<std::size_t>(who.replica_count()));
  {
    std::vector<std::byte> packed;
    byte_writer w(packed);
    w.put(static_cast<std::int32_t>(verdict.ok ? 1 : 0));
    w.put(static_cast<std::int32_t>(verdict.code));
    w.put(static_cast<std::int32_t>(verdict.rank));
    const std::string_view text = std::string_view(verdict.message).substr(0, record - 32);
    w.text(text);
    std::copy(packed.begin(), packed.end(), mine.begin());
  }
  MPI_Request req = MPI_REQUEST_NULL;
  PPIPE_MPI_CHECK(MPI_Iallgather(mine.data(), static_cast<int>(record), MPI_BYTE, all.data(), static_cast<int>(record),
                                 MPI_BYTE, who.replica_comm(), &req));
  if (!wait(req, [] { return std::string("the other replicas to report how their run ended"); })) return std::nullopt;
  if (!verdict.ok) return verdict;
  for (int k = 0; k < who.replica_count(); ++k) {
    byte_reader r(all.data() + record * static_cast<std::size_t>(k), record, "replica verdict");
    const bool ok = r.get<std::int32_t>() != 0;
    const auto code = r.get<std::int32_t>();
    const auto rank = r.get<std::int32_t>();
    std::string text = r.text();
    if (ok) continue;
    return run_verdict{false, rank, errc_from_wire(code),
                       ppipe::detail::concat("replica ", k, " of ", who.replica_count(), " failed its step, so this "
                                             "replica does not apply it either: ", text)};
  }
  return verdict;
}

}  // namespace ppipe::mpi::detail
