#pragma once
/// @file
/// @brief What a partitioner is asked: the model's per-layer costs and memory, the schedule's
/// placement and in-flight activations, and each rank's device.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/in_flight.hpp"
#include "ppipe/schedule/placement.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief One layer, measured on a reference device for one microbatch. Times are in any one unit;
/// memory is in any one unit (bytes, MiB, ...) that device_spec::memory shares.
struct layer_cost {
  double forward = 1.0;   ///< forward time
  double backward = 2.0;  ///< backward time (input and weight gradients); unused for inference
  /// Memory the layer keeps on its device whatever the microbatches: weights, and for training
  /// their gradients and optimizer state.
  double parameter_memory = 0.0;
  /// Memory one microbatch's activations take from the layer's forward until its backward has
  /// used them (for inference: the working memory of one forward).
  double activation_memory = 0.0;
};

/// @brief The device of one pipeline rank.
struct device_spec {
  /// Speed relative to the device the layer costs were measured on: a stage's time on this rank is
  /// its cost / speed. An RTX 3090 beside a 4090 measured as reference might be 0.6.
  double speed = 1.0;
  /// Capacity, in the unit of layer_cost's memory; infinity means no limit.
  double memory = std::numeric_limits<double>::infinity();
  std::string name;  ///< for messages and reports, e.g. "RTX 4090"; empty gives "rank r"
};

/// @brief Everything a partitioner needs. Build it with partition_problem::for_schedule(), which
/// takes the placement and the in-flight counts from the schedule you will run.
///
/// Memory of a stage: its layers' parameter_memory, plus in_flight microbatches of its layers'
/// activation_memory. Where it recomputes, the smaller of that and `held` microbatches in full plus
/// `stashed` microbatches of what its policy keeps: the activation_memory of each layer whose
/// input it keeps (a layer's activation_memory is taken to include its input). Both are upper
/// bounds (the held and stashed peaks may fall at different moments); predict() replays the
/// schedule for the exact peak.
struct partition_problem {
  std::vector<layer_cost> layers;     ///< the model, layer by layer, in order
  placement place;                    ///< which rank runs each stage
  /// Training (forward and backward, activations held until the backward) or inference (forward only).
  schedule_mode mode = schedule_mode::training;
  /// Per stage: peak microbatches in flight at one moment, held in full or stashed for their R.
  std::vector<int> in_flight;
  std::vector<device_spec> devices;   ///< one per rank; empty: identical devices, no memory limit
  /// Per stage: what a recomputed microbatch keeps (recompute_policy); empty: no stage recomputes.
  std::vector<recompute_policy> recompute{};
  /// Per stage: peak microbatches held in full; empty where no stage recomputes (then in_flight).
  std::vector<int> held{};
  /// Per stage: peak microbatches stashed for their R, holding only what `recompute` keeps; empty
  /// where no stage recomputes.
  std::vector<int> stashed{};

