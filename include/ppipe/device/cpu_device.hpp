#pragma once
/// @file
/// @brief ppipe::cpu_stream_device, the CPU model of stream_device that CI runs: a worker thread
/// per stream, events as completion marks, a stream-ordered pool, and aids a GPU does not give:
/// seeded random delays, poisoned memory and a race checker that fails at the first unordered
/// access, naming both streams.

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/device/cpu_allocator.hpp"
#include "ppipe/device/cpu_graph.hpp"
#include "ppipe/device/cpu_stream.hpp"
#include "ppipe/device/race_checker.hpp"
#include "ppipe/device/stream_device.hpp"
#include "ppipe/device/vector_clock.hpp"
#include "ppipe/device/wait.hpp"
#include "ppipe/error.hpp"

namespace ppipe {

namespace detail {
/// What devices that exchange events and memory share (the GPUs of one process do): the lock over
/// the host's view, the completion signal their streams wait on, the race checker that watches
/// every block any of them allocated, what the host has seen complete, and the numbering of
/// streams, which vector clocks index. A device made alone has a space of its own.
struct cpu_device_space {
  completion_signal signal;
  race_checker checker;
  std::mutex mutex;
  vector_clock host_clock;        // what the host has seen complete (synchronize() returned ready)
  std::uint64_t host_version = 0;
  std::size_t streams = 0;        // streams made so far, across the space's devices
  // The memory group of every block the space's devices took from the system, by address: a
  // device reaches only its own group's memory, as a GPU reaches only its peers'.
  struct home {
    std::size_t size;
    std::size_t group;
  };
  std::map<std::uintptr_t, home> homes;
  std::size_t groups = 1;  // memory groups made so far
};

/// The memory a capture allocated: the graph's, at the same addresses in every launch, freed when
/// the last graph handle and the last launched item that uses it are gone; the space then
/// forgets it (if the devices are still there).
struct cpu_graph_memory {
  std::weak_ptr<cpu_device_space> space;
  std::vector<std::pair<void*, std::size_t>> blocks;
  cpu_graph_memory() = default;
  cpu_graph_memory(const cpu_graph_memory&) = delete;
  cpu_graph_memory& operator=(const cpu_graph_memory&) = delete;
  ~cpu_graph_memory() {
    if (const auto sp = space.lock()) {
      const std::lock_guard lock(sp->mutex);
      for (const auto& [p, size] : blocks) {
        sp->homes.erase(reinterpret_cast<std::uintptr_t>(p));
        sp->checker.forget(p);
      }
    }
    for (const auto& [p, size] : blocks) ::operator delete(p, std::align_val_t{64});
  }
};
}  // namespace detail

/// @brief What a device made as another's peer shares with it (see cpu_stream_device).
enum class peer_link : unsigned char {
  /// Events and memory, as GPUs with peer access: streams wait for each other's events and copies
  /// read and write each other's memory.
  events_and_memory,
  /// Events only, as GPUs without peer access: streams wait for each other's events, but a copy
  /// that touches the other's memory fails; payloads cross through host staging memory.
  events_only,
};

/// @brief How a cpu_stream_device shakes out ordering bugs.
struct cpu_device_options {
  /// @brief Seeds the random delays; the same seed gives each stream the same delays.
  std::uint64_t seed = 0;
  /// @brief The longest random delay before each item of a stream; zero for none.
  std::chrono::microseconds max_delay{0};
  /// @brief Fill fresh allocations, and released blocks when their stream reaches the release,
  /// with quiet NaN bytes, so that reading memory nobody wrote shows.
  bool poison = true;
  /// @brief Check every declared access (use(), copy_async(), zero_async(), release()) against
  /// stream order and throw at the first unordered one.
  bool check_races = true;
  /// @brief Whether host work enqueued on the device may block waiting for something else (here
  /// it may: each stream is a thread). False claims what a GPU claims, where host work runs on the
  /// driver's threads and must return promptly, so that tests see the runtime refuse the paths
  /// that would block in it.
  bool host_work_may_wait = true;
};

/// @brief The CPU model of a stream_device (and capturing_stream_device).
///
/// Each stream is a worker thread that runs its items in order; events complete when a worker
/// reaches their record. Ordering is also tracked on the host with vector clocks (each item ticks
/// its stream, a record snapshots the clock, a wait joins it, and a synchronize() that returns ready
/// orders all later work after what it waited for, as the host's own order does on a GPU), which
/// decides two things when work
/// is enqueued, independently of timing: whether a declared access races (check_races), and
/// whether a released block may be reused by an allocation on another stream.
///
/// Failures: work that throws sets the sticky error() (the first one wins), prefixed with the
/// stream's name and the item's label, the original nested. From then on, until clear_error(),
/// every stream skips host work, copies and zeroes, but still completes event records and waits,
/// and still performs releases, so nothing waiting on an event hangs and memory stays accounted.
/// abort() makes the streams skip work in the same way, without an error.
///
/// Thread safety: any thread may enqueue on any stream; work from several threads onto one stream
/// runs in the order the calls took the device's lock. Host work may enqueue more work, but must
/// not synchronize its own stream (it would wait for itself; CUDA forbids API calls in host
/// functions altogether). Destruction runs what is queued, then joins every worker; streams live
/// as long as the device.
class cpu_stream_device {
 public:
  /// @brief A handle to a stream of this device; default-constructed, it names none.
  class stream {
   public:
    stream() = default;
    /// @brief The name given to create_stream() (empty for a default-constructed handle).
    /// @return a view of the name, valid as long as the device that made the stream.
    [[nodiscard]] std::string_view name() const noexcept {
      return impl_ != nullptr ? std::string_view(impl_->name()) : std::string_view();
    }
    /// @brief Whether two handles name the same stream of the same device (two default-constructed
    /// handles compare equal).
    /// @return true for the same stream.
    friend bool operator==(const stream&, const stream&) noexcept = default;

   private:
    friend class cpu_stream_device;
    stream(const cpu_stream_device* owner, detail::cpu_stream* impl, std::size_t local)
        : owner_(owner), impl_(impl), local_(local) {}
    const cpu_stream_device* owner_ = nullptr;
    detail::cpu_stream* impl_ = nullptr;
    std::size_t local_ = 0;  // its place among the device's own streams
  };

