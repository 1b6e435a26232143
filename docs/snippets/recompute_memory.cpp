// recompute_memory: the snippet of docs/runtime.md's "Activation recomputation". The layer kit's MLP
// trained under GPipe and under ZB-H1, with and without recomputation on every stage: the losses
// and the weights come out bit for bit the same, each stage holds what the simulator predicts, and
// with recomputation the stages hold fewer bytes at their peak. Fails unless all of that holds.

#include <cstdio>
#include <string>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>

namespace {

struct outcome {
  std::vector<double> losses;
  std::vector<float> weights;
  std::vector<std::size_t> peak_bytes;
  bool as_simulated = true;
};

outcome train(const std::string& schedule, bool recompute) {
  auto model = ppipe::layers::sequential::mlp({16, 64, 64, 64, 64, 4}, 11);
  const ppipe::layers::sgd sgd(0.05f);
  ppipe::pipeline_options o;
  o.ranks = 2;
  o.microbatches = 8;
  o.schedule = ppipe::make_schedule(schedule, {2, 8, 1});
  if (recompute) o.recompute = {ppipe::recompute_policy::full};  // or one policy per stage
  ppipe::pipeline<ppipe::layers::sequential> pipe(model, o, ppipe::layers::mse_loss{},
                                                  [&](const ppipe::stage_info& s) { sgd.step(model, s); });
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{64, 16})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{64, 4})};
  for (std::size_t i = 0; i < x[0].size(); ++i) x[0][i] = 0.01f * static_cast<float>(i % 97);
  for (std::size_t i = 0; i < y[0].size(); ++i) y[0][i] = 0.5f;
  outcome out;
  for (int step = 0; step < 5; ++step) out.losses.push_back(pipe.train_step(x, y));
  model.for_each_parameter(0, model.num_layers(), [&](ppipe::tensor_view w, ppipe::tensor_view) {
    for (std::size_t i = 0; i < w.elements; ++i) out.weights.push_back(w.as<float>()[i]);
  });
  const ppipe::simulation sim = ppipe::simulate(pipe.training_schedule(), ppipe::cost_model::uniform(1, 2));
  for (int s = 0; s < 2; ++s) {
    const ppipe::memory_stats& m = pipe.memory(s);
    out.peak_bytes.push_back(m.peak_bytes);
    out.as_simulated = out.as_simulated && m.peak_microbatches == sim.peak_stage_activations[static_cast<std::size_t>(s)] &&
                       m.peak_stashed == sim.peak_stage_stashed[static_cast<std::size_t>(s)];
    std::printf("%-6s %-9s stage %d: held at most %d microbatches, stashed %d, peak %zu bytes\n", schedule.c_str(),
                recompute ? "recompute" : "keep all", s, m.peak_microbatches, m.peak_stashed, m.peak_bytes);
  }
  return out;
}

}  // namespace

int main() {
  int failures = 0;
  for (const char* schedule : {"gpipe", "zb_h1"}) {
    const outcome kept = train(schedule, false);
    const outcome recomputed = train(schedule, true);
    const bool same = kept.losses == recomputed.losses && kept.weights == recomputed.weights;
    // No stage holds more; one that holds several microbatches at once holds less.
    const bool smaller = recomputed.peak_bytes[0] <= kept.peak_bytes[0] && recomputed.peak_bytes[1] <= kept.peak_bytes[1] &&
                         (recomputed.peak_bytes[0] < kept.peak_bytes[0] || recomputed.peak_bytes[1] < kept.peak_bytes[1]);
    std::printf("%s: %s, %s, %s\n", schedule, same ? "the same bits" : "DIFFERENT BITS",
                smaller ? "less memory" : "NOT LESS MEMORY",
                kept.as_simulated && recomputed.as_simulated ? "as simulated" : "NOT AS SIMULATED");
    failures += same && smaller && kept.as_simulated && recomputed.as_simulated ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}
