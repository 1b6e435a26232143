#pragma once
/// @file
/// @brief ppipe::nccl::transport: payloads between processes by ncclSend/ncclRecv on the rank's
/// transfer stream, grouped as the schedule groups them; agreement, conclusion and broadcasts by a
/// control transport of the caller's choice (ppipe::mpi::transport under mpirun or srun).

#include <nccl.h>

#include <algorithm>
#include <array>
#include <concepts>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <exception>
#include <span>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/nccl/error.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/tensor/dtype.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/stream_transport.hpp"

namespace ppipe::nccl {

/// @brief How the NCCL transport sets up and waits.
struct transport_options {
  /// @brief How long the communicator's creation, or a group's issue, may stay in progress (a
  /// non-blocking communicator returns at once, and is polled).
  std::chrono::milliseconds setup_timeout{120000};
};

/// @brief The ranks a pipeline rank exchanges payloads with, on a looped placement: the ranks
/// before and after it, wrapping around where stages loop back (v > 1); without itself.
/// @param rank the rank
/// @param ranks the pipeline's rank count
/// @return its peers, each once
inline std::vector<int> neighbours(int rank, int ranks) {
  std::vector<int> out;
  for (const int q : {(rank + ranks - 1) % std::max(ranks, 1), (rank + 1) % std::max(ranks, 1)}) {
    if (q != rank && std::find(out.begin(), out.end(), q) == out.end()) out.push_back(q);
  }
  return out;
}

/// @brief A distributed stream_transport over an NCCL communicator, one pipeline rank per process
/// on one GPU.
///
/// - Transfers: begin_group()/end_group() are ncclGroupStart/ncclGroupEnd, send()/recv() are
///   ncclSend/ncclRecv of the tensor's bytes (ncclUint8) on the rank's transfer stream; the
///   executor issues each run of consecutive transfers of the schedule as one group, and the
///   pipeline validates the schedule under the rendezvous model, so neighbours never block each
///   other.
/// - The communicator is non-blocking (`ncclConfig_t::blocking = 0`): no NCCL call waits on the
///   host, and calls that return ncclInProgress are polled with ncclCommGetAsyncError.
/// - Faults: the executor's watchdog calls poll_failure() every 20 ms while the rank's streams
///   run. After abort() (a rank of this process failed, or a transfer timed out) it aborts the
///   communicator (ncclCommAbort), which ends the NCCL kernels so that the streams drain; an
///   asynchronous error of the communicator becomes the rank's failure, naming it and the last
///   group's transfers. After a failed run, every process aborts its communicator and makes a new
///   one, so the next run starts clean.
/// - Data-parallel replicas: where `Control` has replicas (ppipe::mpi::replicated), one
///   communicator spans the job and ncclCommSplit makes two of it: this replica's pipeline, and
///   the processes that run this pipeline rank in every replica, over which allreduce_mean()
///   averages a stage's gradients (ncclAllReduce, ncclAvg) on the stage's stream.
/// - Everything the processes say to each other on the host (agree, conclude, broadcast, the
///   names of ranks, other processes' failures) goes through `Control`.
/// @tparam Control a ppipe::distributed_transport of host tensors over the same processes, rank r
/// of it running pipeline rank r (ppipe::mpi::transport)
template <class Control>
  requires distributed_transport<Control>
class transport {
 public:
  /// @brief The tensors of the control transport's messages: host tensors.
  using tensor_type = host_tensor;
  /// @brief The device whose streams the transfers are enqueued on.
  using device_type = cuda::device;
  /// @brief The control transport.
  using control_type = Control;
  /// @brief NCCL's sends wait for their receives.
  static constexpr transfer_model model = transfer_model::rendezvous;

  /// @brief Makes the communicator: rank 0's unique id goes to every process over `control`,
  /// then each calls ncclCommInitRankConfig on GPU `ordinal`. With replicas, the id of the first
  /// replica's rank 0 goes to the whole job (over the pipeline, then over the replicas), and the
  /// job's communicator is split into the pipeline's and the replicas'. Collective over the job.
  /// @param control the processes' control transport (moved in)
  /// @param ordinal this process's GPU, as cudaSetDevice numbers it (its local rank, usually)
  /// @param options timeouts
  transport(Control control, int ordinal, transport_options options = {})
      : s_(std::make_unique<shared>(std::move(control), ordinal, options)) {
    make_comm();
  }

