#pragma once
/// @file
/// @brief ppipe::cuda::device: one GPU as a ppipe::stream_device. Streams, events, copies,
/// stream-ordered memory and graph capture are the CUDA runtime's own; the device adds what the
/// concept asks beyond it (events as values, deadlines, a sticky failure of host work, messages
/// that name the rank, the GPU and the stream).
///
/// Host API only: compiles with a plain C++ compiler as well as nvcc.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ppipe/backend/cuda/device.hpp>
#include <ppipe/backend/cuda/error.hpp>
#include <ppipe/device/failure.hpp>
#include <ppipe/device/stream_device.hpp>
#include <ppipe/device/wait.hpp>
#include <ppipe/error.hpp>

namespace ppipe::cuda {

/// @brief Which GPU a device drives, and whom it serves (for messages).
struct device_options {
  int ordinal = 0;  ///< the GPU, as cudaSetDevice numbers it
  int rank = -1;    ///< the pipeline rank it serves; -1: none
};

/// @brief The device's memory pool: what allocate() handed out and what the pool holds.
struct allocator_stats {
  std::uint64_t allocations = 0;        ///< allocate() calls that returned memory
  std::size_t bytes_in_use = 0;         ///< handed out and not yet released
  std::size_t peak_bytes_in_use = 0;    ///< the most at once since the device was made
  std::size_t bytes_reserved = 0;       ///< held by the pool from the driver (kept, not returned)
  std::size_t peak_bytes_reserved = 0;  ///< the most the pool held
  std::size_t host_bytes_in_use = 0;    ///< page-locked staging memory (allocate_host(), sizes as rounded) out
  std::size_t host_bytes_reserved = 0;  ///< page-locked memory the device holds: in use and cached
};

namespace detail {

/// Makes `ordinal` the calling thread's device for a scope: CUDA creates streams, events and
/// graphs on the current device, and the caller's thread may be bound to another.
class current_device {
 public:
  explicit current_device(int ordinal) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != ordinal) check(cudaSetDevice(ordinal), "cudaSetDevice");
  }
  ~current_device() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) static_cast<void>(cudaSetDevice(previous_));
  }
  current_device(const current_device&) = delete;
  current_device& operator=(const current_device&) = delete;

 private:
  int previous_ = 0;
};

/// CUDA event objects, reused: an event value returns its object here when its last copy goes.
/// Reusing an object still pending is safe, as a stream waits for the record that was the latest
/// when it called cudaStreamWaitEvent.
class event_pool {
 public:
  explicit event_pool(int ordinal) : ordinal_(ordinal) {}
  event_pool(const event_pool&) = delete;
  event_pool& operator=(const event_pool&) = delete;
  ~event_pool() {
    for (cudaEvent_t e : free_) static_cast<void>(cudaEventDestroy(e));
  }
  cudaEvent_t take(const std::string& where) {
    {
      const std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        cudaEvent_t e = free_.back();
        free_.pop_back();
        return e;
      }
    }
    const current_device on(ordinal_);
    cudaEvent_t e = nullptr;
    const cudaError_t status = cudaEventCreate(&e);  // with timing: elapsed_us() needs it
    if (status != cudaSuccess) {
      static_cast<void>(cudaGetLastError());
      cuda::detail::throw_error(status, (where + ": cudaEventCreate").c_str(), nullptr, 0);
    }
    return e;
  }
  void give(cudaEvent_t e) noexcept {
    const std::lock_guard lock(mutex_);
    try {
      free_.push_back(e);
    } catch (...) {
      static_cast<void>(cudaEventDestroy(e));
    }
  }

 private:
  int ordinal_;
  std::mutex mutex_;
  std::vector<cudaEvent_t> free_;
};

/// One record: its event object, back to the pool when the last copy of the value goes.
struct event_record {
  event_record(std::shared_ptr<event_pool> p, cudaEvent_t h, const void* o, std::string s)
      : pool(std::move(p)), handle(h), owner(o), stream_name(std::move(s)) {}
  event_record(const event_record&) = delete;
  event_record& operator=(const event_record&) = delete;
  ~event_record() { pool->give(handle); }
  std::shared_ptr<event_pool> pool;
  cudaEvent_t handle;
  const void* owner;  // the device, so that another device's event is refused
  std::string stream_name;
  // Recorded during a capture: a node of the graph, which completes only in a launch.
  bool of_capture = false;
  std::weak_ptr<void> capture;       // the capture, while it goes on
  std::vector<std::uint64_t> known;  // per stream of the capture: how much of its work this follows
};

/// Host work as cudaLaunchHostFunc calls it back.
struct host_task {
  virtual ~host_task() = default;
  virtual void run() = 0;
};
template <class F>
struct host_task_of final : host_task {
  explicit host_task_of(F f) : fn(std::move(f)) {}
  void run() override { fn(); }
  F fn;
};

struct host_work;

/// Host work that has run, handed back by CUDA's callback thread: it is destroyed on a host
/// thread (collect()), because what the work captured may free device memory or events, and a
/// host function must not call CUDA.
class finished_work {
 public:
  void add(host_work* w) noexcept;
  void collect() noexcept;

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<host_work>> items_;
};

struct host_work {
  ppipe::detail::failure_state* failure = nullptr;
  finished_work* finished = nullptr;  // null when a graph owns it and may run it again
  std::unique_ptr<host_task> task;
  std::string where;  // "stream 'rank 1 compute', item 'F3 of stage 1'"
};

inline void finished_work::add(host_work* w) noexcept {
  const std::lock_guard lock(mutex_);
  try {
    items_.emplace_back(w);
  } catch (...) {
    static_cast<void>(w);  // out of memory on CUDA's thread: leak it rather than destroy it there
  }
}

inline void finished_work::collect() noexcept {
  std::vector<std::unique_ptr<host_work>> done;
  {
    const std::lock_guard lock(mutex_);
    done.swap(items_);
  }
}  // destroyed here, outside the lock

