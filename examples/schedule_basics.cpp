// Schedules as data, in five steps: generate, inspect, validate, simulate, draw. The snippets in
// docs/schedules.md are copied from this file, and a test keeps them in step.
#include <iostream>

#include <ppipe/ppipe.hpp>

int main() {
  // 1. Generate: 1F1B over p=4 ranks with m=8 microbatches.
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::one_f_one_b{}, {4, 8, 1});

  // 2. Inspect: each rank's ordered actions, transfers included.
  for (const ppipe::action& a : plan.ranks[1]) std::cout << ppipe::to_string(a) << ' ';
  std::cout << '\n';

  // 3. Validate: complete, correctly ordered, matched transfers, no deadlock.
  ppipe::validate(plan);

  // A hand-written schedule that deadlocks: rank 0 waits for microbatch 0's gradient before it
  // sends microbatch 1, while rank 1 needs microbatch 1 before it sends that gradient.
  ppipe::schedule broken{"broken", ppipe::placement::looped(2), 2, ppipe::schedule_mode::training,
                         {ppipe::parse_actions("0F0 0B0 0F1 0B1"), ppipe::parse_actions("1F0 1F1 1B0 1B1")}};
  broken = ppipe::add_communication(std::move(broken));  // insert the sends and receives
  const ppipe::validation_report report = ppipe::check_schedule(broken);
  if (!report.ok()) std::cout << report.message() << '\n';

  // 4. Simulate: forward 1, backward 2 time units per stage, free transfers.
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(1.0, 2.0));
  std::cout << "step time " << sim.makespan << ", bubble " << sim.bubble_fraction() << " of the step\n";

  // 5. Draw: the rank-by-time chart, and any advice.
  std::cout << ppipe::render_timeline(plan, sim);
  for (const std::string& warning : ppipe::advise(plan, sim)) std::cout << "warning: " << warning << '\n';
  return report.ok() ? 1 : 0;  // the broken schedule must have been caught
}
