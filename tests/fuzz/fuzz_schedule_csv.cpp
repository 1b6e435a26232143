// libFuzzer target for ppipe's schedule files (ppipe/schedule/csv.hpp). Any input must either load
// or be refused with a ppipe::error; anything else (another exception, a crash, a sanitizer report,
// a hang) is a bug. What loads must survive a round trip: written with its transfers and read back
// it is the same schedule; written compute-only and read back it has the same compute order.
// Build and run: scripts/fuzz.sh [seconds]
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <ppipe/schedule/csv.hpp>

namespace {

[[noreturn]] void bug(const char* what, const std::string& text) {
  std::fprintf(stderr, "fuzz_schedule_csv: %s\n--- written text ---\n%s\n", what, text.c_str());
  std::abort();
}

std::vector<std::vector<ppipe::action>> compute_of(const ppipe::schedule& s) {
  std::vector<std::vector<ppipe::action>> out(s.ranks.size());
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    for (const ppipe::action& a : s.ranks[r]) {
      if (ppipe::is_compute(a.kind)) out[r].push_back(a);
    }
  }
  return out;
}

bool same(const ppipe::schedule& a, const ppipe::schedule& b) {
  return a.ranks == b.ranks && a.place == b.place && a.place.style() == b.place.style() &&
         a.microbatches == b.microbatches && a.mode == b.mode && a.name == b.name;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ppipe::schedule loaded;
  try {
    loaded = ppipe::from_csv(text);
  } catch (const ppipe::error&) {
    return 0;  // refused with ppipe's own error: fine
  }

  // With transfers: the exact schedule comes back, and writing it again gives the same text.
  const std::string full = ppipe::to_csv(loaded, {true});
  ppipe::schedule again;
  try {
    again = ppipe::from_csv(full);
  } catch (const ppipe::error& e) {
    bug(e.what(), full);
  }
  if (!same(loaded, again)) bug("reading the written schedule (with transfers) gave another schedule", full);
  if (ppipe::to_csv(again, {true}) != full) bug("writing the schedule twice gave two texts", full);

  // Compute only: the same compute order, placement, m and mode come back. A file that had no
  // transfers must load again (its compute order ran once with one of ppipe's lowerings, and the
  // lowering by time steps works with the written columns whenever it worked with the file's);
  // one that had its own may be refused (its order need not run with ppipe's lowerings).
  const bool own_transfers = text.find("SEND_") != std::string_view::npos ||
                             text.find("RECV_") != std::string_view::npos;
  const std::string compute = ppipe::to_csv(loaded);
  try {
    const ppipe::schedule reread = ppipe::from_csv(compute);
    if (compute_of(reread) != compute_of(loaded) || !(reread.place == loaded.place) ||
        reread.microbatches != loaded.microbatches || reread.mode != loaded.mode) {
      bug("reading the compute-only text changed the compute order, placement, m or mode", compute);
    }
    if (ppipe::to_csv(reread) != compute) bug("writing the compute-only schedule twice gave two texts", compute);
  } catch (const ppipe::error& e) {
    if (!own_transfers) bug(e.what(), compute);
  }
  return 0;
}
