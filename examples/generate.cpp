// ppipe-generate: pipelined inference. Serves N prompts with the layer kit's decoder-only
// transformer through p rank threads (the host backend): sequences are grouped into microbatches
// that circulate through the stages, one decode step per trip, each stage keeping its own layers'
// KV cache per sequence, finished sequences leaving and waiting ones joining without draining.
// Prints tokens/s, time to first token and per-stage utilisation, checks the tokens against the
// same model run on one stage, and writes the run's trace (open it at ui.perfetto.dev).
//
//   ppipe-generate [--ranks 4] [--requests 32] [--max-new 32] [--groups 0] [--group-size 0]
//                  [--budget-kib 0] [--blocks 4] [--d-model 64] [--vocab 256] [--seed 1]
//                  [--trace ppipe-generate-trace.json] [--no-compare]

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/chrome_trace.hpp>

namespace {

struct settings {
  int ranks = 4;
  int requests = 32;
  int max_new = 32;
  int groups = 0;      // 0: one per rank
  int group_size = 0;  // 0: the requests spread over the groups
  long budget_kib = 0;  // 0: no cache budget
  ppipe::layers::transformer_config model{256, 64, 4, 256, 4, 256, 1};
  std::string trace = "ppipe-generate-trace.json";
  bool compare = true;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "ppipe-generate: " << why << "\n"
            << "usage: ppipe-generate [--ranks P] [--requests N] [--max-new T] [--groups G] [--group-size B]\n"
            << "                      [--budget-kib KIB] [--blocks N] [--d-model D] [--vocab V] [--seed S]\n"
            << "                      [--trace FILE] [--no-compare]\n";
  std::exit(2);
}

long number(std::string_view flag, const char* text) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0') usage(std::string(flag) + " takes a whole number, not \"" + text + "\"");
  return v;
}

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "--ranks" || a == "-p") s.ranks = static_cast<int>(number(a, value()));
    else if (a == "--requests") s.requests = static_cast<int>(number(a, value()));
    else if (a == "--max-new") s.max_new = static_cast<int>(number(a, value()));
    else if (a == "--groups") s.groups = static_cast<int>(number(a, value()));
    else if (a == "--group-size") s.group_size = static_cast<int>(number(a, value()));
    else if (a == "--budget-kib") s.budget_kib = number(a, value());
    else if (a == "--blocks") s.model.blocks = static_cast<int>(number(a, value()));
    else if (a == "--d-model") s.model.d_model = static_cast<int>(number(a, value()));
    else if (a == "--vocab") s.model.vocab = static_cast<int>(number(a, value()));
    else if (a == "--seed") s.model.seed = static_cast<std::uint64_t>(number(a, value()));
    else if (a == "--trace") s.trace = value();
    else if (a == "--no-compare") s.compare = false;
    else if (a == "--help" || a == "-h") usage("serves prompts through a pipelined transformer");
    else usage("unknown argument \"" + std::string(a) + "\"");
  }
  if (s.requests < 1 || s.max_new < 1 || s.budget_kib < 0) usage("requests and max-new must be >= 1, budget-kib >= 0");
  return s;
}

// Prompts of 4 to 19 tokens drawn from a seeded generator; request i asks for max_new - (i % 4)
// tokens, so that sequences finish at different steps and waiting ones join running groups.
std::vector<ppipe::generation_request> make_requests(const settings& s) {
  std::uint64_t state = s.model.seed * 7919u + 17u;
  const auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>(state >> 33);
  };
  std::vector<ppipe::generation_request> out(static_cast<std::size_t>(s.requests));
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int length = 4 + next() % 16;
    for (int k = 0; k < length; ++k) out[i].prompt.push_back(next() % s.model.vocab);
    out[i].max_new_tokens = std::max(1, s.max_new - static_cast<int>(i % 4));
  }
  return out;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

