#pragma once
/// @file
/// @brief How the MPI transport sends and waits: ppipe::mpi::transport_options, and what a rank
/// does when a wait runs past its deadline.

#include <chrono>
#include <cstddef>

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
  timeout_policy on_timeout = timeout_policy::abort_job;  ///< what a wait past its deadline does
  int abort_code = 3;  ///< the exit code MPI_Abort is given
  /// How long a wait polls MPI without pause before it starts yielding the core between polls (on
  /// an oversubscribed node a polling process takes the core of one that has work).
  std::chrono::microseconds spin{200};
  /// After a timeout, how long a rank waits for the other ranks to say what they are waiting for,
  /// before it names those that did not answer (dead, or stuck outside ppipe) in its message.
  std::chrono::milliseconds inquiry{1000};
};

}  // namespace ppipe::mpi
