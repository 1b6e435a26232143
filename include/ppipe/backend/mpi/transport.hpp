#pragma once
/// @file
/// @brief ppipe::mpi::transport: pipeline ranks as MPI processes, payloads over non-blocking
/// point-to-point messages.

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/backend/mpi/agreement.hpp"
#include "ppipe/backend/mpi/error.hpp"
#include "ppipe/backend/mpi/message.hpp"
#include "ppipe/error.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe::mpi {

/// @brief What a rank does when a wait runs past its deadline. The peer it waited for may be stuck
/// in a kernel or gone, so the processes can no longer agree on anything: the job cannot go on.
enum class timeout_policy : unsigned char {
  abort_job,    ///< print the error (naming the peer and the action) on stderr, then MPI_Abort the job
  throw_error,  ///< throw the ppipe::error; the transport refuses further runs, and the caller ends the job
};

/// @brief How the MPI transport sends.
struct transport_options {
  /// Described payloads of at most this many bytes travel in one message together with their
  /// shapes (one message latency, one small copy); larger ones as a header of shapes followed by
  /// one message per tensor sent from and received into the tensors' own memory (no copy). Agreed
  /// payloads of several tensors of at most this many bytes are copied back to back into one
  /// message; larger ones go from the tensors' memory, through one MPI datatype.
  std::size_t inline_bytes = 16 * 1024;
  timeout_policy on_timeout = timeout_policy::abort_job;
  int abort_code = 3;  ///< the exit code MPI_Abort is given
  /// How long a wait polls MPI without pause before it starts yielding the core between polls (on
  /// an oversubscribed node a polling process takes the core of one that has work).
  std::chrono::microseconds spin{200};
  /// After a timeout, how long a rank waits for the other ranks to say what they are waiting for,
  /// before it names those that did not answer (dead, or stuck outside ppipe) in its message.
  std::chrono::milliseconds inquiry{1000};
};

namespace detail {
/// An MPI communicator that ppipe duplicated and frees (unless MPI is finalised by then).
class owned_comm {
 public:
  owned_comm() = default;
  explicit owned_comm(MPI_Comm c) : comm_(c) {}
  owned_comm(owned_comm&& other) noexcept : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}
  owned_comm& operator=(owned_comm&& other) noexcept {
    if (this != &other) {
      release();
      comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    }
    return *this;
  }
  owned_comm(const owned_comm&) = delete;
  owned_comm& operator=(const owned_comm&) = delete;
  ~owned_comm() { release(); }
  operator MPI_Comm() const noexcept { return comm_; }  // a handle, used where MPI takes the communicator

