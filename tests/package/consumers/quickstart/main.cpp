// The README's quick start, verbatim: plan a pipeline and read off its bubble and memory.
#include <iostream>

#include <ppipe/ppipe.hpp>

int main() {
  // 1F1B on 4 ranks with 16 microbatches; each stage's forward costs 1, its backward 2.
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::one_f_one_b{}, {4, 16, 1});
  ppipe::validate(plan);  // complete and deadlock-free, or a ppipe::error saying where not
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(1.0, 2.0));
  std::cout << "bubble " << sim.bubble_fraction() << " of the step, stage 0 holds "
            << sim.peak_stage_activations[0] << " microbatches of activations\n";
  std::cout << ppipe::render_timeline(plan, sim);
}