  /// @brief An event: a completion mark shared by its copies. Default-constructed, it counts as
  /// complete and orders nothing.
  class event {
   public:
    event() = default;

   private:
    friend class cpu_stream_device;
    explicit event(std::shared_ptr<detail::event_mark> mark) : mark_(std::move(mark)) {}
    std::shared_ptr<detail::event_mark> mark_;
  };

  /// @brief What one stream's capture recorded (see cpu_graph).
  using graph = cpu_graph;

  /// @brief Makes a device with no streams yet.
  /// @param options delays, poisoning and race checking.
  explicit cpu_stream_device(cpu_device_options options = {})
      : cpu_stream_device(options, std::make_shared<detail::cpu_device_space>()) {}

  /// @brief Makes a device that exchanges events, and memory unless `link` says otherwise, with
  /// `peer` and its peers, as GPUs of one process do: its streams may wait for their events, its
  /// copies may read and write the memory of those it shares memory with, and one race checker
  /// watches all of their memory. Each keeps its own pool, streams and sticky error.
  /// @param options delays, poisoning and race checking.
  /// @param peer a device of the space to join.
  /// @param link events_only for a device that does not reach the others' memory, nor they its,
  /// as GPUs without peer access.
  cpu_stream_device(cpu_device_options options, const cpu_stream_device& peer,
                    peer_link link = peer_link::events_and_memory)
      : cpu_stream_device(options, peer.space_, peer.group_) {
    if (link == peer_link::events_only) {
      const std::lock_guard lock(mutex_);
      group_ = space_->groups++;
    }
  }

  /// @brief Whether this device and `other` exchange events (one is the other, or one was made as
  /// the other's peer).
  /// @param other a device
  /// @return true for the device itself and its peers
  [[nodiscard]] bool peer_of(const cpu_stream_device& other) const noexcept { return space_ == other.space_; }

  /// @brief Whether this device's copies may read and write `other`'s memory: a peer made with
  /// peer_link::events_and_memory (or the device itself).
  /// @param other a device
  /// @return true where copies may touch its memory
  [[nodiscard]] bool reaches(const cpu_stream_device& other) const noexcept {
    return peer_of(other) && group_ == other.group_;
  }

  /// @brief Whether host work may block waiting for something else (cpu_device_options).
  /// @return the option's value
  [[nodiscard]] bool host_work_may_wait() const noexcept { return options_.host_work_may_wait; }

  cpu_stream_device(const cpu_stream_device&) = delete;
  cpu_stream_device& operator=(const cpu_stream_device&) = delete;

  /// @brief Runs the work every stream has queued, then joins the workers; frees the host memory
  /// still out. Its peers forget its memory, which the system may hand to them next.
  ~cpu_stream_device() {
    lanes_.clear();
    {
      const std::lock_guard lock(mutex_);
      allocator_.each_block([this](void* p, std::size_t /*size*/) {
        space_->homes.erase(reinterpret_cast<std::uintptr_t>(p));
        checker_.forget(p);
      });
      for (const auto& [p, bytes] : host_blocks_) checker_.forget(p);  // a track()ed block not retired
    }
    for (const auto& [p, bytes] : host_blocks_) ::operator delete(p, std::align_val_t{64});
  }

  /// @brief Makes a stream: a worker thread that lives as long as the device.
  /// @param name what the stream is for, as messages show it ("rank 1 compute").
  /// @return its handle.
  [[nodiscard]] stream create_stream(std::string_view name) {
    const std::lock_guard lock(mutex_);
    const std::size_t local = add_lane(name);
    return {this, lanes_[local]->worker.get(), local};
  }

  /// @brief Enqueues host work, labelled "host work".
  /// @param s the stream.
  /// @param fn a `void()` callable, run on the stream's worker after the work enqueued before it.
  template <std::invocable F>
  void enqueue(stream s, F&& fn) {
    enqueue(s, std::forward<F>(fn), "host work");
  }

  /// @brief Enqueues host work (cudaLaunchHostFunc).
  /// @param s the stream.
  /// @param fn a `void()` callable, run on the stream's worker after the work enqueued before it.
  /// @param label what the work is ("F3 of stage 1"), named if it throws or hangs.
  template <std::invocable F>
  void enqueue(stream s, F&& fn, std::string_view label) {
    const std::lock_guard lock(mutex_);
    push_work(lane_of(s), detail::stream_item::kind::work, detail::cpu_task(std::forward<F>(fn)), label);
  }

  /// @brief Records a fresh event on `s`: it completes once the work enqueued before it has run.
  /// Returns at once; the stream's worker completes the event when it reaches it. While `s` is
  /// capturing, the record is a node of the graph instead: only wait() on streams of this device
  /// may use the event, and it completes only in a launch.
  /// @param s a stream of this device (else ppipe::error, invalid_argument).
  /// @return the event.
  [[nodiscard]] event record(stream s) {
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    auto mark = std::make_shared<detail::event_mark>();
    mark->owner = space_.get();
    mark->stream = l.worker->index();
    mark->stream_name = l.worker->name();
    if (l.session) {  // a node of the graph: it orders the capture's streams among themselves
      capture_session& c = *l.session;
      mark->of_capture = true;
      mark->capture = l.session;
      mark->known = c.known[l.branch];
      mark->known.resize(c.branches.size());
      mark->known[l.branch] = c.work[l.branch];
      c.items.push_back({detail::stream_item::kind::record, nullptr, mark, "record", {}, l.branch});
      return event(std::move(mark));
    }
    mark->clock = l.clock;
    l.worker->push({detail::stream_item::kind::record, {}, mark, "record"});
    return event(std::move(mark));
  }

