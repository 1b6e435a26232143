#pragma once
/// @file
/// @brief How the processes of an MPI job check, before any payload moves, that they hold the same
/// pipeline: a fingerprint of what must agree, exchanged over a communicator, and on a mismatch
/// the values themselves, so that every process can name what differs and where.

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ppipe/backend/mpi/error.hpp"
#include "ppipe/backend/mpi/roster.hpp"
#include "ppipe/tensor/bytes.hpp"
#include "ppipe/error.hpp"
#include "ppipe/transport/distributed.hpp"

namespace ppipe::mpi::detail {

/// What one process brings to a comparison: a problem it already knows of (from an earlier
/// comparison, to pass on), and its fields.
struct agreement_record {
  std::string problem;
  std::vector<agreement_field> fields;
};

/// FNV-1a over the record: what the processes compare first, 8 bytes each; the fields themselves
/// cross only when the fingerprints differ.
inline std::uint64_t fingerprint(const agreement_record& r) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  const auto mix = [&](std::string_view s) {
    for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
    h = (h ^ 0xffU) * 0x100000001b3ULL;  // a separator, so "ab"+"c" and "a"+"bc" differ
  };
  mix(r.problem);
  for (const agreement_field& f : r.fields) {
    mix(f.name);
    mix(f.value);
    mix(f.per_rank ? "1" : "0");
  }
  return h;
}

inline std::vector<std::byte> write_record(const agreement_record& r) {
  std::vector<std::byte> out;
  ppipe::detail::byte_writer w(out);
  w.text(r.problem);
  w.put(static_cast<std::uint64_t>(r.fields.size()));
  for (const agreement_field& f : r.fields) {
    w.text(f.name);
    w.text(f.value);
    w.put(static_cast<std::uint8_t>(f.per_rank ? 1 : 0));
  }
  return out;
}

inline agreement_record read_record(const std::byte* bytes, std::size_t size) {
  ppipe::detail::byte_reader r(bytes, size, "pipeline agreement");
  agreement_record out;
  out.problem = r.text();
  const auto n = r.get<std::uint64_t>();
  // Each field takes at least 17 bytes: a bound on what a malformed count could make us allocate.
  if (n > r.left() / 17) {
    ppipe::detail::fail(errc::backend, "a pipeline agreement message announces ", n, " fields in ", size,
                        " bytes; every process of the job must run the same build of the program");
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    agreement_field f;
    f.name = r.text();
    f.value = r.text();
    f.per_rank = r.get<std::uint8_t>() != 0;
    out.fields.push_back(std::move(f));
  }
  return out;
}

/// A value as a message quotes it: at most 300 characters.
inline std::string quoted_value(const std::string& v) {
  return v.size() <= 300 ? v : v.substr(0, 300) + "...";
}

/// The first difference between the fields `a` holds (the process named `a_name`) and those of
/// `b`, as a sentence naming both sides; empty when there is none.
inline std::string difference(const std::vector<agreement_field>& a, const std::string& a_name,
                              const std::vector<agreement_field>& b, const std::string& b_name) {
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const agreement_field* x = i < a.size() ? &a[i] : nullptr;
    const agreement_field* y = i < b.size() ? &b[i] : nullptr;
    if (x != nullptr && y != nullptr && x->name == y->name) {
      if (x->value == y->value) continue;
      return ppipe::detail::concat("the processes disagree on ", x->name, ": ", a_name, " has ", quoted_value(x->value),
                                   ", ", b_name, " has ", quoted_value(y->value));
    }
    const auto what = [](const agreement_field* f) {
      return f == nullptr ? std::string("nothing more") : ppipe::detail::concat(f->name, " = ", quoted_value(f->value));
    };
    return ppipe::detail::concat("the processes disagree on what they compare: ", a_name, " has ", what(x), " where ",
                                 b_name, " has ", what(y));
  }
  return {};
}

