#pragma once
/// @file
/// @brief What an MPI rank does when a wait runs past its deadline: it asks every other process of
/// the job what it waits for (and answers the same question while it waits itself), names those
/// that do not answer, and then ends the job or refuses any further run.

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ppipe/backend/mpi/options.hpp"
#include "ppipe/backend/mpi/roster.hpp"
#include "ppipe/backend/mpi/tags.hpp"
#include "ppipe/device/wait.hpp"
#include "ppipe/error.hpp"
#include "ppipe/transport/distributed.hpp"

namespace ppipe::mpi::detail {

/// What a rank waits for, for its answer when another rank inquires.
enum class wait_kind : unsigned char {
  none, payload_from, send_to, report_from, broadcast_from, collective, replicas, inquiring
};

struct wait_state {
  wait_kind kind = wait_kind::none;
  int peer = -1;
  std::uint64_t number = 0;  // for a payload: its sequence number
};

/// "500 ms": how long a wait that began at `start` has waited.
inline std::string waited_ms(deadline_clock::time_point start) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_clock::now() - start);
  return ppipe::detail::concat(ms.count(), " ms");
}

/// One rank's side of timeouts: what it waits for now, the answers it gave, and, once one of its
/// waits has timed out, why it cannot run again.
class timeouts {
 public:
  /// Throws when a timeout has broken the transport: a peer may still be stuck.
  void refuse_if_broken() const {
    if (!broken_.empty()) {
      ppipe::detail::fail(errc::backend, "the MPI transport cannot run again after a timeout (", broken_,
                          "): a peer may still be stuck; end the job (MPI_Abort)");
    }
  }

  /// Answers every inquiry that has arrived with what this rank waits for. Called while it polls,
  /// so a rank answers as long as it is inside one of ppipe's waits.
  void answer(const roster& who) {
    const MPI_Comm c = who.inquiry_comm();
    for (;;) {
      int found = 0;
      MPI_Message msg = MPI_MESSAGE_NULL;
      MPI_Status status{};
      if (MPI_Improbe(MPI_ANY_SOURCE, inquiry_tag, c, &found, &msg, &status) != MPI_SUCCESS || found == 0) break;
      std::byte token{};
      MPI_Mrecv(&token, 1, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
      inquirers_.resize(static_cast<std::size_t>(who.inquiry_size()));
      if (status.MPI_SOURCE >= 0 && status.MPI_SOURCE < who.inquiry_size()) {
        inquirers_[static_cast<std::size_t>(status.MPI_SOURCE)] = true;
      }
      sent_answer& n = answers_.emplace_back();
      const std::string text = ppipe::detail::concat(who.describe_rank(who.rank()), " is ", describe_wait(who));
      const auto* begin = reinterpret_cast<const std::byte*>(text.data());
      n.bytes.assign(begin, begin + text.size());
      if (MPI_Isend(n.bytes.data(), static_cast<int>(n.bytes.size()), MPI_BYTE, status.MPI_SOURCE, answer_tag, c,
                    &n.request) != MPI_SUCCESS) {
        answers_.pop_back();
      }
    }
    // Answers that have left are let go (a dead inquirer's never are; they are few).
    std::erase_if(answers_, [](sent_answer& n) {
      int done = 0;
      return MPI_Test(&n.request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done != 0;
    });
  }

  /// A wait ran past its deadline: the peer may be stuck, so the job cannot go on (see
  /// timeout_policy). Returns the verdict to throw when the policy is throw_error.
  run_verdict stuck(const roster& who, const transport_options& options, const std::string& said) {
    const std::string message = said + inquire(who, options.inquiry);
    broken_ = message;
    if (options.on_timeout == timeout_policy::abort_job) {
      const std::string me = who.describe_rank(who.rank());
      std::fprintf(stderr,
                   "ppipe: %s: [ppipe.timeout] %s\n"
                   "ppipe: %s is aborting the job with MPI_Abort(%d): a peer that does not answer cannot be "
                   "waited for (set mpi::transport_options::on_timeout to throw_error to get a ppipe::error "
                   "instead)\n",
                   me.c_str(), message.c_str(), me.c_str(), options.abort_code);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, options.abort_code);
    }
    return {false, who.rank(), errc::timeout, message};
  }

 private:
  friend class waiting_on;

  struct sent_answer {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<std::byte> bytes;
  };

  // What an inquiry sends (static: a send that never completes reads it).
  static constexpr std::byte inquiry_token{};

  // "waiting for payload 3 from rank 2", for an answer.
  [[nodiscard]] std::string describe_wait(const roster& who) const {
    const wait_state& w = waiting_;
    switch (w.kind) {
      case wait_kind::payload_from:
        return ppipe::detail::concat("waiting for payload ", w.number, " from ", who.describe_rank(w.peer));
      case wait_kind::send_to:
        return ppipe::detail::concat("waiting for ", who.describe_rank(w.peer), " to take payload ", w.number);
      case wait_kind::report_from:
        return ppipe::detail::concat("done with its part of the run, waiting for ", who.describe_rank(w.peer),
                                     "'s end-of-run report");
      case wait_kind::broadcast_from:
        return ppipe::detail::concat("waiting for ", who.describe_rank(w.peer), " to broadcast the run's results");
      case wait_kind::collective: return "waiting for every rank of the pipeline";
      case wait_kind::replicas: return "waiting for the other replicas";
      case wait_kind::inquiring: return "timed out too, and asking the others what they wait for";
      case wait_kind::none: break;
    }
    return "answering from inside ppipe";
  }

  // Asks every other process of the job (every rank of the pipeline, of every replica) what it is
  // waiting for, and gives them `patience` to answer. A live rank inside a ppipe wait answers; one
  // that has died, or is stuck in a kernel or outside the pipeline, does not. Returns the lines to
  // add to the message, those that did not answer first: that is where to look, whichever
  // neighbour this rank waited for.
  std::string inquire(const roster& who, std::chrono::milliseconds patience);

  wait_state waiting_;                // what this rank waits for now
  std::vector<sent_answer> answers_;  // answers to other ranks' inquiries, until they have left
  std::vector<bool> inquirers_;       // the processes that asked this rank what it waits for
  std::string broken_;                // why the transport cannot run again (a timeout), or empty
};

/// Notes a wait for as long as it lasts; a wait inside another (a drain in conclude) restores it.
class waiting_on {
 public:
  waiting_on(timeouts& t, wait_kind kind, int peer, std::uint64_t number)
      : t_(&t), before_(std::exchange(t.waiting_, wait_state{kind, peer, number})) {}
  waiting_on(const waiting_on&) = delete;
  waiting_on& operator=(const waiting_on&) = delete;
  ~waiting_on() { t_->waiting_ = before_; }