  /// @brief Makes the work enqueued on `s` after this call wait until `e` completes
  /// (cudaStreamWaitEvent). Returns at once. An event of a peer device serves as well; a
  /// default-constructed one orders nothing. A wait for an event recorded in a capture makes `s`
  /// join that capture (see begin_capture()).
  /// @param s a stream of this device.
  /// @param e an event of this device or of one of its peers.
  /// @throws ppipe::error (invalid_argument) for a stream not of this device, an event of a device
  /// that is not a peer, or an event of a capture that has ended, is on another device, or is not
  /// the capture `s` is in.
  void wait(stream s, const event& e) {
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    if (!e.mark_) return;
    check_owner(e, "wait()");
    if (e.mark_->of_capture) {
      capture_wait(l, e);
      return;
    }
    if (l.session) {  // an event from before the capture: every launch waits for it
      l.session->items.push_back({detail::stream_item::kind::wait, nullptr, e.mark_, "wait", {}, l.branch});
      return;
    }
    l.clock.join(e.mark_->clock);
    if (!e.mark_->done.load(std::memory_order_acquire)) {
      l.worker->push({detail::stream_item::kind::wait, {}, e.mark_, "wait"});
    }
  }

  /// @brief Whether `e` has completed, without blocking.
  /// @param e an event of this device or a peer; a default-constructed one has completed.
  /// @return true once the stream it was recorded on has reached it.
  /// @throws ppipe::error (invalid_argument) for an event of a device that is not a peer, or one
  /// recorded during a capture.
  [[nodiscard]] bool query(const event& e) const {
    if (!e.mark_) return true;
    check_owner(e, "query()");
    refuse_capture_event(e, "query()");
    return e.mark_->done.load(std::memory_order_acquire);
  }

  /// @brief Blocks the calling thread until `e` completes or `deadline` passes. On ready, all work
  /// enqueued afterwards, on any stream of the device and its peers, is ordered after `e` (for the
  /// race checker and the pool).
  /// @param e an event of this device or a peer; a default-constructed one is ready at once.
  /// @param deadline when to give up (already_passed only checks).
  /// @return ready, or timed_out (see status() for what the stream is doing).
  /// @throws ppipe::error (invalid_argument) for an event of a device that is not a peer, or one
  /// recorded during a capture.
  [[nodiscard]] wait_status synchronize(const event& e, deadline_clock::time_point deadline) {
    if (!e.mark_) return wait_status::ready;
    check_owner(e, "synchronize()");
    refuse_capture_event(e, "synchronize()");
    const wait_status st = signal_.wait(*e.mark_, deadline);
    if (st == wait_status::ready) host_saw(e.mark_->clock);
    return st;
  }

  /// @brief Blocks the calling thread until the work enqueued on `s` before this call has run, or
  /// `deadline` passes; work enqueued meanwhile, from other threads, is not waited for. On ready,
  /// all work enqueued afterwards, on any stream, is ordered after it. Host work must not call
  /// this on its own stream (it would wait for itself).
  /// @param s a stream of this device.
  /// @param deadline when to give up (already_passed only checks).
  /// @return ready, or timed_out (see status() for what the stream is doing).
  /// @throws ppipe::error (invalid_argument) for a stream not of this device, or one capturing.
  [[nodiscard]] wait_status synchronize(stream s, deadline_clock::time_point deadline) {
    std::uint64_t count = 0;
    detail::vector_clock upto;
    {
      const std::lock_guard lock(mutex_);
      lane& l = lane_of(s);
      refuse_while_capturing(l, "synchronize()");
      count = l.worker->pushed();
      upto = l.clock;
    }
    const wait_status st = s.impl_->wait_until_done(count, deadline);
    if (st == wait_status::ready) host_saw(upto);
    return st;
  }

  /// @brief The time between two completed events.
  /// @param from the earlier event.
  /// @param to the later event.
  /// @return microseconds from `from` to `to`, negative if `to` completed first.
  [[nodiscard]] double elapsed_us(const event& from, const event& to) const {
    for (const event* e : {&from, &to}) {
      if (!e->mark_) {
        detail::fail(errc::invalid_argument, "elapsed_us() of an event never recorded: pass events from record()");
      }
      check_owner(*e, "elapsed_us()");
      refuse_capture_event(*e, "elapsed_us()");
      if (!e->mark_->done.load(std::memory_order_acquire)) {
        detail::fail(errc::invalid_argument, "elapsed_us() of an event on stream '", e->mark_->stream_name,
                     "' that has not completed: synchronize() it first");
      }
    }
    return std::chrono::duration<double, std::micro>(to.mark_->at - from.mark_->at).count();
  }

  /// @brief When a completed event completed, on the host clock: what lets a trace put every
  /// rank's events on one clock (elapsed_us() alone gives each rank its own origin).
  /// @param e a completed event of this device
  /// @return the time its stream reached it
  [[nodiscard]] deadline_clock::time_point completed_at(const event& e) const {
    static_cast<void>(elapsed_us(e, e));  // refuses an event never recorded, another's, or a pending one
    return e.mark_->at;
  }

  /// @brief Copies `bytes` bytes from `src` to `dst` in stream order; declares a read of the
  /// source and a write of the destination. Returns at once; `s`'s worker copies. Neither range may
  /// lie in memory of a device this one does not reach (see reaches()).
  /// @param s a stream of this device.
  /// @param dst where to copy to; must not overlap the source.
  /// @param src where to copy from.
  /// @param bytes how many bytes to copy (zero: nothing is copied).
  /// @param label what the copy is, for messages.
  /// @throws ppipe::error (invalid_argument) for a stream not of this device or memory of a device
  /// it does not reach. With check_races: (invalid_argument) for a range past its buffer's end or
  /// in a released buffer; (invalid_schedule) for an access not ordered after a conflicting one
  /// from another stream.
  void copy_async(stream s, void* dst, const void* src, std::size_t bytes, std::string_view label = "copy_async") {
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    declare(l, src, bytes, access::read, label);
    declare(l, dst, bytes, access::write, label);
    push_work(l, detail::stream_item::kind::work, detail::cpu_task([dst, src, bytes] {
                if (bytes != 0) std::memcpy(dst, src, bytes);
              }),
              label);
  }

