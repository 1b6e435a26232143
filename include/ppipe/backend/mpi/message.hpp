#pragma once
/// @file
/// @brief The bytes the MPI transport sends: a payload's shapes (with its values when they are
/// small), a rank's end-of-run report, and the plain byte writer and reader behind both.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/tensor/bytes.hpp"
#include "ppipe/error.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/distributed.hpp"

namespace ppipe::mpi::detail {

using ppipe::detail::byte_reader;
using ppipe::detail::byte_writer;

/// The first word of a payload header: its values follow in the same message (inline) or in one
/// message per tensor after it (separate).
enum class layout : std::uint32_t { inline_values = 0x70704d49u, separate_values = 0x70704d53u };

/// Writes the header of `data` into `out` (resized to it): its layout, then its shapes; with
/// inline values, the values follow.
inline void write_header(std::vector<std::byte>& out, const payload& data, bool with_values) {
  out.resize(sizeof(layout) + ppipe::detail::shapes_bytes(data) + (with_values ? bytes_of(data) : 0));
  ppipe::detail::byte_cursor w(out.data(), out.size());
  w.put(with_values ? layout::inline_values : layout::separate_values);
  ppipe::detail::write_shapes(w, data);
  if (with_values) ppipe::detail::write_values(w, data);
}

/// Reads a header into `into`: its tensors are kept when their shapes are the header's (a receive
/// into recycled buffers allocates nothing) and replaced by zero-filled tensors of the header's
/// shapes otherwise. Returns whether the values came with the header; then they are copied in,
/// else the caller receives them into `into`'s tensors.
inline bool read_header(const std::byte* bytes, std::size_t size, payload& into) {
  byte_reader r(bytes, size, "payload header");
  const auto kind = r.get<layout>();
  if (kind != layout::inline_values && kind != layout::separate_values) {
    ppipe::detail::fail(errc::backend, "a message on ppipe's data channel does not start with a payload header; "
                        "every process of the job must run the same build of the program, and nothing else may "
                        "use ppipe's communicator");
  }
  if (byte_reader probe = r; ppipe::detail::read_same_shapes(probe, into)) {
    r = probe;
  } else {
    into = ppipe::detail::zero_payload(ppipe::detail::read_shapes(r));
  }
  const bool with_values = kind == layout::inline_values;
  if (with_values && r.left() != bytes_of(into)) {
    ppipe::detail::fail(errc::backend, "a payload message carries ", r.left(), " bytes of values for tensors of ",
                        bytes_of(into), " bytes");
  }
  if (with_values) ppipe::detail::read_values(r, into);
  return with_values;
}

/// An error code from another process: a known one, or stage_failed.
inline errc errc_from_wire(std::int32_t code) {
  return code >= static_cast<int>(errc::invalid_argument) && code <= static_cast<int>(errc::stage_failed)
             ? static_cast<errc>(code)
             : errc::stage_failed;
}

/// A rank's end-of-run report, as one process sends it to another: the outcome, the run it is
/// about, and how many payloads the sender sent to the receiver in that run.
struct wire_report {
  rank_outcome report;
  std::uint64_t run = 0;
  std::uint64_t sent_to_you = 0;
};

inline std::vector<std::byte> write_report(const wire_report& w) {
  std::vector<std::byte> out;
  byte_writer b(out);
  b.put(static_cast<std::uint32_t>(0x70705250u));
  b.put(static_cast<std::uint8_t>(w.report.what));
  b.put(static_cast<std::int32_t>(w.report.code));
  b.put(w.run);
  b.put(w.sent_to_you);
  b.text(w.report.message);
  return out;
}

inline wire_report read_report(const std::byte* bytes, std::size_t size) {
  byte_reader r(bytes, size, "end-of-run report");
  if (r.get<std::uint32_t>() != 0x70705250u) {
    ppipe::detail::fail(errc::backend, "a message on ppipe's control channel is not an end-of-run report; every "
                        "process of the job must run the same build of the program");
  }
  wire_report w;
  const auto what = r.get<std::uint8_t>();
  if (what > static_cast<std::uint8_t>(rank_outcome::outcome::aborted)) {
    ppipe::detail::fail(errc::backend, "an end-of-run report has outcome ", int{what});
  }
  w.report.what = static_cast<rank_outcome::outcome>(what);
  w.report.code = errc_from_wire(r.get<std::int32_t>());
  w.run = r.get<std::uint64_t>();
  w.sent_to_you = r.get<std::uint64_t>();
  w.report.message = r.text();
  return w;
}

}  // namespace ppipe::mpi::detail
