#pragma once
/// @file
/// @brief detail::race_checker: reports, when work is enqueued, an access to device memory that is
/// not ordered after a conflicting access from another stream, as compute-sanitizer's racecheck
/// would on a GPU. Deciding on the host from vector clocks makes a race fail every run, not only
/// the runs whose timing happens to expose it.

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/device/stream_device.hpp"
#include "ppipe/device/vector_clock.hpp"
#include "ppipe/error.hpp"

namespace ppipe::detail {

/// Where an access sits in stream order: item `tick` of stream `stream`, and what that item is.
/// The label is shared and filled in later when the access is declared before its item (use()).
struct access_site {
  std::size_t stream = 0;
  std::uint64_t tick = 0;
  std::shared_ptr<std::string> label;
};

/// The access history of each block a device allocated. Not thread-safe: the device calls it
/// under its own lock, in the order work is enqueued.
class race_checker {
 public:
  /// Registers a stream's name, for messages; streams are numbered in the order they are added.
  void add_stream(std::string name) { names_.push_back(std::move(name)); }

  /// A block (new or reused) now belongs to the caller of allocate() on `site.stream`: the
  /// allocation counts as a write there, so another stream must be ordered after it first.
  void on_allocate(const void* base, std::size_t size, const access_site& site) {
    block& b = blocks_[address(base)];
    b.size = size;
    b.live = true;
    b.history.clear();  // everything before was ordered before the release the allocator reuses
    b.history.push_back({0, size, access::write, site});
  }

  /// A release counts as a write of the whole block (a free races with an unordered use), after
  /// which any use is a use after release.
  void on_release(const void* base, const vector_clock& clock, const access_site& site) {
    const auto it = blocks_.find(address(base));
    if (it == blocks_.end()) return;
    check_block(it->first, it->second, 0, it->second.size, access::write, clock, site);
    it->second.live = false;
    it->second.history.clear();
    it->second.history.push_back({0, it->second.size, access::write, site});
  }

  /// Stops watching a block (memory the device did not allocate, handed back to its owner).
  void forget(const void* base) { blocks_.erase(address(base)); }

  /// Checks an access of `[p, p + bytes)` by the item at `site`, whose stream's clock is `clock`,
  /// and remembers it. Memory that no block holds is not the device's and is ignored.
  void check(const void* p, std::size_t bytes, access mode, const vector_clock& clock, const access_site& site) {
    if (bytes == 0 || blocks_.empty()) return;
    const std::uintptr_t at = address(p);
    auto it = blocks_.upper_bound(at);
    if (it == blocks_.begin()) return;
    --it;
    const std::uintptr_t base = it->first;
    block& b = it->second;
    if (at >= base + b.size) return;
    const std::size_t offset = at - base;
    if (bytes > b.size - offset) {
      fail(errc::invalid_argument, "stream '", name(site.stream), "' declares ", bytes, " bytes at offset ", offset,
           " of buffer ", p_of(base), " (", b.size, " bytes) in ", describe(site),
           ", which runs past the buffer's end: declare at most ", b.size - offset, " bytes there");
    }
    if (!b.live) {
      const access_site& freed = b.history.front().site;
      fail(errc::invalid_argument, "stream '", name(site.stream), "' ", verb(mode), " buffer ", p_of(base), " (",
           b.size, " bytes) at offset ", offset, " in ", describe(site), " after it was released on stream '",
           name(freed.stream), "' in ", describe(freed), ": release a buffer only after its last use");
    }
    check_block(base, b, offset, bytes, mode, clock, site);
  }

 private:
  struct record {
    std::size_t offset;
    std::size_t size;
    access mode;
    access_site site;
  };
  struct block {
    std::size_t size = 0;
    bool live = false;
    std::vector<record> history;  // every access not superseded by a later ordered one
  };

  static std::uintptr_t address(const void* p) noexcept { return reinterpret_cast<std::uintptr_t>(p); }
  static const void* p_of(std::uintptr_t a) noexcept { return reinterpret_cast<const void*>(a); }
  static const char* verb(access m) noexcept { return m == access::read ? "reads" : "writes"; }

  [[nodiscard]] const std::string& name(std::size_t stream) const { return names_.at(stream); }

  [[nodiscard]] std::string describe(const access_site& s) const {
    if (s.label == nullptr || s.label->empty()) {
      return concat("the item enqueued next on '", name(s.stream), "' (item ", s.tick, ")");
    }
    return concat("'", *s.label, "' (item ", s.tick, " of '", name(s.stream), "')");
  }

  void check_block(std::uintptr_t base, block& b, std::size_t offset, std::size_t bytes, access mode,
                   const vector_clock& clock, const access_site& site) {
    for (const record& r : b.history) {
      const bool overlaps = r.offset < offset + bytes && offset < r.offset + r.size;
      const bool conflicts = mode == access::write || r.mode == access::write;
      if (!overlaps || !conflicts || ordered(r.site, site.stream, clock)) continue;
      const char* kind = mode == access::read ? "read after write"
                         : r.mode == access::read ? "write after read"
                                                  : "write after write";
      fail(errc::invalid_schedule, "unordered access (", kind, ") to buffer ", p_of(base), " (", b.size,
           " bytes): stream '", name(site.stream), "' ", verb(mode), " bytes [", offset, ", ", offset + bytes,
           ") in ", describe(site), ", which is not ordered after stream '", name(r.site.stream), "', which ",
           verb(r.mode), " bytes [", r.offset, ", ", r.offset + r.size, ") in ", describe(r.site),
           ". Fix: record an event on '", name(r.site.stream), "' after ", describe(r.site), " and wait for it on '",
           name(site.stream), "' before ", describe(site));
    }
    // A covered record ordered before the new access adds nothing: whatever conflicts with it
    // and is not ordered after it also conflicts with the new access (a write; or both reads).
    std::erase_if(b.history, [&](const record& r) {
      const bool covered = offset <= r.offset && r.offset + r.size <= offset + bytes;
      return covered && (mode == access::write || r.mode == access::read) && ordered(r.site, site.stream, clock);
    });
    b.history.push_back({offset, bytes, mode, site});
  }

  static bool ordered(const access_site& before, std::size_t stream, const vector_clock& clock) noexcept {
    return before.stream == stream || clock.covers(before.stream, before.tick);
  }

  std::map<std::uintptr_t, block> blocks_;
  std::vector<std::string> names_;
};

}  // namespace ppipe::detail
