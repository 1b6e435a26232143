#pragma once
/// @file
/// @brief detail::cpu_stream: one stream of the CPU model, a worker thread that runs a FIFO of
/// items (host work, event records, event waits), and what its workers share: event marks, the
/// signal they complete on, and the device's sticky failure.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/device/failure.hpp"
#include "ppipe/device/vector_clock.hpp"
#include "ppipe/device/wait.hpp"
#include "ppipe/error.hpp"

namespace ppipe::detail {

/// A move-only `void()` task (std::function would demand a copyable callable, and
/// std::move_only_function is C++23).
class cpu_task {
 public:
  cpu_task() = default;
  template <class F>
    requires(!std::is_same_v<std::decay_t<F>, cpu_task>)
  explicit cpu_task(F&& fn) : impl_(std::make_unique<model<std::decay_t<F>>>(std::forward<F>(fn))) {}

  /// Runs the task; it may run again (a captured graph replays its tasks).
  void operator()() { impl_->run(); }
  [[nodiscard]] explicit operator bool() const noexcept { return impl_ != nullptr; }

 private:
  struct base {
    virtual ~base() = default;
    virtual void run() = 0;
  };
  template <class F>
  struct model final : base {
    template <class G>
    explicit model(G&& g) : fn(std::forward<G>(g)) {}
    void run() override { fn(); }
    F fn;
  };
  std::unique_ptr<base> impl_;
};

/// The completion mark behind an event: set once, by the worker that reaches the record.
struct event_mark {
  std::atomic<bool> done{false};
  deadline_clock::time_point at{};  ///< when the worker reached the record; read only after done
  const void* owner = nullptr;      ///< the devices' space, so that another space's event is refused
  std::size_t stream = 0;           ///< the stream it was recorded on
  std::string stream_name;          ///< for messages
  vector_clock clock;               ///< what the record is ordered after (the race checker's view)
  int waiters = 0;                  ///< threads blocked on this mark (guarded by the signal's mutex)
  std::condition_variable completed;  ///< what they block on: a completion wakes its own waiters only
  // Recorded during a capture: a node of the graph, which completes only in a launch.
  bool of_capture = false;
  std::weak_ptr<void> capture;       ///< the capture, while it goes on
  std::vector<std::uint64_t> known;  ///< per stream of the capture: how much of its work this follows
};

/// Where workers announce completed marks and waiters sleep: one mutex for the whole device, a
/// condition variable per mark. A completion wakes only the threads that wait on that very mark:
/// a thread woken for another's mark takes a core from the one that has work, and on a VM that
/// tripled the latency of a stream waking on an event (6 us to 17 us, measured).
struct completion_signal {
  std::mutex mutex;

  void complete(event_mark& m) {
    bool wake = false;
    {
      const std::lock_guard lock(mutex);
      m.at = deadline_clock::now();
      m.done.store(true, std::memory_order_release);
      wake = m.waiters > 0;
    }
    if (wake) m.completed.notify_all();
  }

  /// Blocks until `m` is done or `deadline` passes.
  wait_status wait(event_mark& m, deadline_clock::time_point deadline) {
    if (m.done.load(std::memory_order_acquire)) return wait_status::ready;
    std::unique_lock lock(mutex);
    const auto done = [&] { return m.done.load(std::memory_order_acquire); };
    ++m.waiters;
    bool ready = true;
    if (deadline == deadline_clock::time_point::max()) {
      m.completed.wait(lock, done);
    } else {
      ready = m.completed.wait_until(lock, deadline, done);
    }
    --m.waiters;
    return ready ? wait_status::ready : wait_status::timed_out;
  }
};

/// One item of a stream's FIFO.
struct stream_item {
  enum class kind : unsigned char {
    work,    ///< host work, a copy or a zero: skipped once the device failed or was aborted
    always,  ///< bookkeeping that must run even then (a release)
    record,  ///< completes `mark`
    wait,    ///< blocks the stream until `mark` completes
  };
  kind what = kind::work;
  cpu_task fn;
  std::shared_ptr<event_mark> mark;
  std::string label;
};

/// A stream of the CPU model: a worker thread running its items in FIFO order. Destruction runs
/// what is queued, then joins the worker.
class cpu_stream {
 public:
  /// @param delay_seed seeds the random delays before each item (deterministic per stream).
  /// @param max_delay the longest delay; zero for none.
  cpu_stream(std::string name, std::size_t index, completion_signal& signal, failure_state& failure,
             std::uint64_t delay_seed, std::chrono::microseconds max_delay)
      : name_(std::move(name)), index_(index), signal_(signal), failure_(failure), random_(delay_seed),
        max_delay_(max_delay), worker_([this] { run(); }) {}

  cpu_stream(const cpu_stream&) = delete;
  cpu_stream& operator=(const cpu_stream&) = delete;

