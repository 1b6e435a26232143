#pragma once
/// @file
/// @brief Measures per-layer costs for the partitioners by timing the user's own layer functions.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/partition/problem.hpp"

namespace ppipe {

/// @brief How profile_layers() times each layer.
struct profile_options {
  int warmup = 2;   ///< untimed runs first (caches, allocators, lazy initialisation, GPU clocks)
  int repeats = 7;  ///< timed runs; the median is kept, so a few outliers do not matter
};

namespace detail {

inline void check_profile_options(const profile_options& o) {
  if (o.warmup < 0 || o.repeats < 1) {
    fail(errc::invalid_argument, "profile options warmup=", o.warmup, " repeats=", o.repeats,
         " are not usable; give warmup >= 0 and repeats >= 1");
  }
}

}  // namespace detail

/// @brief The median time, in seconds of `Clock`, of `options.repeats` calls of `fn()` after
/// `options.warmup` untimed calls. For GPU work, `fn` must synchronise before it returns (e.g.
/// cudaStreamSynchronize), or only the launch is timed.
/// @tparam Clock the clock that times the calls (a std::chrono clock)
/// @tparam Fn a callable with no arguments; what it returns is ignored
/// @param fn the work to time; called options.warmup + options.repeats times
/// @param options the untimed and timed call counts
/// @return the median of the timed calls, in seconds (the mean of the middle two for an even count)
/// @throws ppipe::error (errc::invalid_argument) when options.warmup < 0 or options.repeats < 1;
/// what `fn` throws passes through
template <class Clock = std::chrono::steady_clock, class Fn>
double median_seconds(Fn&& fn, profile_options options = {}) {
  detail::check_profile_options(options);
  for (int i = 0; i < options.warmup; ++i) fn();
  std::vector<double> times;
  times.reserve(static_cast<std::size_t>(options.repeats));
  for (int i = 0; i < options.repeats; ++i) {
    const auto start = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  const auto mid = times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2);
  std::nth_element(times.begin(), mid, times.end());
  if (times.size() % 2 == 1) return *mid;
  return (*mid + *std::max_element(times.begin(), mid)) / 2;
}

/// @brief Times `layers` layers: `forward(i)` and `backward(i)` run layer i's forward and backward
/// on one microbatch. Returns each layer's median times, in seconds, ready for the partitioners
/// (fill in the memory fields yourself). A layer that times at 0 (a clock too coarse for it) is
/// reported with the clock's smallest tick, so that every cost stays > 0.
/// @tparam Clock the clock that times the calls (a std::chrono clock)
/// @tparam Forward a callable as `forward(int layer)`
/// @tparam Backward a callable as `backward(int layer)`
/// @param layers the layer count, >= 1; layers 0..layers-1 are timed in order
/// @param forward runs one layer's forward on one microbatch
/// @param backward runs one layer's backward on one microbatch
/// @param options the untimed and timed calls per layer and direction
/// @return one layer_cost per layer: forward and backward in seconds, memory fields 0
/// @throws ppipe::error (errc::invalid_argument) when `layers` < 1 or `options` are not usable (see
/// median_seconds()); what `forward` or `backward` throws passes through
template <class Clock = std::chrono::steady_clock, class Forward, class Backward>
std::vector<layer_cost> profile_layers(int layers, Forward&& forward, Backward&& backward,
                                       profile_options options = {}) {
  detail::check_profile_options(options);
  if (layers < 1) {
    detail::fail(errc::invalid_argument, "profile_layers needs at least one layer (layers=", layers, ")");
  }
  const double tick = std::chrono::duration<double>(typename Clock::duration(1)).count();
  std::vector<layer_cost> out(static_cast<std::size_t>(layers));
  for (int i = 0; i < layers; ++i) {
    layer_cost& c = out[static_cast<std::size_t>(i)];
    c.forward = std::max(tick, median_seconds<Clock>([&] { forward(i); }, options));
    c.backward = std::max(tick, median_seconds<Clock>([&] { backward(i); }, options));
  }
  return out;
}

/// @brief Times the forwards only, for inference plans: backward is left at 0, which a training
/// problem rejects (time the backward too for training).
/// @tparam Clock the clock that times the calls (a std::chrono clock)
/// @tparam Forward a callable as `forward(int layer)`
/// @param layers the layer count, >= 1
/// @param forward runs one layer's forward on one microbatch
/// @param options the untimed and timed calls per layer
/// @return one layer_cost per layer: forward in seconds, backward and memory fields 0
/// @throws ppipe::error as profile_layers() does
template <class Clock = std::chrono::steady_clock, class Forward>
std::vector<layer_cost> profile_forward(int layers, Forward&& forward, profile_options options = {}) {
  auto out = profile_layers<Clock>(layers, forward, [](int) {}, options);
  for (layer_cost& c : out) c.backward = 0;
  return out;
}

}  // namespace ppipe