/// What cudaLaunchHostFunc runs: the work, unless the device failed or was aborted; a failure
/// becomes the device's sticky error. It must not throw, and must not call CUDA.
inline void CUDART_CB run_host_work(void* data) noexcept {
  auto* w = static_cast<host_work*>(data);
  if (!w->failure->skipping()) {
    try {
      w->task->run();
    } catch (...) {
      w->failure->fail(ppipe::detail::failure_at(w->where));
    }
  }
  if (w->finished != nullptr) w->finished->add(w);
}

/// What a graph keeps alive for as long as it can be launched: its host work, the events its
/// external waits name, and the executable graph itself.
struct graph_state {
  graph_state() = default;
  graph_state(const graph_state&) = delete;
  graph_state& operator=(const graph_state&) = delete;
  ~graph_state() {
    if (exec != nullptr) static_cast<void>(cudaGraphExecDestroy(exec));
    if (graph != nullptr) static_cast<void>(cudaGraphDestroy(graph));
  }
  const void* owner = nullptr;  // the device that captured it
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::size_t nodes = 0;
  std::vector<std::unique_ptr<host_work>> work;
  std::vector<std::shared_ptr<event_record>> waited;
};

}  // namespace detail

/// @brief One GPU as a ppipe::stream_device (and capturing_stream_device), through the CUDA
/// runtime: a stream is a non-blocking cudaStream_t, an event a pooled cudaEvent_t, memory comes
/// from the device's own stream-ordered pool (cudaMallocFromPoolAsync, kept reserved between
/// steps so that a steady run never reaches cudaMalloc), host work is cudaLaunchHostFunc, and a
/// capture is a CUDA graph.
///
/// What CUDA cannot do as the CPU model does: abort() and a failure skip host work only, not
/// kernels or copies already enqueued; use() checks nothing (compute-sanitizer's racecheck does).
/// Every failing CUDA call throws ppipe::error (errc::backend) naming the rank, the GPU, the call
/// and CUDA's error.
class device {
 public:
  /// @brief A handle to a stream of this device; default-constructed, it names none.
  class stream {
   public:
    stream() = default;
    /// @brief The CUDA stream, for kernels and libraries (cuBLAS) to run on.
    /// @return the cudaStream_t; nullptr for a default-constructed handle
    [[nodiscard]] cudaStream_t handle() const noexcept { return handle_; }
    /// @brief Whether two handles name the same stream of the same device.
    friend bool operator==(const stream&, const stream&) noexcept = default;

   private:
    friend class device;
    stream(const device* owner, std::size_t index, cudaStream_t h) : owner_(owner), index_(index), handle_(h) {}
    const device* owner_ = nullptr;
    std::size_t index_ = 0;
    cudaStream_t handle_ = nullptr;
  };

  /// @brief An event: one record, shared by its copies. Default-constructed, it counts as
  /// complete and orders nothing.
  class event {
   public:
    event() = default;

   private:
    friend class device;
    explicit event(std::shared_ptr<detail::event_record> r) : record_(std::move(r)) {}
    std::shared_ptr<detail::event_record> record_;
  };

  /// @brief What a capture recorded: an executable CUDA graph and what it runs.
  class graph {
   public:
    graph() = default;
    /// @brief The graph's nodes (kernels, copies, host work, waits).
    /// @return the node count; 0 for a default-constructed graph
    [[nodiscard]] std::size_t size() const noexcept { return state_ ? state_->nodes : 0; }

   private:
    friend class device;
    explicit graph(std::shared_ptr<const detail::graph_state> s) : state_(std::move(s)) {}
    std::shared_ptr<const detail::graph_state> state_;
  };

  /// @brief A device on GPU `options.ordinal`, with its own memory pool and no streams yet.
  /// @param options the GPU and the rank it serves
  /// @throws ppipe::error (errc::unsupported) when the process sees no such GPU
  explicit device(device_options options = {})
      : options_(options), where_(describe(options)), events_(std::make_shared<detail::event_pool>(options.ordinal)) {
    const int count = device_count();
    if (options.ordinal < 0 || options.ordinal >= count) {
      ppipe::detail::fail(errc::unsupported, where_, ": this process sees ", count, " CUDA device",
                          count == 1 ? "" : "s", "; give an ordinal in [0, ", count,
                          ") (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
    }
    const detail::current_device on(options.ordinal);
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = options.ordinal;
    check_call(cudaMemPoolCreate(&pool_, &props), "cudaMemPoolCreate");
    // Keep freed memory reserved at synchronizations: the next step reuses it.
    std::uint64_t keep = std::numeric_limits<std::uint64_t>::max();
    const cudaError_t status = cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep);
    if (status != cudaSuccess) {
      static_cast<void>(cudaMemPoolDestroy(pool_));
      check_call(status, "cudaMemPoolSetAttribute(release threshold)");
    }
  }

  device(const device&) = delete;
  device& operator=(const device&) = delete;

  /// @brief Ends any capture, waits for every stream (host work in flight refers to the device),
  /// then destroys them and the pool (whose memory goes once the last release has run). Its peers
  /// forget it.
  ~device() {
    for (device* other : peers_) other->forget(this);
    for (auto& l : lanes_) {
      if (l->capture && l->branch == 0) {
        cudaGraph_t g = nullptr;
        if (cudaStreamEndCapture(l->handle, &g) == cudaSuccess && g != nullptr) static_cast<void>(cudaGraphDestroy(g));
      }
    }
    for (auto& l : lanes_) {
      l->capture.reset();
      static_cast<void>(cudaStreamSynchronize(l->handle));
      l->launched.clear();
      static_cast<void>(cudaStreamDestroy(l->handle));
    }
    static_cast<void>(cudaGetLastError());
    finished_.collect();
    if (pool_ != nullptr) static_cast<void>(cudaMemPoolDestroy(pool_));
    for (const auto& [p, bytes] : host_live_) static_cast<void>(cudaFreeHost(p));
    for (const auto& [bytes, p] : host_free_) static_cast<void>(cudaFreeHost(p));
  }