  ~cpu_stream() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    queued_.notify_all();
    worker_.join();
  }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::size_t index() const noexcept { return index_; }

  /// Appends an item; returns its number in the stream (1, 2, ...).
  std::uint64_t push(stream_item item) {
    std::uint64_t n = 0;
    {
      const std::lock_guard lock(mutex_);
      items_.push_back(std::move(item));
      n = ++pushed_;
    }
    queued_.notify_one();
    return n;
  }

  /// Blocks until the first `count` items have run, or `deadline` passes.
  wait_status wait_until_done(std::uint64_t count, deadline_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    const auto done = [&] { return finished_ >= count; };
    if (done()) return wait_status::ready;
    // Registered, so that the worker wakes this thread when its count is reached, not after every
    // item: a host thread woken per item takes the core from the work it waits for.
    const auto target = targets_.insert(count);
    bool ready = true;
    if (deadline == deadline_clock::time_point::max()) {
      ran_.wait(lock, done);
    } else {
      ready = ran_.wait_until(lock, deadline, done);
    }
    targets_.erase(target);
    return ready ? wait_status::ready : wait_status::timed_out;
  }

  /// How many items have run so far.
  [[nodiscard]] std::uint64_t finished() const {
    const std::lock_guard lock(mutex_);
    return finished_;
  }

  /// How many items have been pushed so far.
  [[nodiscard]] std::uint64_t pushed() const {
    const std::lock_guard lock(mutex_);
    return pushed_;
  }

  /// Whether every item pushed has run.
  [[nodiscard]] bool idle() const {
    const std::lock_guard lock(mutex_);
    return finished_ == pushed_;
  }

  /// What the worker is doing now, for timeout messages.
  [[nodiscard]] std::string status() const {
    const std::lock_guard lock(mutex_);
    const std::uint64_t queued = pushed_ - finished_;
    if (queued == 0) return concat("stream '", name_, "' is idle");
    if (current_ == nullptr) return concat("stream '", name_, "' has ", queued, " item", queued == 1 ? "" : "s", " queued");
    std::string doing;
    if (current_->what == stream_item::kind::wait) {
      doing = concat("waits for an event recorded on stream '", current_->mark->stream_name, "'");
    } else if (current_->what == stream_item::kind::record) {
      doing = "records an event";
    } else {
      doing = concat("runs '", current_->label, "'");
    }
    return concat("stream '", name_, "' ", doing, " (", queued, " item", queued == 1 ? "" : "s",
                  " not finished, this one included)");
  }

 private:
  void run() {
    for (;;) {
      stream_item item;
      {
        std::unique_lock lock(mutex_);
        queued_.wait(lock, [&] { return stopping_ || !items_.empty(); });
        if (items_.empty()) return;
        item = std::move(items_.front());
        items_.pop_front();
        current_ = &item;
      }
      if (max_delay_.count() > 0) {
        std::uniform_int_distribution<std::int64_t> pick(0, max_delay_.count());
        const auto pause = std::chrono::microseconds(pick(random_));
        if (pause.count() > 0) std::this_thread::sleep_for(pause);
      }
      execute(item);
      bool wake = false;
      {
        const std::lock_guard lock(mutex_);
        current_ = nullptr;
        ++finished_;
        // Completed with the count, so that a stream whose last event is complete is idle.
        if (item.what == stream_item::kind::record) signal_.complete(*item.mark);
        wake = !targets_.empty() && finished_ >= *targets_.begin();
      }
      if (wake) ran_.notify_all();
    }
  }

  void execute(stream_item& item) {
    switch (item.what) {
      case stream_item::kind::record: return;  // completed by run(), with the count
      case stream_item::kind::wait: static_cast<void>(signal_.wait(*item.mark, deadline_clock::time_point::max())); return;
      case stream_item::kind::work:
        if (failure_.skipping()) return;
        break;
      case stream_item::kind::always: break;
    }
    try {
      item.fn();
    } catch (...) {
      failure_.fail(failure_at(concat("stream '", name_, "', item '", item.label, "'")));
    }
  }

  std::string name_;
  std::size_t index_;
  completion_signal& signal_;
  failure_state& failure_;
  std::mt19937_64 random_;
  std::chrono::microseconds max_delay_;

  mutable std::mutex mutex_;
  std::condition_variable queued_;
  std::condition_variable ran_;
  std::deque<stream_item> items_;
  const stream_item* current_ = nullptr;
  std::uint64_t pushed_ = 0;
  std::uint64_t finished_ = 0;
  std::multiset<std::uint64_t> targets_;  // the counts that threads in wait_until_done() wait for
  bool stopping_ = false;
  std::thread worker_;  // last: it starts running in the constructor, after everything above
};

}  // namespace ppipe::detail