  /// @brief Over a communicator the caller made; it stays the caller's to destroy. Of the
  /// pipeline's processes, its rank r this process's pipeline rank r, it is used as it is: after a
  /// failed run it is aborted and cannot be remade, so later runs are refused. Of the whole job's
  /// processes (with replicas), it is split (ncclCommSplit) into the pipeline's and the replicas'
  /// communicators, which the transport owns and, after a failed run, splits again.
  /// @param control the processes' control transport (moved in)
  /// @param comm the communicator: of control.num_ranks() ranks, or of num_ranks() x replicas()
  /// @param ordinal this process's GPU
  /// @param options timeouts
  transport(Control control, ncclComm_t comm, int ordinal, transport_options options = {})
      : s_(std::make_unique<shared>(std::move(control), ordinal, options)) {
    int count = 0;
    int me = 0;
    PPIPE_NCCL_CHECK(ncclCommCount(comm, &count));
    PPIPE_NCCL_CHECK(ncclCommUserRank(comm, &me));
    if (replicas() > 1) {
      if (count != num_ranks() * replicas()) {
        ppipe::detail::fail(errc::invalid_argument, "the NCCL communicator has ", count, " ranks, but the job runs ",
                            replicas(), " replicas of a pipeline of ", num_ranks(), " ranks; give a communicator of "
                            "all ", num_ranks() * replicas(), " processes, which ppipe splits");
      }
      s_->job = comm;
      s_->job_owned = false;
      split_job();
      return;
    }
    if (count != num_ranks() || me != rank()) {
      ppipe::detail::fail(errc::invalid_argument, "the NCCL communicator has ", count, " ranks and this process is its "
                          "rank ", me, ", but the control transport has ", num_ranks(), " ranks and this process is ",
                          describe_rank(rank()), "; give a communicator whose ranks are the control transport's");
    }
    s_->comm = comm;
    s_->owned = false;
  }

  /// @brief Takes over the other's communicators and control transport, leaving it empty.
  transport(transport&&) noexcept = default;
  /// @brief Takes over the other's communicators and control transport, leaving it empty.
  /// @return this transport
  transport& operator=(transport&&) noexcept = default;
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;
  ~transport() = default;

  /// @brief The processes of the pipeline.
  /// @return their count
  [[nodiscard]] int num_ranks() const { return s_->control.num_ranks(); }
  /// @brief The pipeline rank this process runs.
  /// @return its rank
  [[nodiscard]] int rank() const { return s_->control.rank(); }
  /// @brief How many data-parallel replicas of the pipeline the job runs (the control's).
  /// @return their count, 1 where the control transport has none
  [[nodiscard]] int replicas() const { return replicas_of(s_->control); }
  /// @brief The pipeline's communicator.
  /// @return it, or null after an abort until the next run makes another
  [[nodiscard]] ncclComm_t communicator() const noexcept { return s_->comm; }
  /// @brief The communicator of the processes that run this pipeline rank in every replica.
  /// @return it; null with one replica, or after an abort until the next run makes another
  [[nodiscard]] ncclComm_t replica_communicator() const noexcept { return s_->replica_comm; }
  /// @brief The control transport.
  /// @return it
  [[nodiscard]] Control& control() noexcept { return s_->control; }

  /// @brief ncclGroupStart, for this process's rank; groups nest.
  /// @param r this process's rank
  void begin_group(int r) {
    mine(r);
    if (s_->depth++ == 0) {
      s_->group.clear();
      PPIPE_NCCL_CHECK(ncclGroupStart());
    }
  }

  /// @brief ncclGroupEnd: the outermost one issues the group's transfers on their stream.
  /// @param r this process's rank
  void end_group(int r) {
    mine(r);
    if (s_->depth == 0) {
      ppipe::detail::fail(errc::invalid_argument, "rank ", r, " ended a transfer group it never began; call "
                          "begin_group() before end_group()");
    }
    if (--s_->depth == 0) issued(ncclGroupEnd(), "ncclGroupEnd");
  }