  /// @brief The GPU's ordinal.
  /// @return the ordinal, as cudaSetDevice numbers the GPU
  [[nodiscard]] int ordinal() const noexcept { return options_.ordinal; }

  /// @brief Makes `other` this device's peer: the streams of each may wait for the other's
  /// events, and `other`'s copies may read and write the memory of this device's pool where its
  /// GPU has peer access to this one's (cudaMemPoolSetAccess; a device on the same GPU always
  /// reaches it). Without peer access (`nvidia-smi topo -p2p r` says which pairs have it),
  /// payloads between the two go through page-locked host memory. Call it both ways, before any
  /// work; both devices must live until neither uses the other's events.
  /// @param other a device of this process
  void grant_peer(device& other) {
    if (&other == this) return;
    if (other.ordinal() != ordinal() && !has(readers_, &other)) {
      int can = 0;
      check_call(cudaDeviceCanAccessPeer(&can, other.ordinal(), ordinal()), "cudaDeviceCanAccessPeer");
      if (can != 0) {
        cudaMemAccessDesc access{};
        access.location.type = cudaMemLocationTypeDevice;
        access.location.id = other.ordinal();
        access.flags = cudaMemAccessFlagsProtReadWrite;
        check_call(cudaMemPoolSetAccess(pool_, &access, 1), "cudaMemPoolSetAccess");
        readers_.push_back(&other);
      }
    }
    if (!has(peers_, &other)) peers_.push_back(&other);
    if (!has(other.peers_, this)) other.peers_.push_back(this);
  }

  /// @brief Whether `other` is this device or its peer (grant_peer(), either way): each one's
  /// streams may wait for the other's events.
  /// @param other a device of this process
  /// @return true for the device itself and its peers
  [[nodiscard]] bool peer_of(const device& other) const noexcept { return &other == this || has(peers_, &other); }

  /// @brief Whether this device's copies may read and write `other`'s memory: `other` is on the
  /// same GPU, or granted this device access to its pool (peer access).
  /// @param other a device of this process
  /// @return true where copies may touch its memory
  [[nodiscard]] bool reaches(const device& other) const noexcept {
    return peer_of(other) && (other.ordinal() == ordinal() || has(other.readers_, this));
  }

  /// @brief False: host work runs on a CUDA driver thread, and must return without waiting for
  /// anything (while it waits, so do its stream and the process's other host work).
  /// @return false
  [[nodiscard]] static constexpr bool host_work_may_wait() noexcept { return false; }
  /// @brief "rank 1 (GPU 0)", or "GPU 0" for a device that serves no rank: how messages name it.
  /// @return the name
  [[nodiscard]] const std::string& where() const noexcept { return where_; }
  /// @brief Makes the GPU the calling thread's current device (a rank thread calls it once).
  void bind() const { check_call(cudaSetDevice(options_.ordinal), "cudaSetDevice"); }