  /// @brief Zeroes `bytes` bytes at `dst` in stream order; declares a write. Returns at once; `s`'s
  /// worker writes the zeroes.
  /// @param s a stream of this device.
  /// @param dst the memory to zero.
  /// @param bytes how many bytes to zero (zero: nothing is written).
  /// @param label what the zeroing is, for messages.
  /// @throws ppipe::error as copy_async() does, for the write.
  void zero_async(stream s, void* dst, std::size_t bytes, std::string_view label = "zero_async") {
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    declare(l, dst, bytes, access::write, label);
    push_work(l, detail::stream_item::kind::work, detail::cpu_task([dst, bytes] {
                if (bytes != 0) std::memset(dst, 0, bytes);
              }),
              label);
  }

  /// @brief Allocates `bytes` bytes for work on `s` (cudaMallocAsync), aligned to 64 bytes.
  /// Another stream may use the memory once it is ordered after this call. Returns at once; with
  /// poison on, work on `s` finds quiet NaN bytes there until it writes them. While `s` is
  /// capturing, the block is the graph's (see end_capture()).
  /// @param bytes the size.
  /// @param s the stream that uses the memory first (a stream of this device).
  /// @return the memory; a block released earlier when `s` is ordered after its release.
  /// @throws ppipe::error (invalid_argument) for a stream not of this device; (out_of_memory) for a
  /// size larger than any memory.
  [[nodiscard]] void* allocate(std::size_t bytes, stream s) {
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    if (l.session) return allocate_in_graph(l, bytes);
    const std::size_t index = l.worker->index();
    const auto g = allocator_.allocate(bytes, index, l.clock);
    if (!g.reused) {
      space_->homes.insert_or_assign(reinterpret_cast<std::uintptr_t>(g.p),
                                     detail::cpu_device_space::home{g.size, group_});
    }
    if (options_.check_races) {
      checker_.on_allocate(g.p, g.size,
                           {index, l.clock.get(index), std::make_shared<std::string>(detail::concat("allocate(", bytes, ")"))});
    }
    return g.p;
  }

  /// @brief Frees `p` when `s` reaches this point (cudaFreeAsync): work enqueued on `s` before
  /// may still use it, and work on other streams that uses it must be ordered before this call.
  /// @param p memory from allocate(), or nullptr (ignored).
  /// @param s the stream whose order frees it (a stream of this device).
  /// @throws ppipe::error (invalid_argument) for memory not from allocate() or already released;
  /// (invalid_schedule) with check_races, for a use on another stream not ordered before it;
  /// (unsupported) while `s` is capturing, for memory the capture did not allocate.
  void release(void* p, stream s) {
    if (p == nullptr) return;
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    if (l.session) {
      release_in_graph(l, p);
      return;
    }
    const std::size_t index = l.worker->index();
    const std::string label = detail::concat("release(", p, ")");
    const std::size_t size = allocator_.live_size(p);
    if (options_.check_races) {
      checker_.on_release(p, l.clock, {index, l.clock.get(index) + 1, label_slot(l, label)});
    }
    allocator_.release(p, index, l.clock.get(index) + 1);
    detail::cpu_task poison;
    if (allocator_.poisons()) {
      poison = detail::cpu_task([p, size] { std::memset(p, detail::cpu_allocator::poison_byte, size); });
    } else {
      poison = detail::cpu_task([] {});
    }
    push_work(l, detail::stream_item::kind::always, std::move(poison), label);
  }

  /// @brief Host memory for staging copies to and from the device, as page-locked memory is on a
  /// GPU (cudaHostAlloc): here plain memory, aligned to 64 bytes and, with poison on, filled with
  /// quiet NaN bytes, as it is again when given back, so that a copy still reading it shows.
  /// @param bytes the size (0 gives a unique non-null block of no bytes)
  /// @return the memory
  [[nodiscard]] void* allocate_host(std::size_t bytes) {
    void* p = ::operator new(std::max<std::size_t>(bytes, 1), std::align_val_t{64});
    if (options_.poison) std::memset(p, detail::cpu_allocator::poison_byte, bytes);
    const std::lock_guard lock(mutex_);
    host_blocks_.emplace(p, bytes);
    host_bytes_ += bytes;
    return p;
  }

  /// @brief Gives back memory from allocate_host(). The caller has made sure that no enqueued
  /// copy uses it any more (the streams that did have drained).
  /// @param p memory from allocate_host(), or nullptr (ignored)
  void release_host(void* p) noexcept {
    if (p == nullptr) return;
    std::size_t bytes = 0;
    {
      const std::lock_guard lock(mutex_);
      const auto it = host_blocks_.find(p);
      if (it == host_blocks_.end()) return;
      bytes = it->second;
      host_bytes_ -= bytes;
      host_blocks_.erase(it);
      checker_.forget(p);  // (if track()ed): the next owner of these addresses starts afresh
    }
    if (options_.poison) std::memset(p, detail::cpu_allocator::poison_byte, bytes);
    ::operator delete(p, std::align_val_t{64});
  }

  /// @brief Has the race checker watch memory this device did not allocate (host buffers that a
  /// backend lends to its streams) as if allocate() had just handed it to `s`: its earlier history
  /// is forgotten, and another stream must be ordered after this call before using it.
  /// @param s the stream that uses the memory first.
  /// @param p the memory; @param bytes its size.
  void track(stream s, const void* p, std::size_t bytes) {
    if (!options_.check_races || p == nullptr || bytes == 0) return;
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    const std::size_t index = l.worker->index();
    checker_.on_allocate(p, bytes, {index, l.clock.get(index), std::make_shared<std::string>("track()")});
  }

  /// @brief Ends the watch that track() began, as release() would, at this point of `s`: every use
  /// from another stream must be ordered before it.
  /// @param s the stream whose work last used the memory.
  /// @param p the memory given to track().
  void retire(stream s, const void* p) {
    if (!options_.check_races || p == nullptr) return;
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    const std::size_t index = l.worker->index();
    checker_.on_release(p, l.clock, {index, l.clock.get(index) + 1, std::make_shared<std::string>("retire()")});
    checker_.forget(p);
  }