  /// @brief ncclSend of `bytes` bytes at `data` (device memory) to rank `to` on stream `s`.
  /// @param from this process's rank
  /// @param to the receiving rank
  /// @param data what to send
  /// @param bytes how many bytes
  /// @param d this rank's device (unused: the stream says where)
  /// @param s the stream
  /// @param what the transfer, for hang reports
  void send(int from, int to, const void* data, std::size_t bytes, device_type& d, device_type::stream s,
            std::string_view what) {
    static_cast<void>(d);
    mine(from);
    note(what, " to rank ", to);
    usable();
    issued(ncclSend(data, bytes, ncclUint8, to, s_->comm, s.handle()), "ncclSend");
  }

  /// @brief ncclRecv of `bytes` bytes from rank `from` into `data` (device memory) on stream `s`.
  /// @param from the sending rank
  /// @param to this process's rank
  /// @param data where the bytes go
  /// @param bytes how many bytes
  /// @param d this rank's device (unused)
  /// @param s the stream
  /// @param what the transfer, for hang reports
  void recv(int from, int to, void* data, std::size_t bytes, device_type& d, device_type::stream s,
            std::string_view what) {
    static_cast<void>(d);
    mine(to);
    note(what, " from rank ", from);
    usable();
    issued(ncclRecv(data, bytes, ncclUint8, from, s_->comm, s.handle()), "ncclRecv");
  }

  /// @brief Enqueues on stream `s` the replacement of each gradient by its mean over the
  /// replicas: one group of ncclAllReduce (ncclAvg, in place) over the replicas' communicator, in
  /// the gradients' own dtype. A no-op with one replica.
  /// @param gradients the stage's gradients, in device memory (f32, bf16 or f16)
  /// @param d this rank's device (unused: the stream says where)
  /// @param s the stage's stream
  /// @param timeout unused: the executor's watchdog waits for the stream
  void allreduce_mean(std::span<const tensor_view> gradients, device_type& d, device_type::stream s,
                      std::chrono::milliseconds timeout) {
    static_cast<void>(d);
    static_cast<void>(timeout);
    if (replicas() <= 1) return;
    // Everything that can be refused is refused before the group opens: a group ended half-issued
    // would launch part of a collective that the other replicas launch whole.
    std::size_t values = 0;
    std::vector<ncclDataType_t> types;
    types.reserve(gradients.size());
    for (const tensor_view& g : gradients) {
      values += g.elements;
      types.push_back(nccl_type(g.type));
    }
    replicas_usable();
    as_group([&] {
      note(ppipe::detail::concat("the all-reduce of ", values, " gradient values over ", replicas(), " replicas"));
      for (std::size_t k = 0; k < gradients.size(); ++k) {
        const tensor_view& g = gradients[k];
        issued(ncclAllReduce(g.data, g.data, g.elements, types[k], ncclAvg, s_->replica_comm, s.handle()),
               "ncclAllReduce");
      }
    });
  }

  /// @brief Asks for the communicator to be aborted: poll_failure() does it on the host thread.
  void abort() { s_->abort_requested.store(true); }

  /// @brief For the executor's watchdog: aborts the communicator once abort() asked for it, and
  /// turns an asynchronous error of the communicator into this rank's failure.
  /// @return the failure, or null
  std::exception_ptr poll_failure() {
    if (s_->comm == nullptr || s_->depth != 0) return nullptr;
    if (s_->abort_requested.load()) {
      abort_comm();
      return nullptr;
    }
    const ncclResult_t state = async_error();
    if (state == ncclSuccess) return nullptr;
    abort_comm();
    // A peer that aborted shows here as a remote error: its own report names the failure.
    if (state == ncclRemoteError || other_failed()) {
      return std::make_exception_ptr(transfers_aborted(ppipe::detail::concat(
          describe_rank(rank()), "'s NCCL communicator was aborted: a peer failed (", result_name(state), ")")));
    }
    return std::make_exception_ptr(error(
        errc::backend, ppipe::detail::concat(describe_rank(rank()), "'s NCCL communicator failed: NCCL error ",
                                             static_cast<int>(state), " ", result_name(state), " (",
                                             ncclGetErrorString(state), "), in or after its group of ", s_->group,
                                             "; it was aborted")));
  }

  /// @brief Whether another process has reported its rank's failure (the control transport's).
  /// @return true once one has
  bool peer_failed()
    requires requires(Control& c) { { c.peer_failed() } -> std::convertible_to<bool>; }
  {
    return s_->control.peer_failed();
  }

