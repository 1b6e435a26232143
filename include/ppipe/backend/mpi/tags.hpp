#pragma once
/// @file
/// @brief The tags that tell ppipe's messages apart on its communicators: payloads (by run, form
/// and sequence number), end-of-run reports, and the inquiries after a timeout.

#include <cstdint>

namespace ppipe::mpi::detail {

// A payload's header and its tensors carry its sequence number (mod tag_range), so a receive
// matches its own send whatever order receives complete in, and the run's number (mod run_slots):
// a peer that has finished a failed run may already send the next run's payloads while this rank
// still cancels the receives of the failed one, and those must not match. (A peer is at most one
// run ahead: it cannot end a run without this rank's report of it.) A payload sent in the agreed
// form (its values alone) has a tag range of its own: a receive posted in one form never matches
// a send posted in the other.
inline constexpr int tag_range = 2048;
inline constexpr int run_slots = 4;
inline constexpr int tag_kinds = 3;  // header, separate values, agreed
/// The end-of-run reports.
inline constexpr int control_tag = tag_kinds * tag_range * run_slots;
/// After a timeout a rank asks the others what they wait for, and they answer.
inline constexpr int inquiry_tag = control_tag + 1;
inline constexpr int answer_tag = control_tag + 2;

constexpr int run_base(std::uint64_t run) { return static_cast<int>(run % run_slots) * tag_kinds * tag_range; }
/// A described payload's header (with its values when they are inline).
constexpr int header_tag(std::uint64_t run, std::uint64_t seq) {
  return run_base(run) + static_cast<int>(seq % tag_range);
}
/// A described payload's tensors, when they follow the header.
constexpr int data_tag(std::uint64_t run, std::uint64_t seq) {
  return run_base(run) + tag_range + static_cast<int>(seq % tag_range);
}
/// A payload in the agreed form: its values alone.
constexpr int agreed_tag(std::uint64_t run, std::uint64_t seq) {
  return run_base(run) + 2 * tag_range + static_cast<int>(seq % tag_range);
}

}  // namespace ppipe::mpi::detail