  /// @brief Declares that the work enqueued next on `s` reads or writes `[p, p + bytes)`; with
  /// check_races, throws ppipe::error if that is not ordered after a conflicting access from
  /// another stream. Memory not from allocate() is ignored. Returns at once, on the calling thread.
  /// @param s a stream of this device.
  /// @param p the start of the range.
  /// @param bytes the range's size.
  /// @param mode whether the work reads or writes the range.
  /// @throws ppipe::error (invalid_schedule) for such a race; (invalid_argument) for a stream not
  /// of this device or memory of a device it does not reach, and, with check_races, for a range
  /// past its buffer's end or in a released buffer.
  void use(stream s, const void* p, std::size_t bytes, access mode) {
    const std::lock_guard lock(mutex_);
    declare(lane_of(s), p, bytes, mode, {});
  }

  /// @brief The first failure of work on this device, null if none.
  /// @return the exception, a ppipe::error naming the stream and the item's label, with what the
  /// work threw nested (kept until clear_error()).
  [[nodiscard]] std::exception_ptr error() const { return failure_.first(); }

  /// @brief Forgets the failure and the abort, so that work runs again.
  /// @throws ppipe::error while a stream still has work queued or running.
  void clear_error() {
    const std::lock_guard lock(mutex_);
    for (const auto& l : lanes_) {
      if (!l->worker->idle()) {
        detail::fail(errc::invalid_argument, "clear_error() while ", l->worker->status(),
                     ": synchronize every stream first");
      }
    }
    failure_.clear();
  }

  /// @brief Makes every stream skip its queued and future work (events still complete) until
  /// clear_error(); the work running now finishes.
  void abort() { failure_.abort(); }

  /// @brief Whether abort() was called since the last clear_error().
  /// @return true while the device is aborted.
  [[nodiscard]] bool aborted() const { return failure_.aborted(); }

  /// @brief From now on, work enqueued on `s` is recorded into a graph instead of run; so is the
  /// work of every stream of this device that waits for an event recorded in the capture (it joins
  /// the capture, as in CUDA). Nothing of it runs until launch().
  /// @param s a stream of this device, not capturing.
  /// @throws ppipe::error (invalid_argument) for a stream not of this device, or one that is
  /// already capturing.
  void begin_capture(stream s) {
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    if (l.session) {
      detail::fail(errc::invalid_argument, "begin_capture() on stream '", s.name(),
                   "', which is already capturing: call end_capture() first");
    }
    auto c = std::make_shared<capture_session>();
    c->branches.push_back(&l);
    c->work.push_back(0);
    c->known.emplace_back();
    c->spare.emplace_back();
    c->memory = std::make_shared<detail::cpu_graph_memory>();
    c->memory->space = space_;
    l.session = std::move(c);
    l.branch = 0;
    l.pending_capture.clear();
  }

  /// @brief Stops the capture that `s` began. Every stream that joined it must have been joined
  /// back: `s` is ordered, by waits for events of the capture (directly, or through other streams
  /// of it), after all of that stream's captured work (else this throws, naming it, and the
  /// capture goes on). Every block the capture allocated must have been released in it.
  /// @param s the stream that began the capture.
  /// @return what was recorded since begin_capture(), on every stream of the capture.
  /// @throws ppipe::error (invalid_argument) for a stream that is not capturing or only joined
  /// the capture, a joined stream `s` does not wait for, or a block the capture did not release.
  [[nodiscard]] graph end_capture(stream s) {
    std::shared_ptr<capture_session> ended;  // dropped after the lock (see leave_capture())
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    if (!l.session) {
      detail::fail(errc::invalid_argument, "end_capture() on stream '", s.name(),
                   "', which is not capturing: call begin_capture() first");
    }
    capture_session& c = *l.session;
    if (l.branch != 0) {
      detail::fail(errc::invalid_argument, "end_capture() on stream '", s.name(), "', which joined the capture begun on '",
                   c.branches.front()->worker->name(), "': end it there");
    }
    for (std::size_t k = 1; k < c.branches.size(); ++k) {
      if ((k < c.known[0].size() ? c.known[0][k] : 0) < c.work[k]) {
        detail::fail(errc::invalid_argument, "end_capture() on stream '", s.name(), "' while stream '",
                     c.branches[k]->worker->name(), "', which joined the capture, has work that '", s.name(),
                     "' does not wait for: record an event on it after its last work, and make '", s.name(),
                     "' wait for that event first");
      }
    }
    if (!c.live.empty()) {
      const auto& [p, size] = *c.live.begin();
      detail::fail(errc::invalid_argument, "end_capture() on stream '", s.name(), "' while ", c.live.size(),
                   " block(s) the capture allocated are not released (", p, ", ", size, " bytes): a graph "
                   "releases what it allocates, so that every launch may allocate it again");
    }
    graph g;
    g.items_ = std::make_shared<const std::vector<graph::item>>(std::move(c.items));
    g.owner_ = this;
    for (const auto& [p, size] : c.memory->blocks) g.memory_bytes_ += size;
    g.memory_ = std::move(c.memory);
    for (lane* x : c.branches) g.branches_.push_back(x->local);
    ended = leave_capture(l);
    return g;
  }

  /// @brief Ends the capture that `s` began and discards it, unchecked: none of it ever runs, and
  /// the memory it allocated goes with it (for a step that failed while it was captured).
  /// @param s the stream that began the capture (any other stream: nothing happens)
  void cancel_capture(stream s) {
    std::shared_ptr<capture_session> ended;  // dropped after the lock (see leave_capture())
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    if (l.session && l.branch == 0) ended = leave_capture(l);
  }