  /// @brief Readies the next run: after an abort, makes a new communicator (collective: every
  /// process's next run does it), or refuses where the aborted one was the caller's.
  void reset() {
    s_->abort_requested.store(false);
    s_->depth = 0;
    s_->control.reset();
    if (s_->job != nullptr) {
      // Every process splits again, or none does (the split is collective over the job): an
      // all-reduce that failed in the optimizer hooks, after the run's conclusion, aborted the
      // communicators of some processes only.
      const bool mine = s_->comm == nullptr || s_->replica_comm == nullptr;
      bool any = mine;
      if constexpr (requires(Control& c) { { c.any_process(mine, deadline_clock::now()) } -> std::same_as<bool>; }) {
        any = s_->control.any_process(mine, deadline_after(s_->options.setup_timeout));
      }
      if (!any) return;
      abort_comm();
      split_job();
      return;
    }
    if (s_->comm != nullptr) return;
    if (!s_->owned) {
      ppipe::detail::fail(errc::backend, "the NCCL communicator was aborted after a failure, and it was the "
                          "caller's, so ppipe cannot make another; build the transport with a new communicator");
    }
    make_comm();
  }

  /// @brief See ppipe::distributed_transport: the control transport's verdict. After a failed run
  /// every process aborts its communicator (NCCL cannot drain point-to-point work); the next run's
  /// reset() makes a new one.
  /// @param mine how this rank's part ended
  /// @param deadline when to give up
  /// @return what every process concludes
  run_verdict conclude(const rank_outcome& mine, deadline_clock::time_point deadline) {
    run_verdict verdict = s_->control.conclude(mine, deadline);
    if (!verdict.ok) abort_comm();
    return verdict;
  }

  /// @brief Gives every rank the bytes rank `root` holds (the control transport's).
  /// @param bytes what `root` sends; elsewhere replaced by what arrives
  /// @param root the rank that holds them
  /// @param deadline when to give up
  /// @return ready, or timed_out
  wait_status broadcast(std::vector<std::byte>& bytes, int root, deadline_clock::time_point deadline) {
    return s_->control.broadcast(bytes, root, deadline);
  }
  /// @brief See ppipe::distributed_transport (the control transport's).
  /// @param fields what this process must hold alike with the others
  /// @param problem what kept it from preparing the run, or empty
  /// @param deadline when to give up
  void agree(const std::vector<agreement_field>& fields, std::string_view problem,
             deadline_clock::time_point deadline) {
    s_->control.agree(fields, problem, deadline);
  }
  /// @brief Rank `r` as messages name it (the control transport's).
  /// @param r a pipeline rank
  /// @return e.g. "rank 1 (process 3)"
  [[nodiscard]] std::string describe_rank(int r) const { return s_->control.describe_rank(r); }

  /// @brief Makes NCCL connect to `peers` before the first timed step (it connects lazily, on a
  /// pair's first transfer, since 2.22): one byte each way with each of them, in one group, on
  /// stream `s`. Every process calls it with its own peers, which must name it back (neighbours()
  /// does).
  /// @param d this rank's device
  /// @param s the stream to run it on
  /// @param peers the ranks to connect to
  /// @param deadline when to give up waiting for it
  /// @return how long it took, in milliseconds (the cost of the first transfer)
  double warm_up(device_type& d, device_type::stream s, const std::vector<int>& peers,
                 deadline_clock::time_point deadline) {
    const std::size_t n = peers.size();
    auto* bytes = static_cast<std::byte*>(d.allocate(std::max<std::size_t>(2 * n, 1), s));
    d.zero_async(s, bytes, std::max<std::size_t>(2 * n, 1));
    const auto start = d.record(s);
    try {
      as_group([&] {
        for (std::size_t k = 0; k < n; ++k) {
          send(rank(), peers[k], bytes + 2 * k, 1, d, s, "warm-up");
          recv(peers[k], rank(), bytes + 2 * k + 1, 1, d, s, "warm-up");
        }
      });
    } catch (...) {
      d.release(bytes, s);
      throw;
    }
    const auto end = d.record(s);
    d.release(bytes, s);
    for (;;) {
      if (d.synchronize(end, std::min(deadline, deadline_clock::now() + std::chrono::milliseconds(20))) ==
          wait_status::ready) {
        break;
      }
      if (std::exception_ptr e = poll_failure()) std::rethrow_exception(e);
      if (deadline_clock::now() >= deadline) {
        abort_comm();
        ppipe::detail::fail(errc::timeout, describe_rank(rank()), " could not connect to its peers within the "
                            "deadline (warm-up exchange with ranks ", join(peers), "); check that every process "
                            "called warm_up(), and NCCL_DEBUG=INFO for the connection it tries");
      }
    }
    return d.elapsed_us(start, end) / 1000.0;
  }