/// Compares `mine` with every other process's record over `comm` (collective) and returns the
/// same text on every process: empty when all records are alike; else the problem the lowest
/// process brought, or the first difference between process 0's fields and the first process
/// whose fields differ. `name(k)` names process k of `comm`; `wait(request, what)` waits for a
/// request to complete (and throws when it cannot).
template <class Name, class Wait>
std::string compare_over(MPI_Comm comm, const agreement_record& mine, Name&& name, Wait&& wait) {
  int size = 0;
  PPIPE_MPI_CHECK(MPI_Comm_size(comm, &size));
  const std::uint64_t h = fingerprint(mine);
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size));
  MPI_Request req = MPI_REQUEST_NULL;
  PPIPE_MPI_CHECK(MPI_Iallgather(&h, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, comm, &req));
  wait(req, "to compare what they must agree on");
  if (std::all_of(all.begin(), all.end(), [&](std::uint64_t x) { return x == all.front(); })) return mine.problem;

  // They differ: every process gets every record, sizes first.
  const std::vector<std::byte> bytes = write_record(mine);
  const auto n = static_cast<std::uint64_t>(bytes.size());
  std::vector<std::uint64_t> sizes(static_cast<std::size_t>(size));
  PPIPE_MPI_CHECK(MPI_Iallgather(&n, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, comm, &req));
  wait(req, "to say how much they must compare");
  std::vector<int> counts;
  std::vector<int> offsets;
  std::uint64_t total = 0;
  for (const std::uint64_t s : sizes) {
    offsets.push_back(static_cast<int>(total));
    counts.push_back(static_cast<int>(s));
    total += s;
    if (total > static_cast<std::uint64_t>(INT_MAX)) {
      ppipe::detail::fail(errc::unsupported, "the processes' pipeline descriptions take more than ", INT_MAX,
                          " bytes together; build the pipeline with fewer microbatches or stages");
    }
  }
  std::vector<std::byte> gathered(static_cast<std::size_t>(total));
  PPIPE_MPI_CHECK(MPI_Iallgatherv(bytes.data(), static_cast<int>(n), MPI_BYTE, gathered.data(), counts.data(),
                                  offsets.data(), MPI_BYTE, comm, &req));
  wait(req, "to exchange what they must agree on");
  std::vector<agreement_record> records;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    records.push_back(read_record(gathered.data() + offsets[k], static_cast<std::size_t>(sizes[k])));
  }
  for (const agreement_record& r : records) {
    if (!r.problem.empty()) return r.problem;
  }
  for (std::size_t k = 1; k < records.size(); ++k) {
    if (all[k] == all.front()) continue;
    std::string d = difference(records.front().fields, name(0), records[k].fields, name(static_cast<int>(k)));
    if (!d.empty()) return d;
  }
  return {};
}

/// Compares `mine` with every other process's fields, and throws on every process the same
/// ppipe::error (invalid_argument) naming a process's `problem` (the lowest rank's), or else the
/// first field that differs; or returns on all. `wait(request, what)` is the collectives' wait
/// (see collectives.hpp): false once it has reported that it waited for `what()` too long.
template <class Wait>
void agree(const roster& who, const std::vector<agreement_field>& mine, std::string_view problem, Wait&& wait) {
  const auto wait_or_throw = [&](MPI_Request& req, const char* what) {
    if (wait(req, [&] {
          return ppipe::detail::concat("the other processes ", what, " before the run; every process must make the "
                                       "same calls on the pipeline");
        })) {
      return;
    }
    ppipe::detail::fail(errc::timeout, who.describe_rank(who.rank()),
                        " timed out comparing the pipeline with the other processes");
  };
  // The replicas first, with every field: what they find reaches the whole pipeline next, and
  // every pipeline holds one process of each replica group, so all processes end alike.
  agreement_record record;
  if (!problem.empty()) {
    record.problem = ppipe::detail::concat(who.describe_rank(who.rank()), " could not go on: ", problem);
  }
  if (who.replica_count() > 1) {
    record.fields = mine;
    record.problem = compare_over(who.replica_comm(), record, [&](int k) { return who.describe_replica(k); },
                                  wait_or_throw);
    record.fields.clear();
  }
  for (const agreement_field& f : mine) {
    if (!f.per_rank) record.fields.push_back(f);
  }
  record.problem = compare_over(who.pipeline(), record, [&](int q) { return who.describe_rank(q); }, wait_or_throw);
  if (!record.problem.empty()) {
    ppipe::detail::fail(errc::invalid_argument, record.problem, "; every process must build the same pipeline (model, "
                        "schedule, split, m) and pass batches of the same shapes");
  }
}

}  // namespace ppipe::mpi::detail
