// Partitioning a model, in five steps: describe the layers, pose the problem for a schedule, split,
// predict, compare. The snippets in docs/partitioning.md are copied from this file, and a test
// keeps them in step.
#include <iostream>
#include <vector>

#include <ppipe/ppipe.hpp>

int main() {
  // 1. Describe the model: per layer, forward and backward time on a reference device, parameter
  //    memory and activation memory per microbatch (here in GiB). Or time your own layers with
  //    ppipe::profile_layers(n, forward, backward).
  std::vector<ppipe::layer_cost> layers(32, ppipe::layer_cost{1.0, 2.0, 0.4, 0.35});
  layers.back() = {4.0, 8.0, 1.5, 0.6};  // a heavy output layer

  // 2. Pose the problem for the schedule you will run, on your devices (speed, memory, name).
  const ppipe::schedule plan = ppipe::make_schedule("1f1b", {2, 8, 1});
  const std::vector<ppipe::device_spec> devices{{1.0, 24.0, "RTX 4090"}, {0.6, 24.0, "RTX 3090"}};
  const auto problem = ppipe::partition_problem::for_schedule(plan, layers, devices);

  // 3. Split: fastest step within each device's memory, and the report explains the choice.
  const ppipe::partition_report split = ppipe::plan_partition(ppipe::partitioners::heterogeneous{}, problem);
  std::cout << split.summary() << '\n';

  // 4. Predict: simulate the schedule with the split's stage costs; peak memory per rank.
  const ppipe::plan_prediction predicted = ppipe::predict(plan, problem, split.split);
  std::cout << "step time " << predicted.step_time() << ", bubble " << predicted.bubble() << '\n';
  for (std::size_t r = 0; r < predicted.rank_memory.size(); ++r) {
    std::cout << split.ranks[r].name << ": " << predicted.rank_memory[r] << " GiB of " << devices[r].memory << '\n';
  }

  // 5. Compare: the even split, as most frameworks do it, on the same schedule.
  const ppipe::partition_report even = ppipe::plan_partition(ppipe::partitioners::uniform{}, problem);
  const ppipe::plan_prediction baseline = ppipe::predict(plan, problem, even.split);
  std::cout << "uniform " << even.sizes() << ": step time " << baseline.step_time()
            << (baseline.fits() ? "" : ", does not fit in memory") << '\n';
  return predicted.step_time() < baseline.step_time() ? 0 : 1;
}