 private:
  // What a move must not invalidate: the control transport, the communicator and the flags.
  struct shared {
    shared(Control c, int gpu, transport_options o) : control(std::move(c)), ordinal(gpu), options(o) {}
    shared(const shared&) = delete;
    shared& operator=(const shared&) = delete;
    ~shared() {
      // Aborted, not destroyed: it frees everything without waiting for the peers (a
      // non-blocking communicator would need ncclCommFinalize and a wait first).
      if (owned && comm != nullptr) static_cast<void>(ncclCommAbort(comm));
      if (replica_comm != nullptr) static_cast<void>(ncclCommAbort(replica_comm));
      if (job_owned && job != nullptr) static_cast<void>(ncclCommAbort(job));
    }
    Control control;
    int ordinal = 0;
    transport_options options;
    ncclComm_t comm = nullptr;  // the pipeline's
    bool owned = true;
    ncclComm_t replica_comm = nullptr;  // with replicas: this pipeline rank's processes, one per replica
    ncclComm_t job = nullptr;           // with replicas: every process, split into the two above
    bool job_owned = true;
    std::atomic<bool> abort_requested{false};
    int depth = 0;
    std::string group;  // the transfers of the group being issued (or the last one), for messages
  };

  static int replicas_of(const Control& c) {
    if constexpr (requires { { c.replicas() } -> std::convertible_to<int>; }) {
      return c.replicas();
    } else {
      return 1;
    }
  }

  static ncclDataType_t nccl_type(dtype t) {
    switch (t) {
      case dtype::f32: return ncclFloat32;
      case dtype::bf16: return ncclBfloat16;
      case dtype::f16: return ncclFloat16;
      default: break;
    }
    ppipe::detail::fail(errc::unsupported, "ppipe averages gradients of f32, bf16 and f16 over replicas, not of ",
                        to_string(t), "; keep such parameters out of for_each_parameter or run one replica");
  }

  void replicas_usable() const {
    if (s_->replica_comm == nullptr) {
      ppipe::detail::fail(errc::backend, describe_rank(rank()), "'s NCCL communicator of the replicas was aborted; "
                          "no all-reduce can be issued until the run has ended");
    }
  }

  // The first asynchronous error of the communicators in use (ncclSuccess: none, or still in
  // progress).
  ncclResult_t async_error() const {
    // (Arrays, not braced lists: nvcc's front end rejects a range-for over one in a template.)
    for (ncclComm_t c : std::array<ncclComm_t, 2>{s_->comm, s_->replica_comm}) {
      if (c == nullptr) continue;
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(c, &state) != ncclSuccess) continue;
      if (state != ncclSuccess && state != ncclInProgress) return state;
    }
    return ncclSuccess;
  }

  // Issues `calls` as one group. When one throws, the group is still ended (NCCL's group state is
  // the thread's), on a communicator already marked for abort, and then aborted.
  template <class Calls>
  void as_group(Calls&& calls) {
    begin_group(rank());
    try {
      calls();
    } catch (...) {
      s_->abort_requested.store(true);
      try {
        end_group(rank());
      } catch (...) {
      }
      abort_comm();
      throw;
    }
    end_group(rank());
  }

  static std::string join(const std::vector<int>& v) {
    std::string out;
    for (const int x : v) out += ppipe::detail::concat(out.empty() ? "" : ", ", x);
    return out;
  }

  void mine(int r) const {
    if (r != rank()) {
      ppipe::detail::fail(errc::invalid_argument, "rank ", rank(), " (this process) was asked to transfer for rank ",
                          r, "; a process issues only its own rank's transfers");
    }
  }

