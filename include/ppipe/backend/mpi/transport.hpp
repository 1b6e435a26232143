#pragma once
/// @file
/// @brief ppipe::mpi::transport: pipeline ranks as MPI processes, payloads over non-blocking
/// point-to-point messages, and the end of a run (every rank's report, a failed run's drain).

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
#include "ppipe/backend/mpi/collectives.hpp"
#include "ppipe/backend/mpi/error.hpp"
#include "ppipe/backend/mpi/message.hpp"
#include "ppipe/backend/mpi/options.hpp"
#include "ppipe/backend/mpi/roster.hpp"
#include "ppipe/backend/mpi/tags.hpp"
#include "ppipe/backend/mpi/timeout.hpp"
#include "ppipe/error.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe::mpi {

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
  using tensor_type = host_tensor;  ///< Payloads are host tensors.

  /// @brief Handle of a posted send: its slot, and which use of the slot it is.
  struct send_handle {
    std::uint32_t slot = 0;    ///< the send slot the send lives in
    std::uint64_t ticket = 0;  ///< which use of the slot this send is
  };
  /// @brief Handle of a posted receive: the channel, its sequence number, and its slot.
  struct recv_handle {
    int from = -1;               ///< the pipeline rank the payload comes from
    std::uint64_t sequence = 0;  ///< its position among this run's receives from `from`
    std::uint32_t slot = 0;      ///< the receive slot it lives in
  };

  /// complete_recv() writes into the tensors of the payload it is given when their shapes are
  /// those that arrive (and replaces them otherwise), so the executor hands it buffers from the
  /// receiving stage's pool instead of letting every receive allocate.
  static constexpr bool fills_given_buffers = true;

  /// @param pipeline the processes of one pipeline, rank r running pipeline rank r (duplicated)
  /// @param replicas the processes running this pipeline rank in every replica, or MPI_COMM_NULL
  /// when there is one replica (duplicated). Collective over both communicators.
  /// @param options how payloads are sent and what a timeout does
  /// @throws ppipe::error (errc::backend) when an MPI call fails; (errc::unsupported) when the MPI
  /// allows fewer tags than the transport uses
  explicit transport(MPI_Comm pipeline, MPI_Comm replicas = MPI_COMM_NULL, transport_options options = {})
      : who_(pipeline, replicas), options_(options) {
    int* tag_ub = nullptr;
    int flag = 0;
    PPIPE_MPI_CHECK(MPI_Comm_get_attr(communicator(), MPI_TAG_UB, &tag_ub, &flag));
    if (flag != 0 && tag_ub != nullptr && *tag_ub < detail::answer_tag) {
      ppipe::detail::fail(errc::unsupported, "this MPI allows tags up to ", *tag_ub, ", but ppipe's MPI transport "
                          "uses tags up to ", detail::answer_tag, " (the standard guarantees 32767)");
    }
    sent_.assign(static_cast<std::size_t>(num_ranks()), 0);
    posted_.assign(static_cast<std::size_t>(num_ranks()), 0);
    reports_.assign(static_cast<std::size_t>(num_ranks()), std::nullopt);
  }

  /// @brief Takes over another transport's communicators and state; do not move one while a
  /// message is in flight (MPI holds pointers into its slots).
  transport(transport&&) noexcept = default;
  /// @brief Takes over another transport's communicators and state (see the move constructor).
  /// @return this transport
  transport& operator=(transport&&) noexcept = default;
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;
  ~transport() = default;

  /// @brief The number of pipeline ranks: the size of the pipeline's communicator.
  /// @return the rank count
  [[nodiscard]] int num_ranks() const noexcept { return who_.size(); }
  /// @brief The pipeline rank this process runs: its rank in the pipeline's communicator.
  /// @return the rank, in 0..num_ranks() - 1
  [[nodiscard]] int rank() const noexcept { return who_.rank(); }
  /// @brief How many replicas of the pipeline the job runs (1 without a replica communicator).
  /// @return the replica count
  [[nodiscard]] int replicas() const noexcept { return who_.replica_count(); }
  /// @brief Which replica this process belongs to (its rank in the replica communicator).
  /// @return the replica, in 0..replicas() - 1
  [[nodiscard]] int replica() const noexcept { return who_.replica(); }
  /// @brief The pipeline's communicator (ppipe's duplicate of it).
  /// @return the duplicate, owned by the transport
  [[nodiscard]] MPI_Comm communicator() const noexcept { return who_.pipeline(); }
  /// @brief The options the transport was built with.
  /// @return them, unchanged
  [[nodiscard]] const transport_options& options() const noexcept { return options_; }

  /// @brief Starts sending `data` to rank `to` with a header of its shapes, so the receiver needs
  /// to know nothing ahead. Up to transport_options::inline_bytes the values travel in the header's
  /// message (copied); larger tensors follow it, one message each, from their own memory. Waits
  /// for nothing: complete_send() does.
  /// @param from the sending rank: this process's
  /// @param to the receiving rank, another one of the pipeline
  /// @param data the payload; its tensors must stay alive and unchanged until complete_send()
  /// @return the handle complete_send() takes
  /// @throws ppipe::error (errc::invalid_argument) when `from` is not this rank or `to` is not
  /// another rank; (errc::unsupported) for a tensor over INT_MAX bytes; (errc::backend) when MPI
  /// fails
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
    PPIPE_MPI_CHECK(MPI_Isend(slot.header.data(), static_cast<int>(slot.header.size()), MPI_BYTE, to,
                              detail::header_tag(run_, seq), communicator(), &slot.request));
    if (!with_values) {
      for (const host_tensor& t : data) {
        if (t.size() == 0) continue;
        slot.values.push_back(MPI_REQUEST_NULL);
        PPIPE_MPI_CHECK(MPI_Isend(t.byte_data(), count_of(t), MPI_BYTE, to, detail::data_tag(run_, seq), communicator(),
                                  &slot.values.back()));
      }
    }
    return send_handle{at, slot.ticket};
  }

  /// @brief Sends `data` to a receive posted with agreed_shapes and buffers of `data`'s shapes
  /// (see ppipe::agrees_shapes), as one message of its values and nothing else. One tensor goes
  /// from its own memory, as MPI_Isend of the tensor would. Several go back to back: copied
  /// through the slot's buffer when they add up to at most transport_options::inline_bytes, and
  /// otherwise straight from their memory, described to MPI by a datatype of their addresses.
  /// Waits for nothing: complete_send() does.
  /// @param from the sending rank: this process's
  /// @param to the receiving rank, another one of the pipeline
  /// @param data the payload; its tensors must stay alive and unchanged until complete_send()
  /// @return the handle complete_send() takes
  /// @throws ppipe::error as the described post_send() does, and (errc::unsupported) for a payload
  /// over INT_MAX bytes in all
  send_handle post_send(int from, int to, const payload& data, agreed_shapes_t /*agreed*/) {
    check_pair(from, to, "send");
    const int count = bytes_count(data);
    const std::uint64_t seq = sent_[static_cast<std::size_t>(to)];
    const std::uint32_t at = take_slot(sends_, free_sends_);
    send_slot& slot = sends_[at];
    slot.to = to;
    slot.sequence = seq;
    slot.values.clear();
    const int tag = detail::agreed_tag(run_, seq);
    const std::size_t bytes = bytes_of(data);
    if (data.size() == 1) {
      PPIPE_MPI_CHECK(MPI_Isend(data.front().byte_data(), count, MPI_BYTE, to, tag, communicator(), &slot.request));
    } else if (bytes <= options_.inline_bytes) {
      slot.header.resize(bytes);
      std::byte* next = slot.header.data();
      for (const host_tensor& t : data) {
        if (t.bytes() != 0) std::memcpy(next, t.byte_data(), t.bytes());
        next += t.bytes();
      }
      PPIPE_MPI_CHECK(MPI_Isend(slot.header.data(), count, MPI_BYTE, to, tag, communicator(), &slot.request));
    } else {
      MPI_Datatype type = tensors_type(data);
      const int code = MPI_Isend(MPI_BOTTOM, 1, type, to, tag, communicator(), &slot.request);
      MPI_Type_free(&type);  // the send keeps what it needs
      PPIPE_MPI_CHECK(code);
    }
    ++sent_[static_cast<std::size_t>(to)];
    return send_handle{at, slot.ticket};
  }

  /// @brief Claims the next payload `from` sends to this rank, in the described form (a header
  /// of shapes first). Posts nothing and waits for nothing: complete_recv() matches the message.
  /// @param from the sending rank, another one of the pipeline
  /// @param to the receiving rank: this process's
  /// @return the handle complete_recv() takes
  /// @throws ppipe::error (errc::invalid_argument) when `to` is not this rank or `from` is not
  /// another rank
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
  /// Posts nothing and waits for nothing: complete_recv() matches the message.
  /// @param from the sending rank, another one of the pipeline
  /// @param to the receiving rank: this process's
  /// @param buffers tensors of the shapes the sender's payload has, which the values land in
  /// @return the handle complete_recv() takes
  /// @throws ppipe::error (errc::invalid_argument) for a pair of ranks post_recv(int, int) refuses;
  /// (errc::unsupported) when `buffers` hold over INT_MAX bytes
  recv_handle post_recv(int from, int to, agreed_shapes_t /*agreed*/, payload buffers) {
    check_pair(to, from, "receive");
    const int count = bytes_count(buffers);
    const std::uint64_t seq = posted_[static_cast<std::size_t>(from)]++;
    return recv_handle{from, seq, take_recv_slot(from, seq, recv_form::agreed, std::move(buffers), count)};
  }

  /// @brief Waits for the claimed payload and delivers it in `into`: into the tensors `into`
  /// already holds when their shapes are those that arrived (no allocation), into new ones
  /// otherwise. Returns aborted when another rank reports a failure first.
  /// @param h the handle post_recv() returned; each is completed once (again after aborted or
  /// timed_out, by conclude()'s drain)
  /// @param into where the payload goes: its tensors are reused when their shapes match
  /// @param deadline when the wait gives up
  /// @return ready once the whole payload has arrived; aborted when abort() was called or another
  /// rank reported a failure; timed_out when `deadline` passed first
  /// @throws ppipe::error (errc::invalid_argument) for a handle with no pending receive;
  /// (errc::backend) for a payload of other sizes than expected (once it is all in) or when MPI
  /// fails
  wait_status complete_recv(recv_handle& h, payload& into, deadline_clock::time_point deadline) {
    if (h.slot >= recvs_.size() || !recvs_[h.slot].busy || recvs_[h.slot].from != h.from ||
        recvs_[h.slot].sequence != h.sequence) {
      ppipe::detail::fail(errc::invalid_argument, "no pending receive from rank ", h.from, " with sequence number ",
                          h.sequence, "; complete each posted receive once");
    }
    const detail::waiting_on note(timeouts_, detail::wait_kind::payload_from, h.from, h.sequence);
    const wait_status st = finish_recv(h.slot, &into, deadline, true);
    if (st == wait_status::ready) {
      into = std::move(recvs_[h.slot].into);
      release_slot(recvs_, free_recvs_, h.slot);
    }
    return st;
  }

  /// @brief Waits until every message of the send has left this rank's buffers (under the
  /// buffered model its receive need not be posted); then its tensors are free.
  /// @param h the handle post_send() returned; one already completed is ready at once
  /// @param deadline when the wait gives up
  /// @return ready once the send is complete; aborted when abort() was called or another rank
  /// reported a failure; timed_out when `deadline` passed first
  /// @throws ppipe::error (errc::backend) when MPI fails
  wait_status complete_send(send_handle& h, deadline_clock::time_point deadline) {
    if (h.slot >= sends_.size() || !sends_[h.slot].busy || sends_[h.slot].ticket != h.ticket) return wait_status::ready;
    const detail::waiting_on note(timeouts_, detail::wait_kind::send_to, sends_[h.slot].to, sends_[h.slot].sequence);
    const wait_status st = wait_send(sends_[h.slot], deadline, true);
    if (st == wait_status::ready) release_slot(sends_, free_sends_, h.slot);
    return st;
  }

  /// @brief Makes the next wait return aborted (a failure in this process).
  void abort() { aborted_ = true; }

  /// @brief Takes in the end-of-run reports that have arrived, without waiting.
  /// @return whether one says that its rank failed in this run
  bool peer_failed() { return failure_reported(); }

  /// @brief Readies the transport for the next run. Every run ends in conclude(), which leaves no
  /// message in flight, so only the counters start again.
  void reset() {
    timeouts_.refuse_if_broken();
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
  /// @param mine how this rank's part of the run ended
  /// @param deadline when each wait (the reports, the drain, the replicas' agreement) gives up
  /// @return the run's verdict: ok, or the failure of the lowest failed rank. When a wait runs past
  /// `deadline`, or this or another rank timed out, the job cannot go on: with
  /// timeout_policy::abort_job the job is aborted; with throw_error the verdict names the timeout
  /// (errc::timeout) and later runs are refused
  /// @throws ppipe::error (errc::backend) when MPI fails, or when a report is of another run (the
  /// processes did not make the same calls)
  run_verdict conclude(const rank_outcome& mine, deadline_clock::time_point deadline) {
    const auto start = deadline_clock::now();
    // Kept by the transport: a report may still be on its way when a timeout returns early.
    std::vector<notice>& notices = notices_;
    notices.clear();
    notices.reserve(static_cast<std::size_t>(num_ranks()));
    for (int q = 0; q < num_ranks(); ++q) {
      if (q == rank()) continue;
      notice& n = notices.emplace_back();
      n.bytes = detail::write_report({mine, run_, sent_[static_cast<std::size_t>(q)]});
      PPIPE_MPI_CHECK(MPI_Isend(n.bytes.data(), static_cast<int>(n.bytes.size()), MPI_BYTE, q, detail::control_tag,
                                communicator(), &n.request));
    }
    const bool i_timed_out = mine.what == rank_outcome::outcome::failed && mine.code == errc::timeout;
    if (i_timed_out) return stuck(mine.message);

    run_verdict verdict;
    if (mine.what == rank_outcome::outcome::failed) verdict = {false, rank(), mine.code, mine.message};
    for (int q = 0; q < num_ranks(); ++q) {
      if (q == rank() || reports_[static_cast<std::size_t>(q)]) continue;
      const detail::waiting_on note(timeouts_, detail::wait_kind::report_from, q, 0);
      if (!receive_report(q, deadline)) {
        return stuck(ppipe::detail::concat(describe_rank(rank()), " ended its part of the run and waited ",
                                           detail::waited_ms(start), " for ", describe_rank(q),
                                           " to report how its part ended"));
      }
    }
    for (int q = 0; q < num_ranks(); ++q) {
      const auto& r = reports_[static_cast<std::size_t>(q)];
      if (q == rank() || !r || r->report.what != rank_outcome::outcome::failed) continue;
      if (r->report.code == errc::timeout) {
        // Its process aborts the job (or throws) without draining: nothing here can drain either.
        return stuck(ppipe::detail::concat(describe_rank(q), " timed out: ", r->report.message));
      }
      if (verdict.ok || q < verdict.rank) verdict = {false, q, r->report.code, r->report.message};
    }
    if (!verdict.ok) {
      if (std::optional<run_verdict> failed = drain(deadline)) return *std::move(failed);
    }
    const detail::waiting_on note(timeouts_, detail::wait_kind::collective, -1, 0);
    for (notice& n : notices) {
      if (wait_one(n.request, deadline) != wait_status::ready) {
        return stuck(ppipe::detail::concat(describe_rank(rank()), " waited ", detail::waited_ms(start),
                                           " for its end-of-run report to reach the other ranks"));
      }
    }
    return agree_with_replicas(std::move(verdict), deadline);
  }

  /// @brief Gives every rank of the pipeline the bytes rank `root` holds.
  /// @param bytes what `root` sends; on the other ranks, replaced by what they receive
  /// @param root the pipeline rank that holds the bytes
  /// @param deadline when to give up (see transport_options::on_timeout)
  /// @return ready, or timed_out when the policy is throw_error and the wait ran past `deadline`
  wait_status broadcast(std::vector<std::byte>& bytes, int root, deadline_clock::time_point deadline) {
    const auto start = deadline_clock::now();
    const detail::waiting_on note(timeouts_, detail::wait_kind::broadcast_from, root, 0);
    return detail::broadcast(who_, bytes, root, collective_wait(*this, start, deadline));
  }

  /// @brief Gives this pipeline rank in every replica the bytes replica `root` holds (how the
  /// NCCL transport hands a job-wide unique id to every process). With one replica, nothing moves.
  /// @param bytes what replica `root` sends; in the other replicas, replaced by what they receive
  /// @param root the replica that holds the bytes
  /// @param deadline when to give up (see transport_options::on_timeout)
  /// @return ready, or timed_out when the policy is throw_error and the wait ran past `deadline`
  wait_status broadcast_to_replicas(std::vector<std::byte>& bytes, int root, deadline_clock::time_point deadline) {
    if (replicas() <= 1) return wait_status::ready;
    const auto start = deadline_clock::now();
    const detail::waiting_on note(timeouts_, detail::wait_kind::replicas, -1, 0);
    return detail::broadcast_to_replicas(who_, bytes, root, collective_wait(*this, start, deadline));
  }

  /// @brief Whether `mine` is true on any process of the job, every replica's included: how
  /// processes that may differ (the NCCL transport's communicators, after a failure in the
  /// optimizer hooks) decide alike. Collective over the job.
  /// @param mine this process's answer
  /// @param deadline when to give up
  /// @return true when any process said true; a timeout throws ppipe::error (errc::timeout)
  bool any_process(bool mine, deadline_clock::time_point deadline) {
    const auto start = deadline_clock::now();
    const detail::waiting_on note(timeouts_, detail::wait_kind::collective, -1, 0);
    const std::optional<bool> any = detail::any_process(who_, mine, collective_wait(*this, start, deadline));
    if (!any) {
      ppipe::detail::fail(errc::timeout, describe_rank(rank()), " waited ", detail::waited_ms(start),
                          " for every process of the job to take part in a collective decision");
    }
    return *any;
  }

  /// @brief Replaces `values` by their mean over the replicas (sum, then times 1/replicas), in
  /// place. Every replica calls it with the same number of values. A no-op with one replica.
  /// @param values this replica's gradients, replaced by the mean over the replicas
  /// @param deadline when to give up (see transport_options::on_timeout)
  void allreduce_mean(std::span<float> values, deadline_clock::time_point deadline) {
    if (replicas() <= 1 || values.empty()) return;
    const auto start = deadline_clock::now();
    const detail::waiting_on note(timeouts_, detail::wait_kind::replicas, -1, 0);
    detail::allreduce_mean(who_, values, collective_wait(*this, start, deadline));
  }

  /// @brief See ppipe::distributed_transport: every process compares `mine` with the others'
  /// before a run, over the pipeline (fields alike everywhere) and then over the replicas (per-rank
  /// fields too), and all throw the same ppipe::error (invalid_argument) naming a process's
  /// `problem` (the lowest rank's), or else the first field that differs and the value of each
  /// side; or all return. Costs one 8-byte all-gather per communicator when they agree.
  /// @param mine what this process must hold alike with the others
  /// @param problem what kept this process from preparing the run, or empty
  /// @param deadline when to give up (see transport_options::on_timeout)
  void agree(const std::vector<agreement_field>& mine, std::string_view problem, deadline_clock::time_point deadline) {
    timeouts_.refuse_if_broken();
    const auto start = deadline_clock::now();
    const detail::waiting_on note(timeouts_, detail::wait_kind::collective, -1, 0);
    detail::agree(who_, mine, problem, collective_wait(*this, start, deadline));
  }

  /// @brief Pipeline rank `r` as messages name it: "rank 2", and where that is not the process's
  /// rank in MPI_COMM_WORLD, or with replicas, the process and the replica: "rank 1 of replica 2
  /// (process 5)".
  /// @param r a pipeline rank
  /// @return its name for messages
  [[nodiscard]] std::string describe_rank(int r) const { return who_.describe_rank(r); }

 private:
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
    if (self != rank() || peer < 0 || peer >= num_ranks() || peer == self) {
      ppipe::detail::fail(errc::invalid_argument, "rank ", rank(), " (this process) cannot ", what, " between rank ",
                          self, " and rank ", peer, " of a ", num_ranks(), "-process pipeline; a process only "
                          "transfers its own rank's data, to another rank in 0..", num_ranks() - 1);
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
    PPIPE_MPI_CHECK(MPI_Improbe(from, tag, communicator(), &found, &msg, &status));
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
    const std::uint64_t seq = slot.sequence;
    if (slot.form != recv_form::agreed && probe(slot.from, detail::header_tag(run_, seq), msg, bytes)) {
      if (slot.form == recv_form::either) slot.form = recv_form::described;
    } else if (slot.form != recv_form::described && probe(slot.from, detail::agreed_tag(run_, seq), msg, bytes)) {
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
      const wait_status st =
          poll(deadline, watch, [&] { return probe(slot.from, detail::data_tag(run_, slot.sequence), msg, bytes); });
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
      timeouts_.answer(who_);
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
    PPIPE_MPI_CHECK(MPI_Improbe(source, detail::control_tag, communicator(), &flag, &msg, &status));
    if (flag == 0) return false;
    int bytes = 0;
    PPIPE_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &bytes));
    std::vector<std::byte> buf(static_cast<std::size_t>(std::max(bytes, 0)));
    PPIPE_MPI_CHECK(MPI_Mrecv(buf.data(), bytes, MPI_BYTE, &msg, MPI_STATUS_IGNORE));
    detail::wire_report w = detail::read_report(buf.data(), buf.size());
    const int from = status.MPI_SOURCE;
    if (w.run != run_) {
      ppipe::detail::fail(errc::backend, describe_rank(rank()), " got ", describe_rank(from), "'s report of run ",
                          w.run, " during run ", run_, "; every process must make the same calls on the pipeline, "
                          "in the same order");
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
    for (int q = 0; q < num_ranks(); ++q) {
      if (q == rank()) continue;
      const std::uint64_t sent = reports_[static_cast<std::size_t>(q)]->sent_to_you;
      for (std::uint64_t seq = posted_[static_cast<std::size_t>(q)]; seq < sent; ++seq) {
        (void)take_recv_slot(q, seq, recv_form::either, {}, 0);
      }
      posted_[static_cast<std::size_t>(q)] = std::max(posted_[static_cast<std::size_t>(q)], sent);
      for (std::uint32_t at = 0; at < recvs_.size(); ++at) {
        recv_slot& slot = recvs_[at];
        if (!slot.busy || slot.from != q) continue;
        if (slot.sequence < sent) {
          const detail::waiting_on note(timeouts_, detail::wait_kind::payload_from, q, slot.sequence);
          wait_status st = wait_status::ready;
          try {
            st = finish_recv(at, nullptr, deadline, false);
          } catch (const ppipe::error&) {
            if (!slot.done) throw;  // a refused payload of the failed run is taken in all the same
          }
          if (st != wait_status::ready) {
            return stuck(ppipe::detail::concat(describe_rank(rank()), " waited ", detail::waited_ms(start),
                                               " for payload ", slot.sequence, " that ", describe_rank(q),
                                               " sent in the failed run"));
          }
        }
        slot.into.clear();
        release_slot(recvs_, free_recvs_, at);
      }
    }
    for (std::uint32_t at = 0; at < sends_.size(); ++at) {
      if (!sends_[at].busy) continue;
      const detail::waiting_on note(timeouts_, detail::wait_kind::send_to, sends_[at].to, sends_[at].sequence);
      if (wait_send(sends_[at], deadline, false) != wait_status::ready) {
        return stuck(ppipe::detail::concat(describe_rank(rank()), " waited ", detail::waited_ms(start), " for ",
                                           describe_rank(sends_[at].to),
                                           " to take the payloads it sent in the failed run"));
      }
      release_slot(sends_, free_sends_, at);
    }
    return std::nullopt;
  }

  // Every replica learns whether the others' runs failed (see detail::replicas_verdict).
  run_verdict agree_with_replicas(run_verdict verdict, deadline_clock::time_point deadline) {
    if (replicas() <= 1) return verdict;
    const auto start = deadline_clock::now();
    const detail::waiting_on note(timeouts_, detail::wait_kind::replicas, -1, 0);
    std::optional<run_verdict> timed_out;
    std::optional<run_verdict> agreed =
        detail::replicas_verdict(who_, verdict, collective_wait(*this, start, deadline, &timed_out));
    return agreed ? *std::move(agreed) : *std::move(timed_out);
  }

  // How a collective waits for its request (see collectives.hpp): past `deadline` the job cannot
  // go on (stuck()), and what() names what this rank waited for since `start`; the verdict goes to
  // `*timed_out` when there is one to fill.
  class collective_wait {
   public:
    collective_wait(transport& t, deadline_clock::time_point start, deadline_clock::time_point deadline,
                    std::optional<run_verdict>* timed_out = nullptr)
        : t_(&t), start_(start), deadline_(deadline), timed_out_(timed_out) {}
    template <class What>
    bool operator()(MPI_Request& req, const What& what) const {
      if (t_->wait_one(req, deadline_) == wait_status::ready) return true;
      run_verdict v = t_->stuck(ppipe::detail::concat(t_->describe_rank(t_->rank()), " waited ",
                                                      detail::waited_ms(start_), " for ", what()));
      if (timed_out_ != nullptr) *timed_out_ = std::move(v);
      return false;
    }

   private:
    transport* t_;
    deadline_clock::time_point start_;
    deadline_clock::time_point deadline_;
    std::optional<run_verdict>* timed_out_;
  };

  // A wait ran past its deadline: the job cannot go on (see detail::timeouts::stuck).
  run_verdict stuck(const std::string& said) { return timeouts_.stuck(who_, options_, said); }

  detail::roster who_;  // the communicators, this process's place in them, and names for messages
  transport_options options_;
  detail::timeouts timeouts_;  // what this rank waits for, and whether a timeout has broken it
  std::vector<std::uint64_t> sent_;    // per peer: payloads sent to it this run
  std::vector<std::uint64_t> posted_;  // per peer: receives posted from it this run
  std::vector<send_slot> sends_;  // sends in flight, and free slots
  std::vector<std::uint32_t> free_sends_;
  std::vector<recv_slot> recvs_;  // receives in flight, and free slots
  std::vector<std::uint32_t> free_recvs_;
  std::vector<notice> notices_;  // this run's end-of-run reports to the other ranks
  std::vector<std::optional<detail::wire_report>> reports_;  // per peer: its report of this run
  std::uint64_t run_ = 0;
  bool aborted_ = false;
  bool remote_failure_ = false;
  deadline_clock::time_point clock_{};  // the last time a wait read the clock
};

static_assert(distributed_transport<transport>);
static_assert(ppipe::fills_given_buffers<transport>);
static_assert(ppipe::agrees_shapes<transport>);

}  // namespace ppipe::mpi