  /// @brief The problem of splitting `layers` over the stages of schedule `s`, on `devices`
  /// (one per rank of `s`, or none for identical devices without a memory limit), with the
  /// recomputation `recompute` asks for.
  /// @param s the schedule the split will run under: gives the placement, the mode and, by
  /// activation_peaks(), each stage's peak microbatches held and stashed
  /// @param layers one cost per layer of the model, in order
  /// @param devices one per rank of `s`, or empty
  /// @param recompute one policy per stage, or one for all, or none: the stages that recompute get
  /// their R actions (with_recompute()) before the counting; a stage with R actions of its own in
  /// `s` and no policy here recomputes in full, as the runtime does
  /// @return the checked problem
  /// @throws ppipe::error (errc::invalid_argument) when `recompute` has another size, when it asks a
  /// forward-only schedule to recompute, or when the problem fails check()
  static partition_problem for_schedule(const schedule& s, std::vector<layer_cost> layers,
                                        std::vector<device_spec> devices = {},
                                        const std::vector<recompute_policy>& recompute = {}) {
    const int S = s.num_stages();
    if (recompute.size() > 1 && recompute.size() != static_cast<std::size_t>(S)) {
      detail::fail(errc::invalid_argument, recompute.size(), " recompute policies were given for schedule \"", s.name,
                   "\" of ", S, " stages; give one per stage, one for all, or none");
    }
    const auto m = static_cast<std::size_t>(std::max(s.microbatches, 0));
    const std::vector<char> has_r = recompute_table(s.ranks, S, s.microbatches);
    std::vector<recompute_policy> policies(static_cast<std::size_t>(S));
    std::vector<bool> marked(static_cast<std::size_t>(S), false);
    bool any = false;
    for (std::size_t st = 0; st < policies.size(); ++st) {
      if (!recompute.empty()) policies[st] = recompute.size() == 1 ? recompute.front() : recompute[st];
      const bool own = std::any_of(has_r.begin() + static_cast<std::ptrdiff_t>(st * m),
                                   has_r.begin() + static_cast<std::ptrdiff_t>((st + 1) * m), [](char c) { return c != 0; });
      if (own && !policies[st].recomputes()) policies[st] = recompute_policy::full;
      marked[st] = policies[st].recomputes();
      any = any || marked[st];
    }
    const schedule run = any ? with_recompute(s, marked) : s;
    const held_peaks peaks = activation_peaks(run.ranks, S, run.microbatches, run.mode);
    partition_problem out{std::move(layers), s.place, s.mode, peaks.total_stage, std::move(devices)};
    if (any) {
      out.recompute = std::move(policies);
      out.held = peaks.stage;
      out.stashed = peaks.stashed_stage;
    }
    out.check();
    return out;
  }

  /// @brief The model's layer count L.
  /// @return the size of `layers`
  [[nodiscard]] int num_layers() const noexcept { return static_cast<int>(layers.size()); }
  /// @brief The stage count S of the placement.
  /// @return S
  [[nodiscard]] int num_stages() const noexcept { return place.num_stages(); }
  /// @brief The rank count p of the placement.
  /// @return p
  [[nodiscard]] int num_ranks() const noexcept { return place.num_ranks(); }
  /// @brief Whether the problem is a training one (backward costs count).
  /// @return true when `mode` is schedule_mode::training
  [[nodiscard]] bool training() const noexcept { return mode == schedule_mode::training; }

  /// @brief Stage `s`'s recompute policy.
  /// @param s a stage in [0, num_stages())
  /// @return recompute[s], or none when `recompute` is empty
  [[nodiscard]] recompute_policy policy(int s) const {
    return recompute.empty() ? recompute_policy::none : recompute.at(static_cast<std::size_t>(s));
  }
  /// @brief Stage `s`'s peak microbatches held in full.
  /// @param s a stage in [0, num_stages())
  /// @return held[s], or in_flight[s] when `held` is empty
  [[nodiscard]] int held_of(int s) const {
    return held.empty() ? in_flight.at(static_cast<std::size_t>(s)) : held.at(static_cast<std::size_t>(s));
  }
  /// @brief Stage `s`'s peak memory if it holds layers [first, end): its parameters plus the
  /// smaller of the two bounds on its activations (see partition_problem).
  /// @param s a stage
  /// @param first its first layer
  /// @param end one past its last layer
  /// @return the memory, in the unit of layer_cost's memory
  [[nodiscard]] double stage_memory(int s, int first, int end) const {
    double params = 0;
    double acts = 0;
    for (int l = first; l < end; ++l) {
      params += layers[static_cast<std::size_t>(l)].parameter_memory;
      acts += layers[static_cast<std::size_t>(l)].activation_memory;
    }
    const double all = in_flight.at(static_cast<std::size_t>(s)) * acts;
    if (stashed_of(s) == 0) return params + all;
    return params + std::min(all, held_of(s) * acts + stashed_of(s) * stashed_memory(s, first, end));
  }
  /// @brief Stage `s`'s peak stashed microbatches.
  /// @param s a stage in [0, num_stages())
  /// @return stashed[s], or 0 when `stashed` is empty
  [[nodiscard]] int stashed_of(int s) const {
    return stashed.empty() ? 0 : stashed.at(static_cast<std::size_t>(s));
  }
  /// @brief The forward time that stage `s`'s R re-runs per microbatch if it holds layers
  /// [first, end): the forward of each layer whose output its policy does not keep.
  /// @param s a stage
  /// @param first its first layer
  /// @param end one past its last layer
  /// @return the time, in the unit of layer_cost's times; 0 when the stage does not recompute
  [[nodiscard]] double recompute_time(int s, int first, int end) const {
    const recompute_policy p = policy(s);
    double t = 0;
    if (!p.recomputes() || !training()) return t;
    for (int l = first; l + 1 < end; ++l) {
      if (!p.keeps(l + 1 - first)) t += layers[static_cast<std::size_t>(l)].forward;
    }
    return t;
  }
  /// @brief What one stashed microbatch of stage `s` keeps if it holds layers [first, end): the
  /// activation_memory of each layer whose input its policy keeps.
  /// @param s a stage
  /// @param first its first layer
  /// @param end one past its last layer
  /// @return the memory, in the unit of layer_cost's memory; all of it when the stage does not recompute
  [[nodiscard]] double stashed_memory(int s, int first, int end) const {
    const recompute_policy p = policy(s);
    double m = 0;
    for (int l = first; l < end; ++l) {
      if (p.keeps(l - first)) m += layers[static_cast<std::size_t>(l)].activation_memory;
    }
    return m;
  }