  template <class... Parts>
  void note(std::string_view what, const Parts&... parts) {
    if (s_->depth == 0) s_->group.clear();
    s_->group += ppipe::detail::concat(s_->group.empty() ? "" : "; ", what, parts...);
  }

  void usable() const {
    if (s_->comm == nullptr) {
      ppipe::detail::fail(errc::backend, describe_rank(rank()), "'s NCCL communicator was aborted; no transfer can "
                          "be issued until the run has ended");
    }
  }

  // A call's result on a non-blocking communicator: in progress is waited for (polled). Inside a
  // group the communicator is not aborted until the group has ended (its calls would use it).
  void issued(ncclResult_t result, const char* call) {
    if (result == ncclInProgress) {
      wait_ready(call);
      return;
    }
    if (result != ncclSuccess) {
      if (s_->depth == 0) {
        abort_comm();
      } else {
        s_->abort_requested.store(true);
      }
      check(result, ppipe::detail::concat(call, " (", s_->group, ")").c_str());
    }
  }

  // Polls a call in progress (connecting a pair on its first transfer, say) until it is done, the
  // transport is aborted, another process reports a failure, or the setup timeout passes. A group
  // may span both communicators in use, so both are polled; `only`, where given, alone.
  void wait_ready(const char* call, ncclComm_t only = nullptr) {
    const auto deadline = deadline_after(s_->options.setup_timeout);
    for (int polls = 0;; ++polls) {
      ncclResult_t state = ncclSuccess;
      const std::array<ncclComm_t, 2> polled{only != nullptr ? only : s_->comm,
                                             only != nullptr ? nullptr : s_->replica_comm};
      for (ncclComm_t c : polled) {
        if (c == nullptr) continue;
        ncclResult_t each = ncclInProgress;
        PPIPE_NCCL_CHECK(ncclCommGetAsyncError(c, &each));
        if (each == ncclInProgress) {
          if (state == ncclSuccess) state = each;
        } else if (each != ncclSuccess) {
          state = each;  // a failure outweighs a call in progress
        }
      }
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        abort_comm();
        check(state, ppipe::detail::concat(call, " (", s_->group, ")").c_str());
      }
      if (s_->abort_requested.load() || (polls % 200 == 199 && other_failed())) {
        abort_comm();
        throw transfers_aborted(ppipe::detail::concat(describe_rank(rank()), "'s ", call, " was aborted: a rank failed"));
      }
      if (deadline_clock::now() >= deadline) {
        abort_comm();
        ppipe::detail::fail(errc::timeout, describe_rank(rank()), "'s ", call, " was still in progress after ",
                            s_->options.setup_timeout.count(), " ms (", s_->group, "); the communicator was aborted");
      }
      // A non-blocking group ends in progress and finishes within microseconds: spin a while
      // before sleeping, or every group would cost the rank a sleep.
      if (polls < 2000) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
  }

  // Whether the control transport has heard of another process's failure (where it can say).
  bool other_failed() {
    if constexpr (requires(Control& c) { { c.peer_failed() } -> std::convertible_to<bool>; }) {
      return s_->control.peer_failed();
    } else {
      return false;
    }
  }

  // Aborts the communicators that carry transfers (the job's, never used for any, is kept to split
  // new ones from).
  void abort_comm() noexcept {
    for (ncclComm_t* c : std::array<ncclComm_t*, 2>{&s_->comm, &s_->replica_comm}) {
      if (*c == nullptr) continue;
      static_cast<void>(ncclCommAbort(*c));
      *c = nullptr;
    }
  }

