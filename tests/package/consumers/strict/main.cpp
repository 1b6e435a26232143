// Uses the installed headers as a careful downstream project does, built with warnings as errors at
// the optimisation levels of CMake's Release and RelWithDebInfo: plans, draws and reads back a
// schedule, trains and serves the layer kit's MLP, generates with its transformer, and (with the
// mpi component) builds the MPI backend's types. Every template a user instantiates is compiled.
#include <cstdio>
#include <sstream>
#include <string_view>
#include <string>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/chrome_trace.hpp>
#include <ppipe/runtime/trace_svg.hpp>
#include <ppipe/runtime/trace_timeline.hpp>
#ifdef PPIPE_STRICT_MPI
#include <ppipe/mpi.hpp>
#endif

namespace {

template <class Schedule>
double train(ppipe::layers::sequential& model, int p, int m, int v) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  const ppipe::layers::sgd sgd(0.05f);
  ppipe::pipeline<ppipe::layers::sequential, Schedule> pipe(
      model, o, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& s) { sgd.step(model, s); });
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{16, 8})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{16, 2})};
  for (std::size_t i = 0; i < x[0].size(); ++i) x[0][i] = static_cast<float>(i % 5) * 0.1f;
  double loss = 0.0;
  for (int step = 0; step < 3; ++step) loss = pipe.train_step(x, y);
  if (pipe.infer(x).front().shape() != ppipe::shape{16, 2}) return -1.0;
  const std::string timeline = ppipe::render_timeline(pipe.training_schedule(), pipe.last_trace());
  std::ostringstream json;
  ppipe::write_chrome_trace(json, pipe.last_trace());
  const std::string trace = json.str() + ppipe::render_svg(pipe.last_trace());
  return timeline.empty() || trace.empty() ? -1.0 : loss;
}

#ifdef PPIPE_STRICT_MPI
// Compiled, not run (the consumer runs as one process): instantiates the MPI backend's pipeline.
[[maybe_unused]] double train_over_mpi(ppipe::mpi::pipeline<ppipe::layers::sequential>& pipe, const ppipe::payload& x,
                                       const ppipe::payload& y) {
  return pipe.train_step(x, y) + static_cast<double>(pipe.infer(x).size());
}
#endif

}  // namespace

int main() {
  try {
    for (const std::string_view name : ppipe::schedule_names) {
      // Two stages per rank where the schedule has them, else one.
      const int v = name == "interleaved_1f1b" || name == "zb_v" || name == "dualpipe_v" ? 2 : 1;
      const ppipe::schedule s = ppipe::make_schedule(name, {4, 8, v});
      ppipe::validate(s);
      const ppipe::simulation sim = ppipe::simulate(s, ppipe::cost_model::uniform(1.0, 2.0));
      const ppipe::schedule back = ppipe::from_csv(ppipe::to_csv(s));
      if (back.num_ranks() != s.num_ranks() || ppipe::render_svg(s, sim).empty()) return 1;
    }
    ppipe::layers::sequential model = ppipe::layers::sequential::mlp({8, 16, 16, 16, 2}, 1);
    const double a = train<ppipe::schedules::one_f_one_b>(model, 2, 4, 1);
    const double b = train<ppipe::schedules::interleaved_1f1b>(model, 2, 4, 2);
    const double c = train<ppipe::schedules::zb_h1>(model, 2, 4, 1);
    if (!(a >= 0.0 && b >= 0.0 && c >= 0.0)) return 1;

    ppipe::layers::transformer_config config;
    config.vocab = 32;
    config.d_model = 16;
    config.heads = 2;
    config.blocks = 2;
    ppipe::layers::decoder lm(config);
    ppipe::pipeline_options o;
    o.ranks = 2;
    ppipe::pipeline<ppipe::layers::decoder> served(lm, o);
    std::vector<ppipe::generation_request> requests(3);
    for (auto& r : requests) r.prompt = {1, 2, 3};
    ppipe::generation_options g;
    g.max_new_tokens = 4;
    g.sampler = ppipe::layers::greedy;
    const ppipe::generation_result out = served.generate(requests, g);
    if (out.tokens.size() != requests.size()) return 1;
    std::printf("strict consumer ok: losses %.4f %.4f %.4f, %zu sequences\n", a, b, c, out.tokens.size());
    return 0;
  } catch (const ppipe::error& e) {
    std::printf("strict consumer failed: %s\n", e.what());
    return 1;
  }
}