int run(const settings& s) {
  ppipe::layers::decoder model(s.model);
  ppipe::pipeline_options o;
  o.ranks = s.ranks;
  o.microbatches = s.ranks;
  ppipe::pipeline<ppipe::layers::decoder> pipe(model, o);
  const std::vector<ppipe::generation_request> reqs = make_requests(s);
  ppipe::generation_options g;
  g.sampler = ppipe::layers::greedy;
  g.groups = s.groups;
  g.max_group_size = s.group_size;
  g.cache_budget = static_cast<std::size_t>(s.budget_kib) * 1024;

  std::string split;
  for (int st = 0; st < pipe.split().num_stages(); ++st) {
    split += (st ? "/" : "") + std::to_string(pipe.split().end(st) - pipe.split().first(st));
  }
  std::printf("decoder: %d layers (vocab %d, d_model %d, %d heads, %d blocks) on %d ranks, split %s\n",
              model.num_layers(), s.model.vocab, s.model.d_model, s.model.heads, s.model.blocks, s.ranks, split.c_str());
  const int groups = s.groups > 0 ? s.groups : s.ranks;
  std::printf("%d requests, %d groups in flight, %d new tokens at most each, cache budget %s\n", s.requests, groups,
              s.max_new, s.budget_kib > 0 ? (std::to_string(s.budget_kib) + " KiB per stage").c_str() : "none");

  const ppipe::generation_result r = pipe.generate(reqs, g);
  std::printf("\ngenerated %zu tokens in %.1f ms: %.0f tokens/s over %d group steps\n", r.generated(),
              r.elapsed_us / 1000.0, r.tokens_per_second(), r.steps);
  std::printf("time to first token: median %.2f ms, p90 %.2f ms, max %.2f ms (every request arrives at the start)\n",
              percentile(r.first_token_us, 0.5) / 1000.0, percentile(r.first_token_us, 0.9) / 1000.0,
              percentile(r.first_token_us, 1.0) / 1000.0);
  std::printf("\nstage  layers  utilisation  peak KV cache\n");
  for (int st = 0; st < pipe.split().num_stages(); ++st) {
    std::printf("%5d  %2d..%-2d  %10.0f%%  %9.1f KiB\n", st, pipe.split().first(st), pipe.split().end(st) - 1,
                100.0 * r.utilisation(st), static_cast<double>(r.peak_cache_bytes[static_cast<std::size_t>(st)]) / 1024.0);
  }
  for (int st = 0; st < pipe.split().num_stages(); ++st) {
    if (pipe.memory(st).cache_bytes != 0) {
      std::printf("error: stage %d still holds %zu bytes of cache\n", st, pipe.memory(st).cache_bytes);
      return 1;
    }
  }
  std::printf("every stage's cache is back to 0 bytes\n");
  std::printf("request 0: prompt of %zu tokens ->", reqs[0].prompt.size());
  for (const int t : r.tokens[0]) std::printf(" %d", t);
  std::printf("\n");

  if (!s.trace.empty()) {
    ppipe::save_chrome_trace(s.trace, r.trace);
    std::printf("trace: %s (open it at https://ui.perfetto.dev)\n", s.trace.c_str());
  }
  if (s.compare) {
    // The same model on one stage with one group of the same size in flight: the unpipelined
    // rate at the same batch size, and the tokens to compare with.
    ppipe::pipeline_options one = o;
    one.ranks = 1;
    one.microbatches = 1;
    ppipe::pipeline<ppipe::layers::decoder> alone(model, one);
    ppipe::generation_options single = g;
    single.groups = 1;
    single.max_group_size = s.group_size > 0 ? s.group_size : (s.requests + groups - 1) / groups;
    single.cache_budget = 0;  // one stage holds every layer's cache: the budget is the pipeline's
    const ppipe::generation_result base = alone.generate(reqs, single);
    const bool same = base.tokens == r.tokens;
    std::printf("\none stage, one group of up to %d sequences: %.0f tokens/s; the pipeline is %.2fx that; "
                "tokens identical: %s\n", single.max_group_size, base.tokens_per_second(),
                r.tokens_per_second() / base.tokens_per_second(), same ? "yes" : "NO");
    if (!same) return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const settings s = parse(argc, argv);
  try {
    return run(s);
  } catch (const ppipe::error& e) {
    std::cerr << "ppipe-generate: " << e.what() << "\n";
    return 2;
  }
}