 private:
  timeouts* t_;
  wait_state before_;
};

inline std::string timeouts::inquire(const roster& who, std::chrono::milliseconds patience) {
  const int n = who.inquiry_size();
  if (patience.count() <= 0 || n <= 1) return {};
  const waiting_on note(*this, wait_kind::inquiring, -1, 0);
  const MPI_Comm c = who.inquiry_comm();
  const int me = who.inquiry_rank();
  // Sends that are never completed: a dead peer never takes them, and the job ends after this.
  for (int q = 0; q < n; ++q) {
    MPI_Request req = MPI_REQUEST_NULL;
    if (q != me && MPI_Isend(&inquiry_token, 1, MPI_BYTE, q, inquiry_tag, c, &req) == MPI_SUCCESS) {
      MPI_Request_free(&req);
    }
  }
  std::vector<std::string> said(static_cast<std::size_t>(n));
  int left = n - 1;
  const auto until = deadline_clock::now() + patience;
  while (left > 0 && deadline_clock::now() < until) {
    answer(who);
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
    slot = text.empty() ? who.describe_process(status.MPI_SOURCE) + " answered" : std::move(text);
  }
  std::string silent;
  std::string answered;
  for (int q = 0; q < n; ++q) {
    if (q == me) continue;
    const std::string& text = said[static_cast<std::size_t>(q)];
    const bool asked = static_cast<std::size_t>(q) < inquirers_.size() && inquirers_[static_cast<std::size_t>(q)];
    if (text.empty() && asked) {
      // It asked this rank first: it timed out too, and is reporting or ending the job.
      answered += ppipe::detail::concat("\n  ", who.describe_process(q),
                                        " timed out too, and did not answer after it asked");
    } else if (text.empty()) {
      silent += ppipe::detail::concat("\n  ", who.describe_process(q), " does not answer (asked for ",
                                      patience.count(), " ms): it has died, or is stuck outside ppipe (in a "
                                      "kernel, or not calling the pipeline); look there first");
    } else {
      answered += "\n  " + text;
    }
  }
  return silent + answered;
}

}  // namespace ppipe::mpi::detail