  /// @brief The cost the partitioners balance for layer `i`: forward + backward when training,
  /// forward for inference.
  /// @param i a layer in [0, num_layers()); not checked
  /// @return the cost, in the unit of layer_cost's times
  [[nodiscard]] double cost(std::size_t i) const noexcept {
    return training() ? layers[i].forward + layers[i].backward : layers[i].forward;
  }
  /// @brief Rank `r`'s device (the default device when none were given).
  /// @param r a rank in [0, num_ranks())
  /// @return a copy of its device_spec; speed 1 and no memory limit when `devices` is empty
  /// @throws std::out_of_range when `devices` is not empty and `r` is not one of its indices
  [[nodiscard]] device_spec device(int r) const {
    return devices.empty() ? device_spec{} : devices.at(static_cast<std::size_t>(r));
  }
  /// @brief "rank r" or "rank r (name)".
  /// @param r a rank in [0, num_ranks())
  /// @return the name messages and reports use for the rank; "(name)" only where its device has one
  /// @throws std::out_of_range when `devices` is not empty and `r` is not one of its indices
  [[nodiscard]] std::string rank_name(int r) const {
    const std::string n = devices.empty() ? std::string() : devices.at(static_cast<std::size_t>(r)).name;
    return detail::concat("rank ", r, n.empty() ? "" : " (", n, n.empty() ? "" : ")");
  }