  // Rank 0's unique id to every process over the control transport, then the communicator; with
  // replicas, the first replica's rank 0's id to the whole job, its communicator, and the split.
  void make_comm() {
    ncclUniqueId id{};
    std::vector<std::byte> bytes(sizeof id);
    const int replica = [&] {
      if constexpr (requires { { s_->control.replica() } -> std::convertible_to<int>; }) {
        return s_->control.replica();
      } else {
        return 0;
      }
    }();
    if (rank() == 0 && replica == 0) {
      PPIPE_NCCL_CHECK(ncclGetUniqueId(&id));
      std::memcpy(bytes.data(), &id, sizeof id);
    }
    if (s_->control.broadcast(bytes, 0, deadline_after(s_->options.setup_timeout)) != wait_status::ready) {
      ppipe::detail::fail(errc::timeout, describe_rank(rank()), " waited ", s_->options.setup_timeout.count(),
                          " ms for rank 0's NCCL unique id");
    }
    if (replicas() > 1) {
      if constexpr (requires(std::vector<std::byte>& b) {
                      s_->control.broadcast_to_replicas(b, 0, deadline_clock::time_point{});
                    }) {
        if (s_->control.broadcast_to_replicas(bytes, 0, deadline_after(s_->options.setup_timeout)) !=
            wait_status::ready) {
          ppipe::detail::fail(errc::timeout, describe_rank(rank()), " waited ", s_->options.setup_timeout.count(),
                              " ms for the first replica's NCCL unique id");
        }
      } else {
        ppipe::detail::fail(errc::unsupported, "the control transport has replicas but cannot broadcast to them "
                            "(broadcast_to_replicas); give the NCCL transport a communicator of the whole job");
      }
    }
    if (bytes.size() != sizeof id) {
      ppipe::detail::fail(errc::backend, "rank 0 sent ", bytes.size(), " bytes for an NCCL unique id of ", sizeof id,
                          "; every process must run the same program");
    }
    std::memcpy(&id, bytes.data(), sizeof id);
    const cuda::detail::current_device on(s_->ordinal);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    s_->group = "the communicator's creation";
    ncclComm_t comm = nullptr;
    if (replicas() > 1) {
      // Process k * ranks + r of the job runs pipeline rank r of replica k.
      const ncclResult_t result =
          ncclCommInitRankConfig(&comm, num_ranks() * replicas(), id, replica * num_ranks() + rank(), &config);
      s_->job = comm;
      if (result != ncclSuccess && result != ncclInProgress) {
        static_cast<void>(ncclCommAbort(comm));
        s_->job = nullptr;
        check(result, "ncclCommInitRankConfig (the job's communicator)");
      }
      wait_ready("ncclCommInitRankConfig", s_->job);
      split_job();
      return;
    }
    const ncclResult_t result = ncclCommInitRankConfig(&comm, num_ranks(), id, rank(), &config);
    s_->comm = comm;
    if (result != ncclSuccess && result != ncclInProgress) {
      abort_comm();
      check(result, "ncclCommInitRankConfig");
    }
    wait_ready("ncclCommInitRankConfig");
    s_->group.clear();
  }

  // The pipeline's and the replicas' communicators, split from the job's (collective over the
  // job): colours and keys come from the control transport, whatever the job's rank order.
  void split_job() {
    const int replica = [&] {
      if constexpr (requires { { s_->control.replica() } -> std::convertible_to<int>; }) {
        return s_->control.replica();
      } else {
        return 0;
      }
    }();
    const cuda::detail::current_device on(s_->ordinal);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    s_->group = "the split of the job's communicator";
    ncclResult_t broken = ncclSuccess;
    if (ncclCommGetAsyncError(s_->job, &broken) != ncclSuccess || (broken != ncclSuccess && broken != ncclInProgress)) {
      ppipe::detail::fail(errc::backend, describe_rank(rank()), "'s NCCL communicator of the whole job failed (",
                          result_name(broken), "), so no new one can be split from it; build a new transport");
    }
    // A non-blocking split runs on the parent: NCCL writes the new communicator into `into` (which
    // outlives the call) once the parent is ready again, and only then can the next split start.
    const auto split = [&](int colour, int key, ncclComm_t& into, const char* what) {
      into = nullptr;
      const ncclResult_t result = ncclCommSplit(s_->job, colour, key, &into, &config);
      if (result != ncclSuccess && result != ncclInProgress) check(result, what);
      wait_ready(what, s_->job);
      if (into == nullptr) {
        ppipe::detail::fail(errc::backend, describe_rank(rank()), "'s ", what, " made no communicator; check "
                            "that every process of the job splits it (NCCL_DEBUG=INFO says more)");
      }
      wait_ready(what, into);
    };
    split(replica, rank(), s_->comm, "ncclCommSplit (the pipeline's communicator)");
    split(rank(), replica, s_->replica_comm, "ncclCommSplit (the replicas' communicator)");
    s_->owned = true;
    s_->group.clear();
  }

  std::unique_ptr<shared> s_;
};

}  // namespace ppipe::nccl