  /// @brief Makes a non-blocking stream that lives as long as the device.
  /// @param name what the stream is for, as messages show it ("rank 1 compute")
  /// @return its handle
  [[nodiscard]] stream create_stream(std::string_view name) {
    const detail::current_device on(options_.ordinal);
    cudaStream_t h = nullptr;
    check_call(cudaStreamCreateWithFlags(&h, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    const std::lock_guard lock(mutex_);
    auto l = std::make_unique<lane>();
    l->name = std::string(name);
    l->handle = h;
    lanes_.push_back(std::move(l));
    return {this, lanes_.size() - 1, h};
  }

  /// @brief Enqueues host work on `s`, labelled "host work" (see the overload with a label).
  /// @tparam F the callable's type
  /// @param s the stream
  /// @param fn a `void()` callable
  /// @throws ppipe::error when `s` is not a stream of this device or cudaLaunchHostFunc fails
  template <std::invocable F>
  void enqueue(stream s, F&& fn) {
    enqueue(s, std::forward<F>(fn), "host work");
  }

  /// @brief Enqueues host work in stream order (cudaLaunchHostFunc). It runs on a CUDA thread,
  /// must not call CUDA, and is skipped once the device has failed or was aborted.
  /// @param s the stream
  /// @param fn a `void()` callable
  /// @tparam F the callable's type
  /// @param label what the work is ("F3 of stage 1"), named if it throws
  /// @throws ppipe::error when `s` is not a stream of this device or cudaLaunchHostFunc fails
  template <std::invocable F>
  void enqueue(stream s, F&& fn, std::string_view label) {
    lane& l = lane_of(s);
    finished_.collect();
    auto w = std::make_unique<detail::host_work>();
    w->failure = &failure_;
    w->task = std::make_unique<detail::host_task_of<std::decay_t<F>>>(std::forward<F>(fn));
    w->where = ppipe::detail::concat("stream '", l.name, "', item '", label, "'");
    // Under the lock: whether the stream is capturing decides who owns the work, and must not
    // change in between (another thread may end the capture).
    std::unique_lock lock(mutex_);
    capture_session* c = l.capture.get();
    w->finished = c != nullptr ? nullptr : &finished_;
    check_call(cudaLaunchHostFunc(l.handle, detail::run_host_work, w.get()), "cudaLaunchHostFunc", l);
    if (c != nullptr) {
      c->state->work.push_back(std::move(w));
      ++c->work[l.branch];
    } else {
      static_cast<void>(w.release());  // run_host_work hands it to finished_
    }
  }

  /// @brief Records a fresh event on `s` (cudaEventRecord on a pooled event object); while `s`
  /// is capturing, an event of the capture, which orders the capture's streams among themselves.
  /// @param s the stream whose work so far the event follows
  /// @return the event
  /// @throws ppipe::error when `s` is not a stream of this device or cudaEventRecord fails
  [[nodiscard]] event record(stream s) {
    lane& l = lane_of(s);
    auto r = std::make_shared<detail::event_record>(events_, events_->take(where_), this, l.name);
    const std::lock_guard lock(mutex_);
    check_call(cudaEventRecord(r->handle, l.handle), "cudaEventRecord", l);
    if (const std::shared_ptr<capture_session>& c = l.capture) {
      r->of_capture = true;
      r->capture = c;
      r->known = c->known[l.branch];
      r->known.resize(c->branches.size());
      r->known[l.branch] = c->work[l.branch];
    }
    return event(std::move(r));
  }

  /// @brief Makes the work enqueued on `s` after this call wait for `e` (cudaStreamWaitEvent).
  /// While `s` is capturing, the graph waits for an event from before the capture at every launch;
  /// a stream that waits for an event of a capture joins that capture.
  /// @param s the stream that waits
  /// @param e an event of this device or of a peer; a default-constructed one is ignored
  /// @throws ppipe::error when `e` is of a device that is not a peer, is of a capture that has
  /// ended, another capture or another device, or cudaStreamWaitEvent fails
  void wait(stream s, const event& e) {
    lane& l = lane_of(s);
    if (!e.record_) return;
    check_peer(e, "wait()");
    if (e.record_->of_capture) {
      capture_wait(l, e);
      return;
    }
    const std::lock_guard lock(mutex_);
    if (capture_session* c = l.capture.get()) {
      check_call(cudaStreamWaitEvent(l.handle, e.record_->handle, cudaEventWaitExternal), "cudaStreamWaitEvent", l);
      c->state->waited.push_back(e.record_);
      return;
    }
    check_call(cudaStreamWaitEvent(l.handle, e.record_->handle, 0), "cudaStreamWaitEvent", l);
  }

  /// @brief Whether `e` has completed (cudaEventQuery), without blocking.
  /// @param e an event of this device or of a peer, recorded outside a capture
  /// @return true once it has completed, or for a default-constructed event
  /// @throws ppipe::error when `e` is of no peer, was recorded during a capture, or CUDA fails
  [[nodiscard]] bool query(const event& e) const {
    if (!e.record_) return true;
    check_peer(e, "query()");
    refuse_capture_event(e, "query()");
    const cudaError_t status = cudaEventQuery(e.record_->handle);
    if (status == cudaErrorNotReady) return false;
    check_call(status, ppipe::detail::concat("cudaEventQuery(event on stream '", e.record_->stream_name, "')"));
    return true;
  }

  /// @brief Blocks until `e` completes or `deadline` passes, polling (CUDA has no timed wait).
  /// @param e an event of this device or of a peer, recorded outside a capture
  /// @param deadline when to give up
  /// @return wait_status::ready, or wait_status::timed_out when the deadline passed first
  /// @throws ppipe::error when `e` is of no peer, was recorded during a capture, or CUDA fails
  [[nodiscard]] wait_status synchronize(const event& e, deadline_clock::time_point deadline) {
    if (!e.record_) return wait_status::ready;
    check_peer(e, "synchronize()");
    refuse_capture_event(e, "synchronize()");
    return poll(deadline, [&] { return cudaEventQuery(e.record_->handle); },
                ppipe::detail::concat("cudaEventQuery(event on stream '", e.record_->stream_name, "')"));
  }

  /// @brief Blocks until the work enqueued on `s` so far has run, or `deadline` passes.
  /// @param s a stream of this device, not capturing
  /// @param deadline when to give up
  /// @return wait_status::ready, or wait_status::timed_out when the deadline passed first
  /// @throws ppipe::error while `s` is capturing, or when the stream has failed
  [[nodiscard]] wait_status synchronize(stream s, deadline_clock::time_point deadline) {
    lane& l = lane_of(s);
    refuse_while_capturing(l, "synchronize()");
    const wait_status status = poll(deadline, [&] { return cudaStreamQuery(l.handle); },
                                    ppipe::detail::concat("cudaStreamQuery(stream '", l.name, "')"));
    if (status == wait_status::ready) l.launched.clear();  // the graphs launched on it have run
    finished_.collect();
    return status;
  }

  /// @brief Microseconds from `from` to `to`, two completed events (cudaEventElapsedTime);
  /// negative when `to` completed first.
  /// @param from an event recorded on this device
  /// @param to another event recorded on this device
  /// @return the time between them, in microseconds
  /// @throws ppipe::error (errc::invalid_argument) when either was never recorded, is of another
  /// device or of a capture, or has not completed yet
  [[nodiscard]] double elapsed_us(const event& from, const event& to) const {
    for (const event* e : {&from, &to}) {
      if (!e->record_) {
        ppipe::detail::fail(errc::invalid_argument, "elapsed_us() of an event never recorded: pass events from record()");
      }
      check_owner(*e, "elapsed_us()");
      refuse_capture_event(*e, "elapsed_us()");
      if (!query(*e)) {
        ppipe::detail::fail(errc::invalid_argument, "elapsed_us() of an event on stream '", e->record_->stream_name,
                            "' that has not completed: synchronize() it first");
      }
    }
    // CUDA does not document the sign for events in the other order: ask both ways.
    float ms = 0.0F;
    check_call(cudaEventElapsedTime(&ms, from.record_->handle, to.record_->handle), "cudaEventElapsedTime");
    if (ms == 0.0F) {
      float back = 0.0F;
      check_call(cudaEventElapsedTime(&back, to.record_->handle, from.record_->handle), "cudaEventElapsedTime");
      ms = back > 0.0F ? -back : 0.0F;
    }
    return static_cast<double>(ms) * 1000.0;
  }

  /// @brief Copies `bytes` bytes from `src` to `dst` in stream order (cudaMemcpyAsync; host or
  /// device memory on either side, as unified addressing tells). Host memory should be pinned:
  /// CUDA may read pageable memory when the copy is enqueued, not when the stream reaches it.
  /// @param s the stream to enqueue on
  /// @param dst where to copy to
  /// @param src where to copy from
  /// @param bytes how many bytes; 0 enqueues nothing
  /// @param label what the copy is, named in the message if CUDA refuses it
  /// @throws ppipe::error when `s` is not a stream of this device or cudaMemcpyAsync fails
  void copy_async(stream s, void* dst, const void* src, std::size_t bytes, std::string_view label = "copy_async") {
    lane& l = lane_of(s);
    if (bytes == 0) return;
    check_call(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, l.handle),
               ppipe::detail::concat("cudaMemcpyAsync (", label, ", ", bytes, " bytes)"), l);
    count_captured_work(l);
  }

  /// @brief Zeroes `bytes` bytes at `dst` in stream order (cudaMemsetAsync).
  /// @param s the stream to enqueue on
  /// @param dst device memory
  /// @param bytes how many bytes; 0 enqueues nothing
  /// @param label what the memory is, named in the message if CUDA refuses it
  /// @throws ppipe::error when `s` is not a stream of this device or cudaMemsetAsync fails
  void zero_async(stream s, void* dst, std::size_t bytes, std::string_view label = "zero_async") {
    lane& l = lane_of(s);
    if (bytes == 0) return;
    check_call(cudaMemsetAsync(dst, 0, bytes, l.handle),
               ppipe::detail::concat("cudaMemsetAsync (", label, ", ", bytes, " bytes)"), l);
    count_captured_work(l);
  }

  /// @brief Device memory for work on `s` (cudaMallocFromPoolAsync from the device's pool).
  /// Another stream may use it once ordered after this call.
  /// @param bytes the size
  /// @param s the stream that first uses it
  /// @return the memory (256-byte aligned); nullptr for 0 bytes
  /// @throws ppipe::error when the pool cannot provide it, naming the bytes in use and reserved
  [[nodiscard]] void* allocate(std::size_t bytes, stream s) {
    lane& l = lane_of(s);
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    const cudaError_t status = cudaMallocFromPoolAsync(&p, bytes, pool_, l.handle);
    if (status != cudaSuccess) {
      static_cast<void>(cudaGetLastError());
      const allocator_stats now = allocator_stats_or_zero();
      cuda::detail::throw_error(
          status,
          ppipe::detail::concat(where_, ", stream '", l.name, "': allocate(", bytes, " bytes) with ", now.bytes_in_use,
                                " in use and ", now.bytes_reserved, " reserved: cudaMallocFromPoolAsync")
              .c_str(),
          nullptr, 0);
    }
    const std::lock_guard lock(mutex_);
    if (l.capture) {  // an allocation node: the graph's memory, at this address in every launch
      l.capture->live.emplace(p, bytes);
      ++l.capture->work[l.branch];
      return p;
    }
    ++allocations_;
    return p;
  }

  /// @brief Frees `p` when `s` reaches this point (cudaFreeAsync); work on other streams that
  /// uses it must be ordered before this call.
  /// @param p memory from allocate(), or nullptr (ignored)
  /// @param s the stream at whose current end the memory is freed
  /// @throws ppipe::error (errc::unsupported) while `s` is capturing and the capture did not
  /// allocate `p`; ppipe::error when cudaFreeAsync fails
  void release(void* p, stream s) {
    if (p == nullptr) return;
    lane& l = lane_of(s);
    const std::lock_guard lock(mutex_);
    if (l.capture) {  // a free node, of memory the capture allocated (each launch frees it again)
      if (l.capture->live.erase(p) == 0) {
        ppipe::detail::fail(errc::unsupported, "release(", p, ") on stream '", l.name, "' while it is being "
                            "captured, of memory the capture did not allocate: every launch would release it again; "
                            "release it before begin_capture() or after end_capture()");
      }
      ++l.capture->work[l.branch];
    }
    check_call(cudaFreeAsync(p, l.handle), "cudaFreeAsync", l);
  }

  /// @brief Declares an access: checks nothing on a GPU (run compute-sanitizer for races).
  /// @param s the stream whose work accesses the memory; only checked to be this device's
  void use(stream s, const void* /*p*/, std::size_t /*bytes*/, access /*mode*/) { static_cast<void>(lane_of(s)); }

  /// @brief The first failure of host work on this device, null if none.
  /// @return the failure, or a null pointer
  [[nodiscard]] std::exception_ptr error() const { return failure_.first(); }

  /// @brief Forgets the failure and the abort.
  /// @throws ppipe::error while a stream still has work queued or running
  void clear_error() {
    const std::lock_guard lock(mutex_);
    for (const auto& l : lanes_) {
      if (l->capturing.load(std::memory_order_acquire)) {
        ppipe::detail::fail(errc::invalid_argument, "clear_error() while stream '", l->name,
                            "' is being captured: call end_capture() first");
      }
      const cudaError_t status = cudaStreamQuery(l->handle);
      if (status == cudaErrorNotReady) {
        ppipe::detail::fail(errc::invalid_argument, "clear_error() while stream '", l->name,
                            "' has work queued or running: synchronize every stream first");
      }
      check_call(status, "cudaStreamQuery", *l);
    }
    failure_.clear();
  }

  /// @brief Makes host work skip until clear_error(); kernels and copies already enqueued still run.
  void abort() { failure_.abort(); }
  /// @brief Whether abort() was called since the last clear_error().
  /// @return true while aborted
  [[nodiscard]] bool aborted() const { return failure_.aborted(); }

  /// @brief "stream 'rank 1 compute' is idle" or "... has work queued or running", for timeouts.
  /// @param s a stream of this device
  /// @return its state in words; a capturing stream is not queried, only said to be captured
  [[nodiscard]] std::string status(stream s) const {
    const lane& l = lane_of(s);
    // Querying a capturing stream would invalidate its capture.
    if (l.capturing.load(std::memory_order_acquire)) return ppipe::detail::concat("stream '", l.name, "' is being captured");
    const cudaError_t st = cudaStreamQuery(l.handle);
    if (st == cudaSuccess) return ppipe::detail::concat("stream '", l.name, "' is idle");
    if (st == cudaErrorNotReady) return ppipe::detail::concat("stream '", l.name, "' has work queued or running");
    return ppipe::detail::concat("stream '", l.name, "' failed: ", cudaGetErrorName(st));
  }

  /// @brief From now on, work enqueued on `s` is captured into a graph (thread-local capture
  /// mode: other threads' CUDA calls are not disturbed); so is the work of every stream of this
  /// device that waits for an event recorded in the capture (it joins the capture, as in CUDA).
  /// @param s the stream that begins the capture; end_capture() is called on it, on this thread
  /// @throws ppipe::error (errc::invalid_argument) when `s` is already capturing; ppipe::error
  /// when cudaStreamBeginCapture fails
  void begin_capture(stream s) {
    lane& l = lane_of(s);
    if (session_of(l)) {
      ppipe::detail::fail(errc::invalid_argument, "begin_capture() on stream '", l.name,
                          "', which is already capturing: call end_capture() first");
    }
    check_call(cudaStreamBeginCapture(l.handle, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture", l);
    auto c = std::make_shared<capture_session>();
    c->state = std::make_unique<detail::graph_state>();
    c->state->owner = this;
    c->thread = std::this_thread::get_id();
    c->branches.push_back(&l);
    c->work.push_back(0);
    c->known.emplace_back();
    const std::lock_guard lock(mutex_);
    l.capture = std::move(c);
    l.branch = 0;
    l.capturing.store(true, std::memory_order_release);
  }

  /// @brief Stops the capture that `s` began and instantiates what it recorded. Every stream that
  /// joined it must have been joined back: `s` is ordered after all of its work enqueued through
  /// the device by waits for events of the capture, directly or through other streams of it (else
  /// this throws, naming it, and the capture goes on; kernels launched directly are CUDA's to
  /// check, which then refuses the capture).
  /// @param s the stream that began the capture, on the thread that began it
  /// @return the graph
  [[nodiscard]] graph end_capture(stream s) {
    lane& l = lane_of(s);
    const std::shared_ptr<capture_session> c = session_of(l);
    if (!c) {
      ppipe::detail::fail(errc::invalid_argument, "end_capture() on stream '", l.name,
                          "', which is not capturing: call begin_capture() first");
    }
    std::unique_ptr<detail::graph_state> state;
    cudaError_t ended = cudaSuccess;
    {
      const std::lock_guard lock(mutex_);
      if (l.capture != c) {
        ppipe::detail::fail(errc::invalid_argument, "end_capture() on stream '", l.name,
                            "', whose capture another thread ended meanwhile: end a capture on one thread");
      }
      if (l.branch != 0) {
        ppipe::detail::fail(errc::invalid_argument, "end_capture() on stream '", l.name,
                            "', which joined the capture begun on '", c->branches.front()->name, "': end it there");
      }
      if (c->thread != std::this_thread::get_id()) {
        ppipe::detail::fail(errc::invalid_argument, "end_capture() on stream '", l.name,
                            "' from another thread than begin_capture()'s, which CUDA refuses: end it on that thread");
      }
      if (!c->live.empty()) {
        const auto& [p, size] = *c->live.begin();
        ppipe::detail::fail(errc::invalid_argument, "end_capture() on stream '", l.name, "' while ", c->live.size(),
                            " block(s) the capture allocated are not released (", p, ", ", size, " bytes): a graph "
                            "releases what it allocates, so that every launch may allocate it again");
      }
      for (std::size_t k = 1; k < c->branches.size(); ++k) {
        if ((k < c->known[0].size() ? c->known[0][k] : 0) < c->work[k]) {
          ppipe::detail::fail(errc::invalid_argument, "end_capture() on stream '", l.name, "' while stream '",
                              c->branches[k]->name, "', which joined the capture, has work that '", l.name,
                              "' does not wait for: record an event on it after its last work, and make '", l.name,
                              "' wait for that event first");
        }
      }
      // Once CUDA is asked, the capture is over whatever it answers (an invalidated one included),
      // on every stream at once: no other thread sees a stream of it capturing after this.
      state = std::move(c->state);
      ended = cudaStreamEndCapture(l.handle, &state->graph);
      leave_capture(*c);
    }
    check_call(ended, "cudaStreamEndCapture", l);
    check_call(cudaGraphGetNodes(state->graph, nullptr, &state->nodes), "cudaGraphGetNodes", l);
    const detail::current_device on(options_.ordinal);
    check_call(cudaGraphInstantiate(&state->exec, state->graph, 0), "cudaGraphInstantiate", l);
    return graph(std::shared_ptr<const detail::graph_state>(std::move(state)));
  }

  /// @brief Ends the capture that `s` began and discards it, unchecked: none of it ever runs, and
  /// the memory it allocated goes with it (for a step that failed while it was captured).
  /// @param s the stream that began the capture (any other stream: nothing happens)
  void cancel_capture(stream s) {
    lane& l = lane_of(s);
    const std::lock_guard lock(mutex_);
    if (!l.capture || l.branch != 0) return;
    const std::shared_ptr<capture_session> keep = l.capture;
    cudaGraph_t g = nullptr;
    if (cudaStreamEndCapture(l.handle, &g) == cudaSuccess && g != nullptr) static_cast<void>(cudaGraphDestroy(g));
    static_cast<void>(cudaGetLastError());
    leave_capture(*keep);
  }

  /// @brief Enqueues what `g` recorded on `s` (cudaGraphLaunch).
  /// @param g a graph this device captured; a default-constructed one enqueues nothing
  /// @param s the stream to launch on, not capturing; the graph is kept alive until `s` has run it
  /// @throws ppipe::error while `s` is capturing, for a graph of another device, or when
  /// cudaGraphLaunch fails
  void launch(const graph& g, stream s) {
    lane& l = lane_of(s);
    if (l.capturing.load(std::memory_order_acquire)) {
      ppipe::detail::fail(errc::unsupported, "launch() on stream '", l.name,
                          "' while it is being captured: launch after end_capture()");
    }
    if (!g.state_) return;
    if (g.state_->owner != this) {
      ppipe::detail::fail(errc::invalid_argument, "launch() of a graph captured on another device: launch it there");
    }
    // Graphs that have run need not be kept; this one is, until its stream is done with it (its
    // host work and the events it waits for must outlive every launch).
    if (cudaStreamQuery(l.handle) == cudaSuccess) l.launched.clear();
    check_call(cudaGraphLaunch(g.state_->exec, l.handle), "cudaGraphLaunch", l);
    l.launched.push_back(g.state_);
  }

  /// @brief Whether `s` is capturing (it began a capture, or joined one).
  /// @param s a stream of this device
  /// @return true while it is capturing
  [[nodiscard]] bool capturing(stream s) const { return lane_of(s).capturing.load(std::memory_order_acquire); }

  /// @brief Page-locked host memory for staging copies (cudaHostAlloc, portable), so that a copy
  /// to or from it is enqueued without the host waiting. Blocks given back are kept and handed
  /// out again for requests of the same power-of-two size: a steady run allocates none.
  /// @param bytes the size
  /// @return the memory
  [[nodiscard]] void* allocate_host(std::size_t bytes) {
    // Sizes round up to a power of two (4 KiB at least): microbatches of a few different sizes
    // then share blocks, and what the cache holds stays within twice what a step needs.
    std::size_t size = 4096;
    while (size < bytes) size *= 2;
    {
      const std::lock_guard lock(mutex_);
      if (const auto it = host_free_.find(size); it != host_free_.end()) {
        void* p = it->second;
        host_free_.erase(it);
        host_live_.emplace(p, size);
        return p;
      }
    }
    void* p = nullptr;
    const detail::current_device on(options_.ordinal);
    check_call(cudaHostAlloc(&p, size, cudaHostAllocPortable),
               ppipe::detail::concat("cudaHostAlloc(", size, " bytes of staging memory)"));
    const std::lock_guard lock(mutex_);
    host_live_.emplace(p, size);
    host_reserved_ += size;
    return p;
  }

  /// @brief Gives back memory from allocate_host() for reuse; no enqueued copy may use it any more.
  /// @param p memory from allocate_host(), or nullptr (ignored)
  void release_host(void* p) noexcept {
    if (p == nullptr) return;
    const std::lock_guard lock(mutex_);
    const auto it = host_live_.find(p);
    if (it == host_live_.end()) return;
    host_free_.emplace(it->second, p);
    host_live_.erase(it);
  }

  /// @brief The pool's allocations, bytes in use and reserved, now and at their peaks.
  /// @return the statistics, with the page-locked staging memory's
  [[nodiscard]] allocator_stats memory() const {
    allocator_stats out;
    out.bytes_in_use = pool_attribute(cudaMemPoolAttrUsedMemCurrent);
    out.peak_bytes_in_use = pool_attribute(cudaMemPoolAttrUsedMemHigh);
    out.bytes_reserved = pool_attribute(cudaMemPoolAttrReservedMemCurrent);
    out.peak_bytes_reserved = pool_attribute(cudaMemPoolAttrReservedMemHigh);
    const std::lock_guard lock(mutex_);
    out.allocations = allocations_;
    for (const auto& [p, bytes] : host_live_) out.host_bytes_in_use += bytes;
    out.host_bytes_reserved = host_reserved_;
    return out;
  }

 private:
  struct lane;
  /// A capture in progress: the streams it spans (0 began it), how much work each enqueued through
  /// the device, how much of each other's each is ordered after, and what the graph keeps.
  /// Guarded by the device's mutex: the capture's streams may be fed by several threads.
  struct capture_session {
    std::unique_ptr<detail::graph_state> state;
    std::thread::id thread;  // begin_capture()'s, which CUDA requires of end_capture()
    std::vector<lane*> branches;
    std::vector<std::uint64_t> work;                // work items (not records or waits) per branch
    std::vector<std::vector<std::uint64_t>> known;  // per branch: how much of each branch's work it follows
    std::unordered_map<void*, std::size_t> live;    // allocated in the capture, not released yet
  };
  struct lane {
    std::string name;
    cudaStream_t handle = nullptr;
    std::shared_ptr<capture_session> capture;  // the capture it began or joined (the mutex guards it)
    std::size_t branch = 0;                    // its place in that capture
    std::atomic<bool> capturing{false};        // the same, readable without the mutex
    std::vector<std::shared_ptr<const detail::graph_state>> launched;  // may still be running on the stream
  };

  [[nodiscard]] std::shared_ptr<capture_session> session_of(const lane& l) const {
    const std::lock_guard lock(mutex_);
    return l.capture;
  }

  // Every stream of capture `c` stops capturing (under the mutex; the caller holds `c`).
  static void leave_capture(const capture_session& c) {
    for (lane* x : c.branches) {
      x->capture.reset();
      x->branch = 0;
      x->capturing.store(false, std::memory_order_release);
    }
  }

  // A wait for an event of a capture: a stream not capturing joins it (CUDA does the same), and
  // learns how much of each stream's work the event follows. Checked and done under one lock.
  void capture_wait(lane& l, const event& e) {
    const auto c = std::static_pointer_cast<capture_session>(e.record_->capture.lock());
    if (e.record_->owner != this) {
      ppipe::detail::fail(errc::invalid_argument, "wait() on stream '", l.name, "' for an event of a capture on "
                          "another device: a capture spans the streams of one device");
    }
    const std::lock_guard lock(mutex_);
    if (!c || c->state == nullptr) {
      ppipe::detail::fail(errc::invalid_argument, "wait() on stream '", l.name, "' for an event recorded during a "
                          "capture that has ended (on stream '", e.record_->stream_name, "'): such an event orders only "
                          "work of its capture; record one after end_capture(), or after launch()");
    }
    if (l.capture && l.capture != c) {
      ppipe::detail::fail(errc::invalid_argument, "wait() on stream '", l.name, "', which is capturing, for an "
                          "event of another capture: end one capture before the other uses its events");
    }
    check_call(cudaStreamWaitEvent(l.handle, e.record_->handle, 0), "cudaStreamWaitEvent", l);
    if (!l.capture) {
      l.capture = c;
      l.branch = c->branches.size();
      c->branches.push_back(&l);
      c->work.push_back(0);
      c->known.emplace_back();
      l.capturing.store(true, std::memory_order_release);
    }
    std::vector<std::uint64_t>& mine = c->known[l.branch];
    const std::vector<std::uint64_t>& theirs = e.record_->known;
    if (mine.size() < theirs.size()) mine.resize(theirs.size());
    for (std::size_t k = 0; k < theirs.size(); ++k) mine[k] = std::max(mine[k], theirs[k]);
  }

  // A copy or zero enqueued on a capturing stream is work the capture must join back.
  void count_captured_work(const lane& l) {
    if (!l.capturing.load(std::memory_order_acquire)) return;
    const std::lock_guard lock(mutex_);
    if (l.capture) ++l.capture->work[l.branch];
  }

  static void refuse_capture_event(const event& e, std::string_view what) {
    if (e.record_->of_capture) {
      ppipe::detail::fail(errc::invalid_argument, what, " of an event recorded during a capture (on stream '",
                          e.record_->stream_name, "'): it is a node of the graph and completes only in a launch; "
                          "use an event recorded after launch()");
    }
  }

  static std::string describe(const device_options& o) {
    return o.rank >= 0 ? ppipe::detail::concat("rank ", o.rank, " (GPU ", o.ordinal, ")")
                       : ppipe::detail::concat("GPU ", o.ordinal);
  }

  [[nodiscard]] lane& lane_of(const stream& s) const {
    if (s.owner_ != this || s.handle_ == nullptr) {
      ppipe::detail::fail(errc::invalid_argument,
                          s.handle_ == nullptr ? "a default-constructed stream" : "a stream of another device",
                          " was passed to ", where_, ": use a stream its create_stream() made");
    }
    const std::lock_guard lock(mutex_);
    return *lanes_[s.index_];
  }

  void check_owner(const event& e, std::string_view what) const {
    if (e.record_->owner != this) {
      ppipe::detail::fail(errc::invalid_argument, what, " of an event recorded on another device (stream '",
                          e.record_->stream_name, "'): use events of this device");
    }
  }

  static bool has(const std::vector<device*>& list, const device* d) {
    return std::find(list.begin(), list.end(), d) != list.end();
  }
  // A peer going away: its events and memory are no longer this device's to use.
  void forget(const device* other) noexcept {
    std::erase(peers_, other);
    std::erase(readers_, other);
  }

  // Events of this device or of a peer (CUDA orders a stream after another GPU's event).
  void check_peer(const event& e, std::string_view what) const {
    if (e.record_->owner != this && !peer_of(*static_cast<const device*>(e.record_->owner))) {
      ppipe::detail::fail(errc::invalid_argument, what, " of an event recorded on another device (stream '",
                          e.record_->stream_name, "'): use events of this device or of its peers (grant_peer())");
    }
  }

  static void refuse_while_capturing(const lane& l, std::string_view what) {
    if (l.capturing.load(std::memory_order_acquire)) {
      ppipe::detail::fail(errc::invalid_argument, what, " on stream '", l.name,
                          "' while it is being captured (the captured work has not run): call it before "
                          "begin_capture() or after end_capture()");
    }
  }

  void check_call(cudaError_t status, std::string_view call) const {
    if (status == cudaSuccess) return;
    static_cast<void>(cudaGetLastError());  // a sticky error stays; a plain one must not reach the next check
    cuda::detail::throw_error(status, ppipe::detail::concat(where_, ": ", call).c_str(), nullptr, 0);
  }
  void check_call(cudaError_t status, std::string_view call, const lane& l) const {
    if (status == cudaSuccess) return;
    check_call(status, ppipe::detail::concat("stream '", l.name, "': ", call));
  }

  // Polls `query` (cudaEventQuery or cudaStreamQuery) until it succeeds or the deadline passes:
  // yielding at first, then sleeping up to 100 us, so a long wait does not take a core.
  template <class Query>
  wait_status poll(deadline_clock::time_point deadline, Query query, const std::string& call) const {
    auto nap = std::chrono::microseconds(0);
    for (;;) {
      const cudaError_t status = query();
      if (status == cudaSuccess) return wait_status::ready;
      if (status != cudaErrorNotReady) check_call(status, call);
      if (deadline_clock::now() >= deadline) return wait_status::timed_out;
      if (nap.count() == 0) {
        std::this_thread::yield();
        nap = std::chrono::microseconds(1);
      } else {
        std::this_thread::sleep_for(nap);
        nap = std::min(nap * 2, std::chrono::microseconds(100));
      }
    }
  }

  [[nodiscard]] std::size_t pool_attribute(cudaMemPoolAttr attr) const {
    std::uint64_t value = 0;
    check_call(cudaMemPoolGetAttribute(pool_, attr, &value), "cudaMemPoolGetAttribute");
    return static_cast<std::size_t>(value);
  }
  [[nodiscard]] allocator_stats allocator_stats_or_zero() const noexcept {
    try {
      return memory();
    } catch (...) {
      return {};
    }
  }

  device_options options_;
  std::string where_;
  std::shared_ptr<detail::event_pool> events_;
  cudaMemPool_t pool_ = nullptr;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<lane>> lanes_;
  std::uint64_t allocations_ = 0;
  std::vector<device*> peers_;    // grant_peer()'s, either way, set before any work
  std::vector<device*> readers_;  // the peers granted access to this device's pool
  std::unordered_map<void*, std::size_t> host_live_;  // allocate_host()'s, by address
  std::multimap<std::size_t, void*> host_free_;       // given back, by size
  std::size_t host_reserved_ = 0;
  ppipe::detail::failure_state failure_;
  detail::finished_work finished_;
};

static_assert(stream_device<device>);
static_assert(capturing_stream_device<device>);
static_assert(host_staging_device<device>);

}  // namespace ppipe::cuda