  /// @brief Enqueues what `g` recorded: the work of the stream that began the capture on `s`, the
  /// work of each stream that joined it on a stream of the graph's own (made at its first launch),
  /// with the capture's events made afresh, so that the launch starts after the work enqueued on
  /// `s` so far and the work enqueued on `s` next starts after all of it, and the branches are
  /// ordered by the graph's events alone (as cudaGraphLaunch runs them). Each item's accesses are checked
  /// again, against the order at this call (if one throws, the items before it stay enqueued).
  /// Returns at once; an empty (default-constructed) graph enqueues nothing.
  /// @param g a graph that end_capture() of this device returned.
  /// @param s a stream of this device, not capturing.
  /// @throws ppipe::error (unsupported) while `s` is capturing; (invalid_argument) for a graph of
  /// another device; as copy_async() does, for an item's access.
  void launch(const graph& g, stream s) {
    const std::lock_guard lock(mutex_);
    lane& l = lane_of(s);
    if (l.session) {
      detail::fail(errc::unsupported, "launch() on stream '", s.name(),
                   "' while it is being captured: launch after end_capture()");
    }
    if (!g.items_) return;
    if (g.owner_ != this) {
      detail::fail(errc::invalid_argument, "launch() of a graph captured on another device: launch it there");
    }
    // The other branches run on streams of the graph's own, as CUDA runs a graph's branches:
    // ordered by the graph's events alone, not by the streams they were captured on.
    graph_streams& own = graph_lanes_[g.items_.get()];
    std::vector<std::size_t>& hidden = own.lanes;
    while (hidden.size() + 1 < g.branches_.size()) {
      const std::size_t k = hidden.size() + 1;
      hidden.push_back(add_lane(detail::concat(lanes_[g.branches_[k]]->worker->name(), " (in a graph)")));
    }
    std::vector<lane*> on{&l};
    for (std::size_t k = 1; k < g.branches_.size(); ++k) on.push_back(&lane_at(hidden[k - 1]));
    // Launches of one graph run one after the other (as CUDA orders them), since they share its
    // memory: this one starts after the last one ended, on whichever stream it ran.
    if (own.last_end) {
      l.clock.join(own.last_end->clock);
      if (!own.last_end->done.load(std::memory_order_acquire)) {
        l.worker->push({detail::stream_item::kind::wait, {}, own.last_end, "the graph's last launch"});
      }
    }
    std::unordered_map<const detail::event_mark*, std::shared_ptr<detail::event_mark>> fresh;
    for (const graph::item& it : *g.items_) {
      lane& x = *on[it.branch];
      if (it.what == detail::stream_item::kind::record) {
        auto mark = std::make_shared<detail::event_mark>();
        mark->owner = space_.get();
        mark->stream = x.worker->index();
        mark->stream_name = x.worker->name();
        mark->clock = x.clock;
        x.worker->push({it.what, {}, mark, it.label});
        fresh.emplace(it.mark.get(), std::move(mark));
        continue;
      }
      if (it.what == detail::stream_item::kind::wait) {
        // A record comes before the waits for it in the order of enqueueing, and so here.
        const std::shared_ptr<detail::event_mark>& mark = it.mark->of_capture ? fresh.at(it.mark.get()) : it.mark;
        x.clock.join(mark->clock);
        if (!mark->done.load(std::memory_order_acquire)) x.worker->push({it.what, {}, mark, it.label});
        continue;
      }
      if (it.op != graph::memory_op::none) {
        graph_memory_op(x, it, g.memory_);
        continue;
      }
      for (const graph::declared& a : it.accesses) declare(x, a.p, a.bytes, a.mode, it.label);
      push_work(x, it.what, detail::cpu_task([fn = it.fn, keep = g.memory_] { (*fn)(); }), it.label);
    }
    auto end = std::make_shared<detail::event_mark>();
    end->owner = space_.get();
    end->stream = l.worker->index();
    end->stream_name = l.worker->name();
    end->clock = l.clock;
    l.worker->push({detail::stream_item::kind::record, {}, end, "the end of a graph's launch"});
    own.last_end = std::move(end);
  }

  /// @brief Whether `s` is capturing (it began a capture, or joined one).
  /// @param s a stream of this device (else ppipe::error, invalid_argument).
  /// @return true between begin_capture() (or the wait that joined it) and the capture's end.
  [[nodiscard]] bool capturing(stream s) const {
    const std::lock_guard lock(mutex_);
    return lane_of(s).session != nullptr;
  }

  /// @brief What the stream's worker is doing now ("stream 'b' waits for an event recorded on
  /// stream 'a' (2 items not finished, this one included)"), for timeout messages.
  /// @param s a stream of this device (else ppipe::error, invalid_argument).
  /// @return a one-line description, naming the stream.
  [[nodiscard]] std::string status(stream s) const {
    const std::lock_guard lock(mutex_);
    return lane_of(s).worker->status();
  }

  /// @brief How many items the device's streams have run so far, all streams together: a
  /// watchdog's measure of progress.
  /// @return the count, which only grows.
  [[nodiscard]] std::uint64_t finished_items() const {
    const std::lock_guard lock(mutex_);
    std::uint64_t n = 0;
    for (const auto& l : lanes_) n += l->worker->finished();
    return n;
  }

  /// @brief The pool's bytes in use, peak and reserved.
  /// @return a snapshot, with the bytes of allocate_host() still out in host_bytes_in_use.
  [[nodiscard]] cpu_allocator_stats allocator_stats() const {
    const std::lock_guard lock(mutex_);
    cpu_allocator_stats out = allocator_.stats();
    out.host_bytes_in_use = host_bytes_;
    return out;
  }

  /// @brief The same: what the pool holds, under the name the CUDA device uses.
  /// @return allocator_stats().
  [[nodiscard]] cpu_allocator_stats memory() const { return allocator_stats(); }

  /// @brief The options the device was made with.
  /// @return a reference valid as long as the device.
  [[nodiscard]] const cpu_device_options& options() const noexcept { return options_; }

 private:
  struct lane;
  /// A capture in progress: the streams it spans (0 began it) and the items they enqueued.
  struct capture_session {
    std::vector<lane*> branches;
    std::vector<std::uint64_t> work;                // work items (not records or waits) per branch
    std::vector<std::vector<std::uint64_t>> known;  // per branch: how much of each branch's work it follows
    std::vector<graph::item> items;                 // in the order they were enqueued, all branches together
    std::shared_ptr<detail::cpu_graph_memory> memory;      // what it allocated
    std::unordered_map<void*, std::size_t> live;           // of that, not released yet
    std::vector<std::multimap<std::size_t, void*>> spare;  // per branch: released, by size
  };
  /// The host's side of a stream: its worker and what ordering and capture know of it.
  struct lane {
    std::unique_ptr<detail::cpu_stream> worker;
    std::size_t local = 0;  // its place among the device's streams
    detail::vector_clock clock;
    std::shared_ptr<std::string> pending_label;  // names the accesses use() declared, once their item comes
    std::shared_ptr<capture_session> session;    // the capture it began or joined, if any
    std::size_t branch = 0;                      // its place in that capture
    std::vector<graph::declared> pending_capture;
    std::uint64_t host_seen = 0;  // the host_version_ its clock has joined
  };