  /// @brief Throws ppipe::error naming the first bad value: no layers, fewer layers than stages,
  /// a cost that is not a finite time > 0, negative or non-finite memory, a device count that is
  /// not the rank count, a speed that is not finite and > 0, a capacity that is not > 0.
  void check() const {
    const int S = num_stages();
    if (S < 1) {
      detail::fail(errc::invalid_argument, "the partition problem has no stages; build it with "
                   "partition_problem::for_schedule(schedule, layers)");
    }
    if (layers.empty()) {
      detail::fail(errc::invalid_argument, "the model has no layers; give one layer_cost per layer");
    }
    if (layers.size() > (1U << 30)) {
      detail::fail(errc::invalid_argument, "the model has ", layers.size(),
                   " layers, more than ppipe supports (2^30)");
    }
    if (num_layers() < S) {
      detail::fail(errc::invalid_argument, "the model has ", num_layers(), " layers but the schedule has ", S,
                   " stages; every stage needs at least one layer, so use at most ", num_layers(),
                   " stages (fewer ranks, or fewer virtual stages per rank)");
    }
    if (in_flight.size() != static_cast<std::size_t>(S)) {
      detail::fail(errc::invalid_argument, "in_flight has ", in_flight.size(), " entries for ", S,
                   " stages; give one per stage (in_flight_peaks(schedule) computes them)");
    }
    for (std::size_t s = 0; s < in_flight.size(); ++s) {
      if (in_flight[s] < 0) {
        detail::fail(errc::invalid_argument, "stage ", s, " has in_flight ", in_flight[s],
                     "; a stage holds zero or more microbatches");
      }
    }
    if (!recompute.empty() && recompute.size() != static_cast<std::size_t>(S)) {
      detail::fail(errc::invalid_argument, "recompute has ", recompute.size(), " entries for ", S,
                   " stages; give one per stage, or none (partition_problem::for_schedule fills it)");
    }
    if (!held.empty() && held.size() != static_cast<std::size_t>(S)) {
      detail::fail(errc::invalid_argument, "held has ", held.size(), " entries for ", S,
                   " stages; give one per stage, or none (partition_problem::for_schedule fills it)");
    }
    for (std::size_t s = 0; s < held.size(); ++s) {
      if (held[s] < 0) {
        detail::fail(errc::invalid_argument, "stage ", s, " has held ", held[s], "; a stage holds zero or more microbatches");
      }
    }
    if (!stashed.empty() && stashed.size() != static_cast<std::size_t>(S)) {
      detail::fail(errc::invalid_argument, "stashed has ", stashed.size(), " entries for ", S,
                   " stages; give one per stage, or none (partition_problem::for_schedule fills it)");
    }
    if (!training() && (!held.empty() || !stashed.empty() ||
                        std::any_of(recompute.begin(), recompute.end(), [](recompute_policy p) { return p.recomputes(); }))) {
      detail::fail(errc::invalid_argument, "an inference problem has recomputation (recompute, held or stashed "
                   "set); a forward-only step keeps no activations to recompute, so leave them empty");
    }
    for (std::size_t s = 0; s < stashed.size(); ++s) {
      if (stashed[s] < 0 || (stashed[s] > 0 && !policy(static_cast<int>(s)).recomputes())) {
        detail::fail(errc::invalid_argument, "stage ", s, " has stashed ", stashed[s], " with recompute policy ",
                     to_string(policy(static_cast<int>(s))),
                     "; only a stage that recomputes stashes, zero or more microbatches");
      }
    }
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const layer_cost& l = layers[i];
      check_time(i, "forward", l.forward);
      if (training()) check_time(i, "backward", l.backward);
      check_memory(i, "parameter_memory", l.parameter_memory);
      check_memory(i, "activation_memory", l.activation_memory);
    }
    if (!devices.empty() && devices.size() != static_cast<std::size_t>(num_ranks())) {
      detail::fail(errc::invalid_argument, devices.size(), " devices were given for ", num_ranks(),
                   " ranks; give one device_spec per rank, or none for identical devices");
    }
    for (std::size_t r = 0; r < devices.size(); ++r) {
      const device_spec& d = devices[r];
      if (!std::isfinite(d.speed) || d.speed <= 0) {
        detail::fail(errc::invalid_argument, rank_name(static_cast<int>(r)), " has speed ", d.speed,
                     "; a speed is a finite factor > 0 relative to the device the costs were measured on");
      }
      if (std::isnan(d.memory) || d.memory <= 0) {
        detail::fail(errc::invalid_argument, rank_name(static_cast<int>(r)), " has memory capacity ", d.memory,
                     "; give a capacity > 0, or infinity for no limit");
      }
    }
  }

 private:
  static void check_time(std::size_t i, const char* what, double value) {
    if (!std::isfinite(value) || value <= 0) {
      detail::fail(errc::invalid_argument, "layer ", i, " has ", what, " cost ", value,
                   "; every layer cost must be a finite time > 0 (measure it, e.g. with profile_layers)");
    }
  }
  static void check_memory(std::size_t i, const char* what, double value) {
    if (!std::isfinite(value) || value < 0) {
      detail::fail(errc::invalid_argument, "layer ", i, " has ", what, " ", value,
                   "; memory must be finite and >= 0");
    }
  }
};

}  // namespace ppipe
