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

#include "ppipe/detail/bytes.hpp"
#include "ppipe/error.hpp"
#include "ppipe/runtime/tensor.hpp"
#include "ppipe/transport/distributed.hpp"

namespace ppipe::mpi::detail {

using ppipe::detail::byte_reader;
using ppipe::detail::byte_writer;

/// The first word of a payload header: its values follow in the same message (inline) or in one
/// message per tensor after it (separate).
enum class layout : std::uint32_t { inline_values = 0x70704d49u, separate_values = 0x70704d53u };

/// Most tensors, and most dimensions per tensor, a header may describe (a sanity bound on what a
/// receiver allocates from a message).
inline constexpr std::uint32_t max_tensors = 1024;
inline constexpr std::uint32_t max_dims = 16;

/// Writes the header of `data`: its layout, then per tensor its dimensions; with inline values, the
/// values follow.
inline void write_header(std::vector<std::byte>& out, const payload& data, bool with_values) {
  if (data.size() > max_tensors) {
    ppipe::detail::fail(errc::invalid_argument, "a payload of ", data.size(), " tensors cannot be sent; the MPI "
                        "transport sends at most ", max_tensors, " tensors per message: concatenate some of them");
  }
  byte_writer w(out);
  w.put(with_values ? layout::inline_values : layout::separate_values);
  w.put(static_cast<std::uint32_t>(data.size()));
  for (const host_tensor& t : data) {
    const auto& dims = t.shape().dims();
    if (dims.size() > max_dims) {
      ppipe::detail::fail(errc::invalid_argument, "a tensor of shape ", to_string(t.shape()), " has ", dims.size(),
                          " dimensions; the MPI transport sends at most ", max_dims, ": reshape it");
    }
    w.put(static_cast<std::uint32_t>(dims.size()));
    for (const std::int64_t d : dims) w.put(d);
  }
  if (with_values) {
    for (const host_tensor& t : data) w.raw(t.data(), t.bytes());
  }
}

/// Reads a header: the payload's tensors, zero-filled in their shapes, and whether their values
/// came with it (then they are filled in).
inline std::pair<payload, bool> read_header(const std::byte* bytes, std::size_t size) {
  byte_reader r(bytes, size, "payload header");
  const auto kind = r.get<layout>();
  if (kind != layout::inline_values && kind != layout::separate_values) {
    ppipe::detail::fail(errc::backend, "a message on ppipe's data channel does not start with a payload header; "
                        "every process of the job must run the same build of the program, and nothing else may "
                        "use ppipe's communicator");
  }
  const auto n = r.get<std::uint32_t>();
  if (n > max_tensors) ppipe::detail::fail(errc::backend, "a payload header announces ", n, " tensors, more than ", max_tensors);
  payload out;
  out.reserve(n);
  for (std::uint32_t k = 0; k < n; ++k) {
    const auto rank = r.get<std::uint32_t>();
    if (rank > max_dims) ppipe::detail::fail(errc::backend, "a payload header announces a tensor of ", rank, " dimensions");
    std::vector<std::int64_t> dims(rank);
    for (std::int64_t& d : dims) {
      d = r.get<std::int64_t>();
      if (d < 0) ppipe::detail::fail(errc::backend, "a payload header announces a dimension of ", d);
    }
    out.emplace_back(shape(std::move(dims)));
  }
  const bool with_values = kind == layout::inline_values;
  if (with_values) {
    std::size_t want = 0;
    for (const host_tensor& t : out) want += t.bytes();
    if (r.left() != want) {
      ppipe::detail::fail(errc::backend, "a payload message carries ", r.left(), " bytes of values for tensors of ",
                          want, " bytes");
    }
    for (host_tensor& t : out) r.raw(t.data(), t.bytes());
  }
  return {std::move(out), with_values};
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
  const auto code = r.get<std::int32_t>();
  w.report.code = code >= static_cast<int>(errc::invalid_argument) && code <= static_cast<int>(errc::stage_failed)
                      ? static_cast<errc>(code)
                      : errc::stage_failed;
  w.run = r.get<std::uint64_t>();
  w.sent_to_you = r.get<std::uint64_t>();
  w.report.message = r.text();
  return w;
}

}  // namespace ppipe::mpi::detail