 private:
  void release() noexcept {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_NULL && finalized == 0) MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// A duplicate of `c` whose errors are returned, not fatal.
inline owned_comm duplicate(MPI_Comm c) {
  MPI_Comm dup = MPI_COMM_NULL;
  PPIPE_MPI_CHECK(MPI_Comm_dup(c, &dup));
  owned_comm out(dup);
  PPIPE_MPI_CHECK(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  return out;
}

/// The rank in MPI_COMM_WORLD of each process of `c`: what messages name, so that a user finds it.
inline std::vector<int> world_ranks(MPI_Comm c) {
  MPI_Group group = MPI_GROUP_NULL;
  MPI_Group world = MPI_GROUP_NULL;
  PPIPE_MPI_CHECK(MPI_Comm_group(c, &group));
  PPIPE_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
  int n = 0;
  MPI_Group_size(group, &n);
  std::vector<int> mine(static_cast<std::size_t>(n));
  std::vector<int> out(mine.size());
  for (int i = 0; i < n; ++i) mine[static_cast<std::size_t>(i)] = i;
  const int code = MPI_Group_translate_ranks(group, n, mine.data(), world, out.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  PPIPE_MPI_CHECK(code);
  return out;
}
}  // namespace detail

/// @brief A Transport over MPI (see ppipe::distributed_transport): every process of the pipeline's
/// communicator runs one pipeline rank, its rank in that communicator. The communicator is
/// duplicated, so ppipe's messages never match the program's own. With a replica communicator
/// (the processes that run the same pipeline rank in each data-parallel replica) the run's outcome
/// is also agreed across replicas, and allreduce_mean() averages gradients over them.
///
/// Payloads are sent with MPI_Isend when the schedule's transfer actions run, in the order the
/// schedule validator has checked cannot deadlock (its buffered model: a send never waits for its
/// receive to be posted). A receive matches its message with MPI_Improbe as soon as it has arrived
/// (whenever this rank is in one of the transport's waits) and receives it with MPI_Imrecv once its
/// size is known to be the expected one: no message is ever written past a buffer. The k-th
/// receive a rank posts from a peer matches the k-th send that peer posted to it, whatever order
/// they complete in: each carries its sequence number in its tag.
///
/// A payload goes with a header of its shapes (and, when small, its values in the same message),
/// so the receiver needs to know nothing ahead. When both ranks know the shapes ahead, as a
/// pipeline does (see ppipe::agrees_shapes), a payload goes as one message of its values alone,
/// from and into the tensors' memory: for one tensor, the message a program calling MPI itself
/// would send.
///
/// Not thread-safe: one thread of the process uses it (MPI_THREAD_FUNNELED is enough when that is
/// the main thread, MPI_THREAD_SERIALIZED otherwise).
class transport {
 public:
  using tensor_type = host_tensor;

  /// @brief Handle of a posted send: its slot, and which use of the slot it is.
  struct send_handle {
    std::uint32_t slot = 0;
    std::uint64_t ticket = 0;
  };
  /// @brief Handle of a posted receive: the channel, its sequence number, and its slot.
  struct recv_handle {
    int from = -1;
    std::uint64_t sequence = 0;
    std::uint32_t slot = 0;
  };

  /// complete_recv() writes into the tensors of the payload it is given when their shapes are
  /// those that arrive (and replaces them otherwise), so the executor hands it buffers from the
  /// receiving stage's pool instead of letting every receive allocate.
  static constexpr bool fills_given_buffers = true;

  /// @param pipeline the processes of one pipeline, rank r running pipeline rank r (duplicated)
  /// @param replicas the processes running this pipeline rank in every replica, or MPI_COMM_NULL
  /// when there is one replica (duplicated). Collective over both communicators.
  explicit transport(MPI_Comm pipeline, MPI_Comm replicas = MPI_COMM_NULL, transport_options options = {})
      : options_(options) {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized == 0 || finalized != 0) {
      ppipe::detail::fail(errc::invalid_argument, "the MPI transport needs MPI initialised (and not finalised); "
                          "construct a ppipe::mpi::session, or call MPI_Init_thread, first");
    }
    if (pipeline == MPI_COMM_NULL) {
      ppipe::detail::fail(errc::invalid_argument, "the MPI transport was given MPI_COMM_NULL as the pipeline's "
                          "communicator; pass MPI_COMM_WORLD or the communicator of one pipeline replica");
    }
    comm_ = detail::duplicate(pipeline);
    PPIPE_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    PPIPE_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    world_of_ = detail::world_ranks(comm_);
    if (replicas != MPI_COMM_NULL) {
      replicas_ = detail::duplicate(replicas);
      PPIPE_MPI_CHECK(MPI_Comm_rank(replicas_, &replica_));
      PPIPE_MPI_CHECK(MPI_Comm_size(replicas_, &replica_count_));
      replica_world_of_ = detail::world_ranks(replicas_);
      join_job();
    }
    int* tag_ub = nullptr;
    int flag = 0;
    PPIPE_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &flag));
    if (flag != 0 && tag_ub != nullptr && *tag_ub < answer_tag) {
      ppipe::detail::fail(errc::unsupported, "this MPI allows tags up to ", *tag_ub, ", but ppipe's MPI transport "
                          "uses tags up to ", answer_tag, " (the standard guarantees 32767)");
    }
    sent_.assign(static_cast<std::size_t>(size_), 0);
    posted_.assign(static_cast<std::size_t>(size_), 0);
    reports_.assign(static_cast<std::size_t>(size_), std::nullopt);
  }

  transport(transport&&) noexcept = default;
  transport& operator=(transport&&) noexcept = default;
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;
  ~transport() = default;

  [[nodiscard]] int num_ranks() const noexcept { return size_; }
  /// @brief The pipeline rank this process runs: its rank in the pipeline's communicator.
  [[nodiscard]] int rank() const noexcept { return rank_; }
  /// @brief How many replicas of the pipeline the job runs (1 without a replica communicator).
  [[nodiscard]] int replicas() const noexcept { return replica_count_; }
  /// @brief Which replica this process belongs to (its rank in the replica communicator).
  [[nodiscard]] int replica() const noexcept { return replica_; }
  /// @brief The pipeline's communicator (ppipe's duplicate of it).
  [[nodiscard]] MPI_Comm communicator() const noexcept { return comm_; }
  [[nodiscard]] const transport_options& options() const noexcept { return options_; }

  send_handle post_send(int from, int to, const payload& data) {
    check_pair(from, to, "send");
    const std::uint64_t seq = sent_[static_cast<std::size_t>(to)];
    const bool with_values = bytes_of(data) <= options_.inline_bytes;
    const std::uint32_t at = take_slot(sends_, free_sends_);
    send_slot& slot = sends_[at];
    slot.to = to;
    slot.sequence = seq;
    try {
      detail::write_header(slot.header, data, with_values);
    } catch (...) {
      release_slot(sends_, free_sends_, at);
      throw;
    }
    ++sent_[static_cast<std::size_t>(to)];  // counted once nothing can fail: the peer's drain waits for it
    slot.values.clear();
    PPIPE_MPI_CHECK(MPI_Isend(slot.header.data(), static_cast<int>(slot.header.size()), MPI_BYTE, to, header_tag(seq),
                              comm_, &slot.request));
    if (!with_values) {
      for (const host_tensor& t : data) {
        if (t.size() == 0) continue;
        slot.values.push_back(MPI_REQUEST_NULL);
        PPIPE_MPI_CHECK(MPI_Isend(t.byte_data(), count_of(t), MPI_BYTE, to, data_tag(seq), comm_, &slot.values.back()));
      }
    }
    return send_handle{at, slot.ticket};
  }

  /// @brief Sends `data` to a receive posted with agreed_shapes and buffers of `data`'s shapes
  /// (see ppipe::agrees_shapes), as one message of its values and nothing else. One tensor goes
  /// from its own memory, as MPI_Isend of the tensor would. Several go back to back: copied
  /// through the slot's buffer when they add up to at most transport_options::inline_bytes, and
  /// otherwise straight from their memory, described to MPI by a datatype of their addresses.
  send_handle post_send(int from, int to, const payload& data, agreed_shapes_t /*agreed*/) {
    check_pair(from, to, "send");
    const int count = bytes_count(data);
    const std::uint64_t seq = sent_[static_cast<std::size_t>(to)];
    const std::uint32_t at = take_slot(sends_, free_sends_);
    send_slot& slot = sends_[at];
    slot.to = to;
    slot.sequence = seq;
    slot.values.clear();
    const int tag = agreed_tag(seq);
    const std::size_t bytes = bytes_of(data);
    if (data.size() == 1) {
      PPIPE_MPI_CHECK(MPI_Isend(data.front().byte_data(), count, MPI_BYTE, to, tag, comm_, &slot.request));
    } else if (bytes <= options_.inline_bytes) {
      slot.header.resize(bytes);
      std::byte* next = slot.header.data();
      for (const host_tensor& t : data) {
        if (t.bytes() != 0) std::memcpy(next, t.byte_data(), t.bytes());
        next += t.bytes();
      }
      PPIPE_MPI_CHECK(MPI_Isend(slot.header.data(), count, MPI_BYTE, to, tag, comm_, &slot.request));
    } else {
      MPI_Datatype type = tensors_type(data);
      const int code = MPI_Isend(MPI_BOTTOM, 1, type, to, tag, comm_, &slot.request);
      MPI_Type_free(&type);  // the send keeps what it needs
      PPIPE_MPI_CHECK(code);
    }
    ++sent_[static_cast<std::size_t>(to)];
    return send_handle{at, slot.ticket};
  }

  recv_handle post_recv(int from, int to) {
    check_pair(to, from, "receive");
    const std::uint64_t seq = posted_[static_cast<std::size_t>(from)]++;
    return recv_handle{from, seq, take_recv_slot(from, seq, recv_form::described, {}, 0)};
  }

  /// @brief Receives, into `buffers`, the payload a send posted with agreed_shapes has (see
  /// ppipe::agrees_shapes): one message of its values, which land straight in the tensors' memory
  /// (through the slot's buffer for several tensors of at most inline_bytes in all).
  /// complete_recv() hands the buffers back (whatever payload it is given). A message of another
  /// size is refused with both counts, and never written past the buffers: its size is read
  /// before it is received (Open MPI's shared-memory single-copy path does not truncate).
  recv_handle post_recv(int from, int to, agreed_shapes_t /*agreed*/, payload buffers) {
    check_pair(to, from, "receive");
    const int count = bytes_count(buffers);
    const std::uint64_t seq = posted_[static_cast<std::size_t>(from)]++;
    return recv_handle{from, seq, take_recv_slot(from, seq, recv_form::agreed, std::move(buffers), count)};
  }

  /// @brief Waits for the claimed payload and delivers it in `into`: into the tensors `into`
  /// already holds when their shapes are those that arrived (no allocation), into new ones
  /// otherwise. Returns aborted when another rank reports a failure first.
  wait_status complete_recv(recv_handle& h, payload& into, deadline_clock::time_point deadline) {
    if (h.slot >= recvs_.size() || !recvs_[h.slot].busy || recvs_[h.slot].from != h.from ||
        recvs_[h.slot].sequence != h.sequence) {
      ppipe::detail::fail(errc::invalid_argument, "no pending receive from rank ", h.from, " with sequence number ",
                          h.sequence, "; complete each posted receive once");
    }
    const waiting_on note(*this, wait_kind::payload_from, h.from, h.sequence);
    const wait_status st = finish_recv(h.slot, &into, deadline, true);
    if (st == wait_status::ready) {
      into = std::move(recvs_[h.slot].into);
      release_slot(recvs_, free_recvs_, h.slot);
    }
    return st;
  }

  wait_status complete_send(send_handle& h, deadline_clock::time_point deadline) {
    if (h.slot >= sends_.size() || !sends_[h.slot].busy || sends_[h.slot].ticket != h.ticket) return wait_status::ready;
    const waiting_on note(*this, wait_kind::send_to, sends_[h.slot].to, sends_[h.slot].sequence);
    const wait_status st = wait_send(sends_[h.slot], deadline, true);
    if (st == wait_status::ready) release_slot(sends_, free_sends_, h.slot);
    return st;
  }

  /// @brief Makes the next wait return aborted (a failure in this process).
  void abort() { aborted_ = true; }

  /// @brief Readies the transport for the next run. Every run ends in conclude(), which leaves no
  /// message in flight, so only the counters start again.
  void reset() {
    refuse_if_broken();
    std::fill(sent_.begin(), sent_.end(), 0);
    std::fill(posted_.begin(), posted_.end(), 0);
    std::fill(reports_.begin(), reports_.end(), std::nullopt);
    aborted_ = false;
    remote_failure_ = false;
    ++run_;
  }

  /// @brief See ppipe::distributed_transport: tells every other rank how this one's run ended,
  /// learns how theirs did, clears what a failed run left in flight, and agrees with the other
  /// replicas. Every process returns the same verdict.
  run_verdict conclude(const rank_outcome& mine, deadline_clock::time_point deadline) {
    const auto start = deadline_clock::now();
    // Kept by the transport: a report may still be on its way when a timeout returns early.
    std::vector<notice>& notices = notices_;
    notices.clear();
    notices.reserve(static_cast<std::size_t>(size_));
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      notice& n = notices.emplace_back();
      n.bytes = detail::write_report({mine, run_, sent_[static_cast<std::size_t>(q)]});
      PPIPE_MPI_CHECK(MPI_Isend(n.bytes.data(), static_cast<int>(n.bytes.size()), MPI_BYTE, q, control_tag, comm_,
                                &n.request));
    }
    const bool i_timed_out = mine.what == rank_outcome::outcome::failed && mine.code == errc::timeout;
    if (i_timed_out) return stuck(mine.message);

    run_verdict verdict;
    if (mine.what == rank_outcome::outcome::failed) verdict = {false, rank_, mine.code, mine.message};
    for (int q = 0; q < size_; ++q) {
      if (q == rank_ || reports_[static_cast<std::size_t>(q)]) continue;
      const waiting_on note(*this, wait_kind::report_from, q, 0);
      if (!receive_report(q, deadline)) {
        return stuck(ppipe::detail::concat(describe_rank(rank_), " ended its part of the run and waited ",
                                           waited_ms(start), " for ", describe_rank(q), " to report how its part ended"));
      }
    }
    for (int q = 0; q < size_; ++q) {
      const auto& r = reports_[static_cast<std::size_t>(q)];
      if (q == rank_ || !r || r->report.what != rank_outcome::outcome::failed) continue;
      if (r->report.code == errc::timeout) {
        // Its process aborts the job (or throws) without draining: nothing here can drain either.
        return stuck(ppipe::detail::concat(describe_rank(q), " timed out: ", r->report.message));
      }
      if (verdict.ok || q < verdict.rank) verdict = {false, q, r->report.code, r->report.message};
    }
    if (!verdict.ok) {
      if (std::optional<run_verdict> failed = drain(deadline)) return *std::move(failed);
    }
    const waiting_on note(*this, wait_kind::collective, -1, 0);
    for (notice& n : notices) {
      if (wait_one(n.request, deadline) != wait_status::ready) {
        return stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start),
                                           " for its end-of-run report to reach the other ranks"));
      }
    }
    return agree_with_replicas(std::move(verdict), deadline);
  }

  /// @brief Gives every rank of the pipeline the bytes rank `root` holds.
  wait_status broadcast(std::vector<std::byte>& bytes, int root, deadline_clock::time_point deadline) {
    const auto start = deadline_clock::now();
    const waiting_on note(*this, wait_kind::broadcast_from, root, 0);
    std::uint64_t n = bytes.size();
    MPI_Request req = MPI_REQUEST_NULL;
    PPIPE_MPI_CHECK(MPI_Ibcast(&n, 1, MPI_UINT64_T, root, comm_, &req));
    if (wait_one(req, deadline) != wait_status::ready) {
      stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start), " for ", describe_rank(root),
                                  " to broadcast the run's results"));
      return wait_status::timed_out;
    }
    if (n > static_cast<std::uint64_t>(INT_MAX)) {
      ppipe::detail::fail(errc::unsupported, "the run's results take ", n, " bytes; the MPI transport broadcasts at "
                          "most ", INT_MAX, " bytes: run fewer rows per call");
    }
    bytes.resize(static_cast<std::size_t>(n));
    PPIPE_MPI_CHECK(MPI_Ibcast(bytes.data(), static_cast<int>(n), MPI_BYTE, root, comm_, &req));
    if (wait_one(req, deadline) != wait_status::ready) {
      stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start), " for the ", n,
                                  " bytes of results that ", describe_rank(root), " broadcasts"));
      return wait_status::timed_out;
    }
    return wait_status::ready;
  }

  /// @brief Replaces `values` by their mean over the replicas (sum, then times 1/replicas), in
  /// place. Every replica calls it with the same number of values. A no-op with one replica.
  void allreduce_mean(std::span<float> values, deadline_clock::time_point deadline) {
    if (replica_count_ <= 1 || values.empty()) return;
    const auto start = deadline_clock::now();
    if (values.size() > static_cast<std::size_t>(INT_MAX)) {
      ppipe::detail::fail(errc::unsupported, "cannot all-reduce ", values.size(), " values at once; at most ", INT_MAX);
    }
    const waiting_on note(*this, wait_kind::replicas, -1, 0);
    MPI_Request req = MPI_REQUEST_NULL;
    PPIPE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_FLOAT, MPI_SUM,
                                   replicas_, &req));
    if (wait_one(req, deadline) != wait_status::ready) {
      stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start),
                                  " for the other replicas to all-reduce ", values.size(), " gradient values"));
      ppipe::detail::fail(errc::timeout, "the gradient all-reduce over the replicas timed out");
    }
    const float scale = 1.0f / static_cast<float>(replica_count_);
    for (float& v : values) v *= scale;
  }

  /// @brief See ppipe::distributed_transport: every process compares `mine` with the others'
  /// before a run, over the pipeline (fields alike everywhere) and then over the replicas (per-rank
  /// fields too), and all throw the same ppipe::error (invalid_argument) naming a process's
  /// `problem` (the lowest rank's), or else the first field that differs and the value of each
  /// side; or all return. Costs one 8-byte all-gather per communicator when they agree.
  void agree(const std::vector<agreement_field>& mine, std::string_view problem, deadline_clock::time_point deadline) {
    refuse_if_broken();
    const auto start = deadline_clock::now();
    const waiting_on note(*this, wait_kind::collective, -1, 0);
    const auto wait = [&](MPI_Request& req, const char* what) {
      if (wait_one(req, deadline) == wait_status::ready) return;
      stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start), " for the other processes ",
                                  what, " before the run; every process must make the same calls on the pipeline"));
      ppipe::detail::fail(errc::timeout, describe_rank(rank_), " timed out comparing the pipeline with the other processes");
    };
    // The replicas first, with every field: what they find reaches the whole pipeline next, and
    // every pipeline holds one process of each replica group, so all processes end alike.
    detail::agreement_record record;
    if (!problem.empty()) record.problem = ppipe::detail::concat(describe_rank(rank_), " could not go on: ", problem);
    if (replica_count_ > 1) {
      record.fields = mine;
      record.problem = detail::compare_over(replicas_, record, [&](int k) { return describe_replica(k); }, wait);
      record.fields.clear();
    }
    for (const agreement_field& f : mine) {
      if (!f.per_rank) record.fields.push_back(f);
    }
    record.problem = detail::compare_over(comm_, record, [&](int q) { return describe_rank(q); }, wait);
    if (!record.problem.empty()) {
      ppipe::detail::fail(errc::invalid_argument, record.problem, "; every process must build the same pipeline (model, "
                          "schedule, split, m) and pass batches of the same shapes");
    }
  }

  /// @brief Pipeline rank `r` as messages name it: "rank 2", and where that is not the process's
  /// rank in MPI_COMM_WORLD, or with replicas, the process and the replica: "rank 1 of replica 2
  /// (process 5)".
  [[nodiscard]] std::string describe_rank(int r) const {
    const bool known = r >= 0 && static_cast<std::size_t>(r) < world_of_.size();
    const int world = known ? world_of_[static_cast<std::size_t>(r)] : r;
    if (replica_count_ > 1) return ppipe::detail::concat("rank ", r, " of replica ", replica_, " (process ", world, ")");
    if (world == r) return ppipe::detail::concat("rank ", r);
    return ppipe::detail::concat("rank ", r, " (process ", world, ")");
  }

 private:
  void refuse_if_broken() const {
    if (!broken_.empty()) {
      ppipe::detail::fail(errc::backend, "the MPI transport cannot run again after a timeout (", broken_,
                          "): a peer may still be stuck; end the job (MPI_Abort)");
    }
  }

  // With replicas: a communicator of every process of the job, replica after replica (process
  // k * size_ + r runs pipeline rank r of replica k), for inquiries after a timeout, which must
  // reach a dead process in another replica and another pipeline rank.
  void join_job() {
    const int n = size_ * replica_count_;
    std::vector<int> gathered(static_cast<std::size_t>(n));
    PPIPE_MPI_CHECK(MPI_Allgather(replica_world_of_.data(), replica_count_, MPI_INT, gathered.data(), replica_count_,
                                  MPI_INT, comm_));
    job_world_.assign(static_cast<std::size_t>(n), -1);
    for (int r = 0; r < size_; ++r) {
      for (int k = 0; k < replica_count_; ++k) {
        job_world_[static_cast<std::size_t>(k * size_ + r)] = gathered[static_cast<std::size_t>(r * replica_count_ + k)];
      }
    }
    MPI_Group world = MPI_GROUP_NULL;
    MPI_Group job = MPI_GROUP_NULL;
    PPIPE_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
    const int code = MPI_Group_incl(world, n, job_world_.data(), &job);
    MPI_Group_free(&world);
    PPIPE_MPI_CHECK(code);
    MPI_Comm c = MPI_COMM_NULL;
    const int created = MPI_Comm_create_group(MPI_COMM_WORLD, job, 0, &c);
    MPI_Group_free(&job);
    PPIPE_MPI_CHECK(created);
    job_ = detail::owned_comm(c);
    PPIPE_MPI_CHECK(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
    int me = -1;
    PPIPE_MPI_CHECK(MPI_Comm_rank(c, &me));
    if (me != inquiry_rank()) {
      ppipe::detail::fail(errc::invalid_argument, "the replica communicator numbers the replicas differently on "
                          "different pipeline ranks (process ", job_world_[static_cast<std::size_t>(inquiry_rank())],
                          " is ", me, " in the job); give every pipeline rank a replica communicator whose rank k "
                          "is replica k, as ppipe::mpi::replicated() does");
    }
  }

  // Where inquiries travel: the job's communicator with replicas, else the pipeline's; this
  // process's rank there, and how a rank there is named.
  [[nodiscard]] MPI_Comm inquiry_comm() const { return replica_count_ > 1 ? MPI_Comm(job_) : MPI_Comm(comm_); }
  [[nodiscard]] int inquiry_rank() const { return replica_count_ > 1 ? replica_ * size_ + rank_ : rank_; }
  [[nodiscard]] int inquiry_size() const { return size_ * replica_count_; }
  [[nodiscard]] std::string describe_process(int i) const {
    if (replica_count_ <= 1) return describe_rank(i);
    return ppipe::detail::concat("rank ", i % size_, " of replica ", i / size_, " (process ",
                                 job_world_[static_cast<std::size_t>(i)], ")");
  }

  // This process's pipeline rank in replica `k`, as messages name it.
  [[nodiscard]] std::string describe_replica(int k) const {
    const bool known = k >= 0 && static_cast<std::size_t>(k) < replica_world_of_.size();
    return ppipe::detail::concat("rank ", rank_, " of replica ", k, " (process ",
                                 known ? replica_world_of_[static_cast<std::size_t>(k)] : -1, ")");
  }

  // Tags: a payload's header and its tensors carry its sequence number (mod tag_range), so a
  // receive matches its own send whatever order receives complete in, and the run's number (mod
  // run_slots): a peer that has finished a failed run may already send the next run's payloads
  // while this rank still cancels the receives of the failed one, and those must not match. (A
  // peer is at most one run ahead: it cannot end a run without this rank's report of it.) The
  // reports have one tag of their own.
  // A payload sent in the agreed form (its values alone) has a tag range of its own: a receive
  // posted in one form never matches a send posted in the other.
  static constexpr int tag_range = 2048;
  static constexpr int run_slots = 4;
  static constexpr int tag_kinds = 3;  // header, separate values, agreed
  static constexpr int control_tag = tag_kinds * tag_range * run_slots;
  // After a timeout a rank asks the others what they wait for (see inquire()), and they answer.
  static constexpr int inquiry_tag = control_tag + 1;
  static constexpr int answer_tag = control_tag + 2;
  static constexpr std::byte inquiry_token{};  // what an inquiry sends (static: a send that never completes reads it)
  [[nodiscard]] int slot_base() const { return static_cast<int>(run_ % run_slots) * tag_kinds * tag_range; }
  [[nodiscard]] int header_tag(std::uint64_t seq) const { return slot_base() + static_cast<int>(seq % tag_range); }
  [[nodiscard]] int data_tag(std::uint64_t seq) const {
    return slot_base() + tag_range + static_cast<int>(seq % tag_range);
  }
  [[nodiscard]] int agreed_tag(std::uint64_t seq) const {
    return slot_base() + 2 * tag_range + static_cast<int>(seq % tag_range);
  }

  // A send or a receive in flight lives in a slot, and slots are reused: their buffers and request
  // lists keep their capacity, so a steady run allocates nothing per message.
  struct send_slot {
    bool busy = false;
    std::uint64_t ticket = 0;  // which use of the slot a handle is for
    MPI_Request request = MPI_REQUEST_NULL;  // the header (with the values when inline)
    std::vector<MPI_Request> values;  // one per tensor (separate layout)
    std::vector<std::byte> header;
    int to = -1;
    std::uint64_t sequence = 0;
  };
  // Which message a receive takes first: a header (described), the values alone (agreed), or, for
  // a payload a failed run never received, whichever of the two arrives (either).
  enum class recv_form : unsigned char { described, agreed, either };
  // A receive matches its message with MPI_Improbe and learns its size before it receives it
  // (MPI_Imrecv): a message longer than its buffer is refused, never written past it.
  struct recv_slot {
    bool busy = false;
    std::uint64_t ticket = 0;
    int from = -1;
    std::uint64_t sequence = 0;
    recv_form form = recv_form::described;
    MPI_Request request = MPI_REQUEST_NULL;  // the first message: the header, or the agreed values
    bool matched = false;     // the first message is matched and `request` receives it
    bool have_first = false;  // ... and it has arrived
    bool done = false;        // every message of the payload has arrived (or was refused)
    bool packed = false;      // agreed, several small tensors: the values arrive in `buffer`
    int count = 0;            // agreed: how many bytes the message must have
    std::vector<std::byte> buffer;   // a header (sized to it), or packed values, or what a drain throws away
    std::vector<MPI_Request> values;  // described, separate layout: the tensors matched so far
    std::size_t next_value = 0;       // ... and the next tensor to match
    std::string refused;              // why the payload is refused, thrown once it is all in
    payload into;
  };
  // MPI holds pointers into a slot's buffers and tensors while it is in flight, and the slot
  // vectors move their slots when they grow: only a move that cannot throw keeps those pointers.
  static_assert(std::is_nothrow_move_constructible_v<send_slot> && std::is_nothrow_move_constructible_v<recv_slot>);
  struct notice {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<std::byte> bytes;
  };

  template <class Slot>
  static std::uint32_t take_slot(std::vector<Slot>& slots, std::vector<std::uint32_t>& free) {
    std::uint32_t at = 0;
    if (free.empty()) {
      at = static_cast<std::uint32_t>(slots.size());
      slots.emplace_back();
    } else {
      at = free.back();
      free.pop_back();
    }
    slots[at].busy = true;
    ++slots[at].ticket;
    return at;
  }
  template <class Slot>
  static void release_slot(std::vector<Slot>& slots, std::vector<std::uint32_t>& free, std::uint32_t at) {
    slots[at].busy = false;
    free.push_back(at);
  }

  // A tensor's bytes, as the count of an MPI_BYTE message: bytes move whatever the dtype.
  static int count_of(const host_tensor& t) {
    if (t.bytes() > static_cast<std::size_t>(INT_MAX)) {
      ppipe::detail::fail(errc::unsupported, "a tensor of shape ", to_string(t.shape()), " has ", t.bytes(),
                          " bytes; the MPI transport sends at most ", INT_MAX, " per tensor: split it");
    }
    return static_cast<int>(t.bytes());
  }

  void check_pair(int self, int peer, const char* what) const {
    if (self != rank_ || peer < 0 || peer >= size_ || peer == self) {
      ppipe::detail::fail(errc::invalid_argument, "rank ", rank_, " (this process) cannot ", what, " between rank ",
                          self, " and rank ", peer, " of a ", size_, "-process pipeline; a process only transfers "
                          "its own rank's data, to another rank in 0..", size_ - 1);
    }
  }

  // A free receive slot, set up for payload `seq` from `from`, in form `form`; agreed, for
  // `count` bytes into `into`'s tensors. Nothing is posted yet: finish_recv() matches the message.
  std::uint32_t take_recv_slot(int from, std::uint64_t seq, recv_form form, payload into, int count) {
    const std::uint32_t at = take_slot(recvs_, free_recvs_);
    recv_slot& slot = recvs_[at];
    slot.from = from;
    slot.sequence = seq;
    slot.form = form;
    slot.matched = false;
    slot.have_first = false;
    slot.done = false;
    slot.packed = false;
    slot.count = count;
    slot.values.clear();
    slot.next_value = 0;
    slot.refused.clear();
    slot.into = std::move(into);
    return at;
  }

  // The values of a payload, as one count of bytes for a message (at most INT_MAX).
  static int bytes_count(const payload& p) {
    if (p.size() == 1) return count_of(p.front());
    const std::size_t n = bytes_of(p);
    if (n > static_cast<std::size_t>(INT_MAX)) {
      ppipe::detail::fail(errc::unsupported, "a payload of ", p.size(), " tensors has ", n, " bytes; the MPI "
                          "transport sends at most ", INT_MAX, " per payload: split it");
    }
    return static_cast<int>(n);
  }

  // An MPI datatype of the payload's values where they lie (absolute addresses, for MPI_BOTTOM),
  // tensor after tensor: one message moves them all without a copy. The caller frees it.
  static MPI_Datatype tensors_type(const payload& p) {
    std::vector<int> lengths;
    std::vector<MPI_Aint> where;
    for (const host_tensor& t : p) {
      if (t.size() == 0) continue;
      MPI_Aint address = 0;
      PPIPE_MPI_CHECK(MPI_Get_address(t.byte_data(), &address));
      lengths.push_back(count_of(t));
      where.push_back(address);
    }
    MPI_Datatype type = MPI_DATATYPE_NULL;
    PPIPE_MPI_CHECK(MPI_Type_create_hindexed(static_cast<int>(lengths.size()), lengths.data(), where.data(), MPI_BYTE,
                                             &type));
    PPIPE_MPI_CHECK(MPI_Type_commit(&type));
    return type;
  }

  // Matches the next message from `from` on `tag` if one has arrived, with its size in bytes.
  bool probe(int from, int tag, MPI_Message& msg, int& bytes) {
    int found = 0;
    MPI_Status status{};
    PPIPE_MPI_CHECK(MPI_Improbe(from, tag, comm_, &found, &msg, &status));
    if (found == 0) return false;
    PPIPE_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &bytes));
    return true;
  }

  // Receives a matched message into a buffer of its own size and throws it away.
  static void discard(MPI_Message& msg, int bytes, std::vector<std::byte>& scratch) {
    scratch.resize(static_cast<std::size_t>(std::max(bytes, 0)));
    PPIPE_MPI_CHECK(MPI_Mrecv(scratch.data(), bytes, MPI_BYTE, &msg, MPI_STATUS_IGNORE));
  }

  // Matches a receive's first message if it has arrived (a header, or agreed values, or for a
  // drain whichever came) and starts receiving it. True once it is matched.
  bool try_match(recv_slot& slot) {
    if (slot.matched) return true;
    MPI_Message msg = MPI_MESSAGE_NULL;
    int bytes = 0;
    if (slot.form != recv_form::agreed && probe(slot.from, header_tag(slot.sequence), msg, bytes)) {
      if (slot.form == recv_form::either) slot.form = recv_form::described;
    } else if (slot.form != recv_form::described && probe(slot.from, agreed_tag(slot.sequence), msg, bytes)) {
      if (slot.form == recv_form::either) {  // a drain's: any size, thrown away
        slot.form = recv_form::agreed;
        slot.count = -1;
      }
    } else {
      return false;
    }
    start_first(slot, msg, bytes);
    return true;
  }

  // Starts receiving a receive's first message, matched as `msg` of `bytes` bytes: a header into
  // the slot's buffer, or values into the tensors posted for them after checking their count. A
  // message of another count is taken in and thrown away, and the receive is refused when it is
  // completed (refuse()).
  void start_first(recv_slot& slot, MPI_Message& msg, int bytes) {
    slot.matched = true;
    if (slot.form == recv_form::described) {
      slot.buffer.resize(static_cast<std::size_t>(std::max(bytes, 0)));
      PPIPE_MPI_CHECK(MPI_Imrecv(slot.buffer.data(), bytes, MPI_BYTE, &msg, &slot.request));
      return;
    }
    if (slot.count < 0 || bytes != slot.count) {
      discard(msg, bytes, slot.buffer);
      slot.have_first = slot.done = true;
      if (slot.count < 0) return;
      refuse(slot, ppipe::detail::concat(
                       describe_rank(slot.from), " sent ", bytes, " bytes for ",
                       slot.into.size() == 1 ? ppipe::detail::concat("a tensor of shape ", to_string(slot.into.front().shape()))
                                             : ppipe::detail::concat("tensors of shapes ", to_string(shapes_of(slot.into))),
                       " (", slot.count, " bytes) that both ranks agreed on; every process of the job must run the "
                       "same program on the same batch"));
      return;
    }
    if (slot.into.size() == 1) {
      PPIPE_MPI_CHECK(MPI_Imrecv(slot.into.front().byte_data(), slot.count, MPI_BYTE, &msg, &slot.request));
    } else if (bytes_of(slot.into) <= options_.inline_bytes) {
      slot.packed = true;
      slot.buffer.resize(static_cast<std::size_t>(bytes));
      PPIPE_MPI_CHECK(MPI_Imrecv(slot.buffer.data(), slot.count, MPI_BYTE, &msg, &slot.request));
    } else {
      MPI_Datatype type = tensors_type(slot.into);
      const int code = MPI_Imrecv(MPI_BOTTOM, 1, type, &msg, &slot.request);
      MPI_Type_free(&type);  // the receive keeps what it needs
      PPIPE_MPI_CHECK(code);
    }
  }

  // Notes why a receive is refused (the first reason); finish_recv() throws it once the payload's
  // messages are all in.
  static void refuse(recv_slot& slot, std::string why) {
    if (slot.refused.empty()) slot.refused = std::move(why);
  }

  // The first message has arrived: agreed values are unpacked; a header is read into `into` (its
  // tensors kept when their shapes match), and says whether the values came with it.
  void take_first(recv_slot& slot, payload* given) {
    slot.have_first = true;
    if (slot.form == recv_form::agreed) {
      if (slot.packed) {
        const std::byte* next = slot.buffer.data();
        for (host_tensor& t : slot.into) {
          if (t.bytes() != 0) std::memcpy(t.byte_data(), next, t.bytes());
          next += t.bytes();
        }
      }
      slot.done = true;
      return;
    }
    if (given != nullptr) slot.into = std::move(*given);
    slot.done = true;  // unless values follow; a header that cannot be read leaves nothing to wait for
    const bool with_values = detail::read_header(slot.buffer.data(), slot.buffer.size(), slot.into);
    slot.done = false;
    slot.next_value = with_values ? slot.into.size() : 0;
  }

  // Drives one receive: it matches its first message (a header, or agreed values), receives it,
  // and for a described payload with separate values matches and receives each tensor's message,
  // checking its size against the header. A described payload arrives in `*given`'s tensors when
  // their shapes match (given may be null: new tensors). A refused payload is taken in whole
  // first, then refused with a throw (the slot is done).
  wait_status finish_recv(std::uint32_t at, payload* given, deadline_clock::time_point deadline, bool watch) {
    recv_slot& slot = recvs_[at];
    if (!slot.done) {
      const wait_status st = drive_recv(slot, given, deadline, watch);
      if (st != wait_status::ready) return st;
    }
    if (!slot.refused.empty()) ppipe::detail::fail(errc::backend, slot.refused);
    return wait_status::ready;
  }

  wait_status drive_recv(recv_slot& slot, payload* given, deadline_clock::time_point deadline, bool watch) {
    if (!slot.matched) {
      const wait_status st = poll(deadline, watch, [&] { return try_match(slot); });
      if (st != wait_status::ready) return st;
    }
    if (!slot.have_first) {
      const wait_status st = wait_one(slot.request, deadline, watch);
      if (st != wait_status::ready) return st;
      take_first(slot, given);
    }
    if (slot.done) return wait_status::ready;
    // The tensors' messages share a tag, and MPI keeps one sender's messages in order. After a
    // refusal the rest are taken in and thrown away, so that none is left to match.
    while (slot.next_value < slot.into.size()) {
      host_tensor& t = slot.into[slot.next_value];
      if (t.size() == 0) {
        ++slot.next_value;
        continue;
      }
      MPI_Message msg = MPI_MESSAGE_NULL;
      int bytes = 0;
      const wait_status st = poll(deadline, watch, [&] { return probe(slot.from, data_tag(slot.sequence), msg, bytes); });
      if (st != wait_status::ready) return st;
      if (!slot.refused.empty() || static_cast<std::size_t>(bytes) != t.bytes()) {
        refuse(slot, ppipe::detail::concat(describe_rank(slot.from), " sent ", bytes, " bytes for tensor ",
                                           slot.next_value, " of a payload whose header gives it shape ",
                                           to_string(t.shape()), " (", t.bytes(), " bytes); every process of the job "
                                           "must run the same build of the program"));
        discard(msg, bytes, slot.buffer);
      } else {
        slot.values.push_back(MPI_REQUEST_NULL);
        PPIPE_MPI_CHECK(MPI_Imrecv(t.byte_data(), count_of(t), MPI_BYTE, &msg, &slot.values.back()));
      }
      ++slot.next_value;
    }
    const wait_status st = wait_all(slot.values, deadline, watch);
    if (st == wait_status::ready) slot.done = true;
    return st;
  }

  // Matches every posted receive whose message has arrived, so that its data moves while this
  // rank waits for something else (MPI moves data only inside its calls).
  void match_arrived() {
    for (recv_slot& slot : recvs_) {
      if (slot.busy && !slot.matched) (void)try_match(slot);
    }
  }

  wait_status wait_send(send_slot& slot, deadline_clock::time_point deadline, bool watch) {
    const wait_status st = wait_one(slot.request, deadline, watch);
    return st == wait_status::ready ? wait_all(slot.values, deadline, watch) : st;
  }

  wait_status wait_one(MPI_Request& req, deadline_clock::time_point deadline, bool watch = false,
                       MPI_Status* status = nullptr) {
    return poll(deadline, watch, [&] {
      int done = 0;
      PPIPE_MPI_CHECK(MPI_Test(&req, &done, status != nullptr ? status : MPI_STATUS_IGNORE));
      return done != 0;
    });
  }

  wait_status wait_all(std::vector<MPI_Request>& reqs, deadline_clock::time_point deadline, bool watch) {
    if (reqs.empty()) return wait_status::ready;
    return poll(deadline, watch, [&] {
      int done = 0;
      PPIPE_MPI_CHECK(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE));
      return done != 0;
    });
  }

  // Polls `done` until it says true or the deadline passes; with `watch`, a failure reported by
  // another rank (or abort()) ends the wait with aborted. A small message takes a fraction of a
  // microsecond, a few polls, and anything else done meanwhile adds to its latency: the clock and
  // the other ranks' reports are looked at on every 16th poll only. A deadline that had passed by
  // the last look at the clock (already_passed, say) ends the wait after one poll.
  template <class Done>
  wait_status poll(deadline_clock::time_point deadline, bool watch, Done&& done) {
    if (done()) return wait_status::ready;
    if (deadline <= clock_) {
      match_arrived();  // a check that does not wait still lets arrived payloads start moving
      return wait_status::timed_out;
    }
    deadline_clock::time_point start{};
    bool patient = false;  // has spun for options_.spin: yields the core between polls
    for (std::uint64_t i = 1;; ++i) {
      if (done()) return wait_status::ready;
      if (watch && aborted_) return wait_status::aborted;
      if (patient) std::this_thread::yield();
      if ((i & 15U) != 0) continue;
      if (watch && failure_reported()) return wait_status::aborted;
      answer_inquiries();
      match_arrived();
      clock_ = deadline_clock::now();
      if (clock_ >= deadline) return wait_status::timed_out;
      if (i == 16) start = clock_;
      patient = clock_ - start > options_.spin;
    }
  }

  // Takes in every report that has arrived; true once one says its rank failed.
  bool failure_reported() {
    while (take_report(MPI_ANY_SOURCE)) {
    }
    return remote_failure_;
  }

  bool receive_report(int from, deadline_clock::time_point deadline) {
    return poll(deadline, false, [&] { return take_report(from); }) == wait_status::ready;
  }

  // Takes in one report from `source` (or any rank) if one has arrived; false if none has.
  bool take_report(int source) {
    int flag = 0;
    MPI_Message msg = MPI_MESSAGE_NULL;
    MPI_Status status{};
    PPIPE_MPI_CHECK(MPI_Improbe(source, control_tag, comm_, &flag, &msg, &status));
    if (flag == 0) return false;
    int bytes = 0;
    PPIPE_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &bytes));
    std::vector<std::byte> buf(static_cast<std::size_t>(std::max(bytes, 0)));
    PPIPE_MPI_CHECK(MPI_Mrecv(buf.data(), bytes, MPI_BYTE, &msg, MPI_STATUS_IGNORE));
    detail::wire_report w = detail::read_report(buf.data(), buf.size());
    const int from = status.MPI_SOURCE;
    if (w.run != run_) {
      ppipe::detail::fail(errc::backend, describe_rank(rank_), " got ", describe_rank(from), "'s report of run ", w.run, " during run ",
                          run_, "; every process must make the same calls on the pipeline, in the same order");
    }
    if (w.report.what == rank_outcome::outcome::failed) remote_failure_ = true;
    reports_[static_cast<std::size_t>(from)] = std::move(w);
    return true;
  }

  // After a failed run: takes in every payload a peer sent to this rank (into nothing; what it
  // had posted, or not) and lets go of every receive nobody will send to (nothing was posted for
  // it: a receive matches its message only when it waits), then waits for this rank's own sends,
  // which the peers take in the same way. Afterwards nothing of the run is in flight.
  std::optional<run_verdict> drain(deadline_clock::time_point deadline) {
    const auto start = deadline_clock::now();
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const std::uint64_t sent = reports_[static_cast<std::size_t>(q)]->sent_to_you;
      for (std::uint64_t seq = posted_[static_cast<std::size_t>(q)]; seq < sent; ++seq) {
        (void)take_recv_slot(q, seq, recv_form::either, {}, 0);
      }
      posted_[static_cast<std::size_t>(q)] = std::max(posted_[static_cast<std::size_t>(q)], sent);
      for (std::uint32_t at = 0; at < recvs_.size(); ++at) {
        recv_slot& slot = recvs_[at];
        if (!slot.busy || slot.from != q) continue;
        if (slot.sequence < sent) {
          const waiting_on note(*this, wait_kind::payload_from, q, slot.sequence);
          wait_status st = wait_status::ready;
          try {
            st = finish_recv(at, nullptr, deadline, false);
          } catch (const ppipe::error&) {
            if (!slot.done) throw;  // a refused payload of the failed run is taken in all the same
          }
          if (st != wait_status::ready) {
            return stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start), " for payload ",
                                               slot.sequence, " that ", describe_rank(q), " sent in the failed run"));
          }
        }
        slot.into.clear();
        release_slot(recvs_, free_recvs_, at);
      }
    }
    for (std::uint32_t at = 0; at < sends_.size(); ++at) {
      if (!sends_[at].busy) continue;
      const waiting_on note(*this, wait_kind::send_to, sends_[at].to, sends_[at].sequence);
      if (wait_send(sends_[at], deadline, false) != wait_status::ready) {
        return stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start), " for ",
                                           describe_rank(sends_[at].to), " to take the payloads it sent in the failed run"));
      }
      release_slot(sends_, free_sends_, at);
    }
    return std::nullopt;
  }

  // Every replica learns whether the others' runs failed: a replica that succeeded while another
  // failed must not go on to the gradient all-reduce, which the failed one will not join.
  run_verdict agree_with_replicas(run_verdict verdict, deadline_clock::time_point deadline) {
    if (replica_count_ <= 1) return verdict;
    const auto start = deadline_clock::now();
    constexpr std::size_t record = 1024;
    std::vector<std::byte> mine(record);
    std::vector<std::byte> all(record * static_cast<std::size_t>(replica_count_));
    {
      std::vector<std::byte> packed;
      detail::byte_writer w(packed);
      w.put(static_cast<std::int32_t>(verdict.ok ? 1 : 0));
      w.put(static_cast<std::int32_t>(verdict.code));
      w.put(static_cast<std::int32_t>(verdict.rank));
      const std::string_view text = std::string_view(verdict.message).substr(0, record - 32);
      w.text(text);
      std::copy(packed.begin(), packed.end(), mine.begin());
    }
    const waiting_on note(*this, wait_kind::replicas, -1, 0);
    MPI_Request req = MPI_REQUEST_NULL;
    PPIPE_MPI_CHECK(MPI_Iallgather(mine.data(), static_cast<int>(record), MPI_BYTE, all.data(), static_cast<int>(record),
                                   MPI_BYTE, replicas_, &req));
    if (wait_one(req, deadline) != wait_status::ready) {
      return stuck(ppipe::detail::concat(describe_rank(rank_), " waited ", waited_ms(start),
                                         " for the other replicas to report how their run ended"));
    }
    if (!verdict.ok) return verdict;
    for (int k = 0; k < replica_count_; ++k) {
      detail::byte_reader r(all.data() + record * static_cast<std::size_t>(k), record, "replica verdict");
      const bool ok = r.get<std::int32_t>() != 0;
      const auto code = r.get<std::int32_t>();
      const auto rank = r.get<std::int32_t>();
      std::string text = r.text();
      if (ok) continue;
      return {false, rank, detail::errc_from_wire(code),
              ppipe::detail::concat("replica ", k, " of ", replica_count_, " failed its step, so this replica does not "
                                    "apply it either: ", text)};
    }
    return verdict;
  }

  // A wait ran past its deadline: the peer may be stuck, so the job cannot go on (see
  // timeout_policy). Returns the verdict to throw when the policy is throw_error.
  run_verdict stuck(const std::string& said) {
    const std::string message = said + inquire();
    broken_ = message;
    if (options_.on_timeout == timeout_policy::abort_job) {
      const std::string me = describe_rank(rank_);
      std::fprintf(stderr,
                   "ppipe: %s: [ppipe.timeout] %s\n"
                   "ppipe: %s is aborting the job with MPI_Abort(%d): a peer that does not answer cannot be "
                   "waited for (set mpi::transport_options::on_timeout to throw_error to get a ppipe::error "
                   "instead)\n",
                   me.c_str(), message.c_str(), me.c_str(), options_.abort_code);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, options_.abort_code);
    }
    return {false, rank_, errc::timeout, message};
  }

  // What this rank waits for, for its answer when another rank inquires (see inquire()).
  enum class wait_kind : unsigned char {
    none, payload_from, send_to, report_from, broadcast_from, collective, replicas, inquiring
  };
  struct wait_state {
    wait_kind kind = wait_kind::none;
    int peer = -1;
    std::uint64_t number = 0;  // for a payload: its sequence number
  };
  // Notes a wait for as long as it lasts; a wait inside another (a drain in conclude) restores it.
  class waiting_on {
   public:
    waiting_on(transport& t, wait_kind kind, int peer, std::uint64_t number)
        : t_(&t), before_(std::exchange(t.waiting_, wait_state{kind, peer, number})) {}
    waiting_on(const waiting_on&) = delete;
    waiting_on& operator=(const waiting_on&) = delete;
    ~waiting_on() { t_->waiting_ = before_; }

   private:
    transport* t_;
    wait_state before_;
  };

  // "waiting for payload 3 from rank 2", for an answer.
  [[nodiscard]] std::string describe_wait() const {
    const wait_state& w = waiting_;
    switch (w.kind) {
      case wait_kind::payload_from:
        return ppipe::detail::concat("waiting for payload ", w.number, " from ", describe_rank(w.peer));
      case wait_kind::send_to:
        return ppipe::detail::concat("waiting for ", describe_rank(w.peer), " to take payload ", w.number);
      case wait_kind::report_from:
        return ppipe::detail::concat("done with its part of the run, waiting for ", describe_rank(w.peer),
                                     "'s end-of-run report");
      case wait_kind::broadcast_from:
        return ppipe::detail::concat("waiting for ", describe_rank(w.peer), " to broadcast the run's results");
      case wait_kind::collective: return "waiting for every rank of the pipeline";
      case wait_kind::replicas: return "waiting for the other replicas";
      case wait_kind::inquiring: return "timed out too, and asking the others what they wait for";
      case wait_kind::none: break;
    }
    return "answering from inside ppipe";
  }

  // Answers every inquiry that has arrived with what this rank waits for. Called while it polls,
  // so a rank answers as long as it is inside one of ppipe's waits.
  void answer_inquiries() {
    const MPI_Comm c = inquiry_comm();
    for (;;) {
      int found = 0;
      MPI_Message msg = MPI_MESSAGE_NULL;
      MPI_Status status{};
      if (MPI_Improbe(MPI_ANY_SOURCE, inquiry_tag, c, &found, &msg, &status) != MPI_SUCCESS || found == 0) break;
      std::byte token{};
      MPI_Mrecv(&token, 1, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
      inquirers_.resize(static_cast<std::size_t>(inquiry_size()));
      if (status.MPI_SOURCE >= 0 && status.MPI_SOURCE < inquiry_size()) inquirers_[static_cast<std::size_t>(status.MPI_SOURCE)] = true;
      notice& n = answers_.emplace_back();
      const std::string text = ppipe::detail::concat(describe_rank(rank_), " is ", describe_wait());
      const auto* begin = reinterpret_cast<const std::byte*>(text.data());
      n.bytes.assign(begin, begin + text.size());
      if (MPI_Isend(n.bytes.data(), static_cast<int>(n.bytes.size()), MPI_BYTE, status.MPI_SOURCE, answer_tag, c,
                    &n.request) != MPI_SUCCESS) {
        answers_.pop_back();
      }
    }
    // Answers that have left are let go (a dead inquirer's never are; they are few).
    std::erase_if(answers_, [](notice& n) {
      int done = 0;
      return MPI_Test(&n.request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done != 0;
    });
  }

  // After a timeout: asks every other process of the job (every rank of the pipeline, of every
  // replica) what it is waiting for, and gives them options_.inquiry to answer. A live rank inside
  // a ppipe wait answers; one that has died, or is stuck in a kernel or outside the pipeline, does
  // not. Returns the lines to add to the message, those that did not answer first: that is where to
  // look, whichever neighbour this rank waited for.
  std::string inquire() {
    const int n = inquiry_size();
    if (options_.inquiry.count() <= 0 || n <= 1) return {};
    const waiting_on note(*this, wait_kind::inquiring, -1, 0);
    const MPI_Comm c = inquiry_comm();
    const int me = inquiry_rank();
    // Sends that are never completed: a dead peer never takes them, and the job ends after this.
    for (int q = 0; q < n; ++q) {
      MPI_Request req = MPI_REQUEST_NULL;
      if (q != me && MPI_Isend(&inquiry_token, 1, MPI_BYTE, q, inquiry_tag, c, &req) == MPI_SUCCESS) {
        MPI_Request_free(&req);
      }
    }
    std::vector<std::string> said(static_cast<std::size_t>(n));
    int left = n - 1;
    const auto until = deadline_clock::now() + options_.inquiry;
    while (left > 0 && deadline_clock::now() < until) {
      answer_inquiries();
      int found = 0;
      MPI_Message msg = MPI_MESSAGE_NULL;
      MPI_Status status{};
      if (MPI_Improbe(MPI_ANY_SOURCE, answer_tag, c, &found, &msg, &status) != MPI_SUCCESS || found == 0) {
        std::this_thread::yield();
        continue;
      }
      int bytes = 0;
      MPI_Get_count(&status, MPI_BYTE, &bytes);
      std::string text(static_cast<std::size_t>(std::max(bytes, 0)), '\0');
      MPI_Mrecv(text.data(), bytes, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
      std::string& slot = said[static_cast<std::size_t>(status.MPI_SOURCE)];
      if (slot.empty()) --left;
      slot = text.empty() ? describe_process(status.MPI_SOURCE) + " answered" : std::move(text);
    }
    std::string silent;
    std::string answered;
    for (int q = 0; q < n; ++q) {
      if (q == me) continue;
      const std::string& text = said[static_cast<std::size_t>(q)];
      const bool asked = static_cast<std::size_t>(q) < inquirers_.size() && inquirers_[static_cast<std::size_t>(q)];
      if (text.empty() && asked) {
        // It asked this rank first: it timed out too, and is reporting or ending the job.
        answered += ppipe::detail::concat("\n  ", describe_process(q), " timed out too, and did not answer after it asked");
      } else if (text.empty()) {
        silent += ppipe::detail::concat("\n  ", describe_process(q), " does not answer (asked for ",
                                        options_.inquiry.count(), " ms): it has died, or is stuck outside ppipe (in a "
                                        "kernel, or not calling the pipeline); look there first");
      } else {
        answered += "\n  " + text;
      }
    }
    return silent + answered;
  }

  // "500 ms": how long a wait that began at `start` has waited.
  static std::string waited_ms(deadline_clock::time_point start) {
    return ppipe::detail::concat(std::chrono::duration_cast<std::chrono::milliseconds>(deadline_clock::now() - start).count(),
                                 " ms");
  }

  detail::owned_comm comm_;
  detail::owned_comm replicas_;  // or none (one replica)
  std::vector<int> world_of_;          // per pipeline rank: its process's rank in MPI_COMM_WORLD
  std::vector<int> replica_world_of_;  // per replica: the MPI_COMM_WORLD rank running this pipeline rank
  detail::owned_comm job_;             // with replicas: every process of the job (see join_job())
  std::vector<int> job_world_;         // ... and their ranks in MPI_COMM_WORLD
  int rank_ = 0;
  int size_ = 0;
  int replica_ = 0;
  int replica_count_ = 1;
  transport_options options_;
  std::vector<std::uint64_t> sent_;    // per peer: payloads sent to it this run
  std::vector<std::uint64_t> posted_;  // per peer: receives posted from it this run
  std::vector<send_slot> sends_;  // sends in flight, and free slots
  std::vector<std::uint32_t> free_sends_;
  std::vector<recv_slot> recvs_;  // receives in flight, and free slots
  std::vector<std::uint32_t> free_recvs_;
  std::vector<notice> notices_;  // this run's end-of-run reports to the other ranks
  std::vector<notice> answers_;  // answers to other ranks' inquiries, until they have left
  std::vector<bool> inquirers_;  // the processes that asked this rank what it waits for
  wait_state waiting_;           // what this rank waits for now
  std::vector<std::optional<detail::wire_report>> reports_;  // per peer: its report of this run
  std::uint64_t run_ = 0;
  bool aborted_ = false;
  bool remote_failure_ = false;
  std::string broken_;  // why the transport cannot run again (a timeout), or empty
  deadline_clock::time_point clock_{};  // the last time a wait read the clock
};

static_assert(distributed_transport<transport>);
static_assert(ppipe::fills_given_buffers<transport>);
static_assert(ppipe::agrees_shapes<transport>);

}  // namespace ppipe::mpi