  static std::uint64_t mix(std::uint64_t seed, std::size_t index) noexcept {
    // splitmix64 of seed and stream: neighbouring streams get unrelated delays.
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (static_cast<std::uint64_t>(index) + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // The lane of `s`, ordered after all the work the host has seen complete (work enqueued from
  // now on is, as on a GPU: the host enqueues it after its synchronize returned).
  [[nodiscard]] lane& lane_of(const stream& s) const {
    if (s.owner_ != this || s.impl_ == nullptr) {
      detail::fail(errc::invalid_argument,
                   s.impl_ == nullptr ? "a default-constructed stream" : "a stream of another device",
                   " was passed to a cpu_stream_device: use a stream its create_stream() made");
    }
    return lane_at(s.local_);
  }
  // A new lane, under the lock; returns its place.
  std::size_t add_lane(std::string_view name) {
    const std::size_t index = space_->streams++;
    auto l = std::make_unique<lane>();
    l->worker = std::make_unique<detail::cpu_stream>(std::string(name), index, signal_, failure_,
                                                     mix(options_.seed, index), options_.max_delay);
    checker_.add_stream(std::string(name));
    l->local = lanes_.size();
    lanes_.push_back(std::move(l));
    return lanes_.size() - 1;
  }

  [[nodiscard]] lane& lane_at(std::size_t local) const {
    lane& l = *lanes_[local];
    if (l.host_seen != host_version_) {
      l.clock.join(host_clock_);
      l.host_seen = host_version_;
    }
    return l;
  }

  // Memory for a capture: the graph's own. A block the same stream of the capture released serves
  // again (that stream's order makes it safe); else a new one.
  void* allocate_in_graph(lane& l, std::size_t bytes) {
    capture_session& c = *l.session;
    const std::size_t size = std::max<std::size_t>(64, (bytes + 63) / 64 * 64);
    auto& spare = c.spare[l.branch];
    void* p = nullptr;
    if (auto it = spare.lower_bound(size); it != spare.end() && it->first <= 2 * size) {
      p = it->second;
      spare.erase(it);
    } else {
      p = ::operator new(size, std::align_val_t{64});
      c.memory->blocks.emplace_back(p, size);
      space_->homes.insert_or_assign(reinterpret_cast<std::uintptr_t>(p), detail::cpu_device_space::home{size, group_});
    }
    const std::size_t got = block_size(c, p);
    c.live.emplace(p, got);
    c.items.push_back({detail::stream_item::kind::always, nullptr, nullptr, detail::concat("allocate(", bytes, ") in a graph"),
                       {}, l.branch, graph::memory_op::allocate, p, got});
    ++c.work[l.branch];
    return p;
  }
  static std::size_t block_size(const capture_session& c, void* p) {
    for (const auto& [q, size] : c.memory->blocks) {
      if (q == p) return size;
    }
    return 0;
  }
  void release_in_graph(lane& l, void* p) {
    capture_session& c = *l.session;
    const auto it = c.live.find(p);
    if (it == c.live.end()) {
      detail::fail(errc::unsupported, "release(", p, ") on stream '", l.worker->name(), "' while it is being "
                   "captured, of memory the capture did not allocate: every launch would release it again; release "
                   "it before begin_capture() or after end_capture()");
    }
    c.spare[l.branch].emplace(it->second, p);
    c.items.push_back({detail::stream_item::kind::always, nullptr, nullptr, detail::concat("release(", p, ") in a graph"),
                       {}, l.branch, graph::memory_op::release, p, it->second});
    ++c.work[l.branch];
    c.live.erase(it);
  }
  // A launch's allocation or release of the graph's memory on `x`: the race checker sees it there,
  // and the memory is poisoned at both, as a fresh or freed block is.
  void graph_memory_op(lane& x, const graph::item& it, const std::shared_ptr<void>& keep) {
    const std::size_t index = x.worker->index();
    if (options_.check_races) {
      const std::uint64_t at = x.clock.get(index) + (it.op == graph::memory_op::release ? 1 : 0);
      if (it.op == graph::memory_op::allocate) {
        checker_.on_allocate(it.block, it.bytes, {index, at, std::make_shared<std::string>(it.label)});
      } else {
        checker_.on_release(it.block, x.clock, {index, at, label_slot(x, it.label)});
      }
    }
    detail::cpu_task poison([p = it.block, n = it.bytes, on = options_.poison, keep] {
      if (on) std::memset(p, detail::cpu_allocator::poison_byte, n);
    });
    push_work(x, detail::stream_item::kind::always, std::move(poison), it.label);
  }

  // Every stream of the capture `origin` began stops capturing. Returns the capture, for the caller
  // to drop once it has released the lock: what the capture still owns (its memory) locks the
  // space as it goes.
  static std::shared_ptr<capture_session> leave_capture(lane& origin) {
    std::shared_ptr<capture_session> c = origin.session;
    for (lane* x : c->branches) {
      x->session.reset();
      x->branch = 0;
      x->pending_capture.clear();
    }
    return c;
  }

  // A wait for an event of a capture: a stream not capturing joins it; the stream that began it
  // waiting for another's event joins that stream back.
  void capture_wait(lane& l, const event& e) {
    const auto c = std::static_pointer_cast<capture_session>(e.mark_->capture.lock());
    if (!c) {
      detail::fail(errc::invalid_argument, "wait() on stream '", l.worker->name(), "' for an event recorded during a "
                   "capture that has ended (on stream '", e.mark_->stream_name, "'): such an event orders only work of "
                   "its capture; record one after end_capture(), or after launch()");
    }
    if (!owns(*c)) {
      detail::fail(errc::invalid_argument, "wait() on stream '", l.worker->name(), "' for an event of a capture on "
                   "another device: a capture spans the streams of one device");
    }
    if (l.session && l.session != c) {
      detail::fail(errc::invalid_argument, "wait() on stream '", l.worker->name(), "', which is capturing, for an "
                   "event of another capture: end one capture before the other uses its events");
    }
    if (!l.session) {
      l.session = c;
      l.branch = c->branches.size();
      c->branches.push_back(&l);
      c->work.push_back(0);
      c->known.emplace_back();
      c->spare.emplace_back();
      l.pending_capture.clear();
    }
    c->items.push_back({detail::stream_item::kind::wait, nullptr, e.mark_, "wait", {}, l.branch});
    std::vector<std::uint64_t>& mine = c->known[l.branch];
    if (mine.size() < e.mark_->known.size()) mine.resize(e.mark_->known.size());
    for (std::size_t k = 0; k < e.mark_->known.size(); ++k) mine[k] = std::max(mine[k], e.mark_->known[k]);
  }
  // Whether a capture's streams are this device's.
  [[nodiscard]] bool owns(const capture_session& c) const {
    for (const auto& x : lanes_) {
      if (x.get() == c.branches.front()) return true;
    }
    return false;
  }

  // A synchronize() that returned ready: what `done` covers has run, so everything enqueued
  // later, on any stream, is ordered after it.
  void host_saw(const detail::vector_clock& done) {
    const std::lock_guard lock(mutex_);
    host_clock_.join(done);
    ++host_version_;
  }

  void check_owner(const event& e, std::string_view what) const {
    if (e.mark_->owner != space_.get()) {
      detail::fail(errc::invalid_argument, what, " of an event recorded on another device (stream '",
                   e.mark_->stream_name, "'): use events of this device or of its peers");
    }
  }
  static void refuse_capture_event(const event& e, std::string_view what) {
    if (e.mark_->of_capture) {
      detail::fail(errc::invalid_argument, what, " of an event recorded during a capture (on stream '",
                   e.mark_->stream_name, "'): it is a node of the graph and completes only in a launch; use an "
                   "event recorded after launch()");
    }
  }

  static void refuse_while_capturing(const lane& l, std::string_view what) {
    if (l.session) {
      detail::fail(errc::invalid_argument, what, " on stream '", l.worker->name(),
                   "' while it is being captured (the captured work has not run): call it before "
                   "begin_capture() or after end_capture()");
    }
  }

  /// The label shared by the accesses declared for the next item of `l`, set to `label` if given.
  std::shared_ptr<std::string> label_slot(lane& l, std::string_view label) {
    if (!l.pending_label) l.pending_label = std::make_shared<std::string>();
    if (!label.empty()) l.pending_label->assign(label);
    return l.pending_label;
  }

  /// Refuses an access to memory of a device this one does not reach (no peer access).
  void check_reach(const lane& l, const void* p, std::size_t bytes, access mode, std::string_view label) const {
    if (bytes == 0) return;
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    const auto& homes = space_->homes;
    auto it = homes.upper_bound(at);
    if (it != homes.begin() && std::prev(it)->first + std::prev(it)->second.size > at) --it;
    // Every block the range overlaps, from the one it starts in.
    bool out_of_reach = false;
    for (; it != homes.end() && it->first < at + bytes; ++it) out_of_reach = out_of_reach || it->second.group != group_;
    if (!out_of_reach) return;
    detail::fail(errc::invalid_argument, "stream '", l.worker->name(), "' ", mode == access::read ? "reads" : "writes",
                 " memory at ", p, " in '", label.empty() ? std::string_view("the item enqueued next") : label,
                 "' that a device without peer access to this one allocated: between such devices, copy through "
                 "host staging memory (allocate_host()), ordered by the other device's event");
  }

  /// Checks and remembers an access by the next item of `l` (kept for launch while capturing).
  void declare(lane& l, const void* p, std::size_t bytes, access mode, std::string_view label) {
    if (space_->groups > 1) check_reach(l, p, bytes, mode, label);
    if (!options_.check_races) return;
    if (l.session) {
      l.pending_capture.push_back({p, bytes, mode});
      return;
    }
    const std::size_t index = l.worker->index();
    checker_.check(p, bytes, mode, l.clock, {index, l.clock.get(index) + 1, label_slot(l, label)});
  }

  /// Enqueues (or, while capturing, records) one item that ticks the stream.
  void push_work(lane& l, detail::stream_item::kind what, detail::cpu_task fn, std::string_view label) {
    if (l.session) {
      l.session->items.push_back({what, std::make_shared<detail::cpu_task>(std::move(fn)), nullptr,
                                  std::string(label), std::move(l.pending_capture), l.branch});
      l.pending_capture.clear();
      ++l.session->work[l.branch];
      return;
    }
    l.clock.tick(l.worker->index());
    if (l.pending_label) {
      l.pending_label->assign(label);
      l.pending_label.reset();
    }
    l.worker->push({what, std::move(fn), nullptr, std::string(label)});
  }

  cpu_stream_device(cpu_device_options options, std::shared_ptr<detail::cpu_device_space> space, std::size_t group = 0)
      : options_(options), space_(std::move(space)), group_(group), allocator_(options.poison) {}

  cpu_device_options options_;
  std::shared_ptr<detail::cpu_device_space> space_;  // shared with the device's peers
  std::size_t group_;                                // its memory group within the space
  detail::completion_signal& signal_ = space_->signal;
  detail::failure_state failure_;
  detail::cpu_allocator allocator_;
  detail::race_checker& checker_ = space_->checker;
  std::mutex& mutex_ = space_->mutex;  // guards everything below and the two above: the host's view
  detail::vector_clock& host_clock_ = space_->host_clock;
  std::uint64_t& host_version_ = space_->host_version;
  std::unordered_map<void*, std::size_t> host_blocks_;  // allocate_host()'s, by address
  std::size_t host_bytes_ = 0;
  struct graph_streams {
    std::vector<std::size_t> lanes;               // for the branches after the first
    std::shared_ptr<detail::event_mark> last_end;  // the end of the last launch
  };
  std::unordered_map<const void*, graph_streams> graph_lanes_;  // a graph's own streams
  std::vector<std::unique_ptr<lane>> lanes_;  // last: destroyed first, draining the workers
};

static_assert(capturing_stream_device<cpu_stream_device>);

}  // namespace ppipe
