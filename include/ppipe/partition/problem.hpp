#pragma once
/// @file
/// @brief What a partitioner is asked: the model's per-layer costs and memory, the schedule's
/// placement and in-flight activations, and each rank's device.

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/in_flight.hpp"
#include "ppipe/schedule/placement.hpp"
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
struct partition_problem {
  std::vector<layer_cost> layers;     ///< the model, layer by layer, in order
  placement place;                    ///< which rank runs each stage
  /// Training (forward and backward, activations held until the backward) or inference (forward only).
  schedule_mode mode = schedule_mode::training;
  std::vector<int> in_flight;         ///< per stage: peak microbatches of activations held
  std::vector<device_spec> devices;   ///< one per rank; empty: identical devices, no memory limit

  /// @brief The problem of splitting `layers` over the stages of schedule `s`, on `devices`
  /// (one per rank of `s`, or none for identical devices without a memory limit).
  /// @param s the schedule the split will run under: gives the placement, the mode and, by
  /// in_flight_peaks(), each stage's peak microbatches in flight. A stage that recomputes (R
  /// actions) counts the microbatches it holds and stashes at the same moment as if all were held
  /// in full (activation_peaks()'s total_stage; without R, in_flight_peaks()): an upper bound,
  /// since the partitioners do not yet know the size of a stage's input and output
  /// @param layers one cost per layer of the model, in order
  /// @param devices one per rank of `s`, or empty
  /// @return the checked problem
  /// @throws ppipe::error (errc::invalid_argument) when the problem fails check()
  static partition_problem for_schedule(const schedule& s, std::vector<layer_cost> layers,
                                        std::vector<device_spec> devices = {}) {
    std::vector<int> in_flight = activation_peaks(s.ranks, s.num_stages(), s.microbatches, s.mode).total_stage;
    partition_problem out{std::move(layers), s.place, s.mode, std::move(in_flight), std::move(devices)};
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
