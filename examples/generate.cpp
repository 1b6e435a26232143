// ppipe-generate: pipelined inference. Serves N prompts with the layer kit's decoder-only
// transformer through p rank threads (the host backend): sequences are grouped into microbatches
// that circulate through the stages, one decode step per trip, each stage keeping its own layers'
// KV cache per sequence, finished sequences leaving and waiting ones joining without draining.
// Prints tokens/s, time to first token and per-stage utilisation, checks the tokens against the
// same model run on one stage, and writes the run's trace (open it at ui.perfetto.dev).
//
//   ppipe-generate [--ranks 4] [--requests 32] [--max-new 32] [--groups 0] [--group-size 0]
//                  [--budget-kib 0] [--blocks 4] [--d-model 64] [--vocab 256] [--seed 1]
//                  [--trace ppipe-generate-trace.json] [--no-compare]        (--help says more)

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/chrome_trace.hpp>

#include "support/cli.hpp"

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

// Prompts have 4 to 19 tokens, and the model 256 positions: the longest prompt leaves room for
// 238 new tokens (the last one needs no position of its own).
constexpr int longest_prompt = 19;
constexpr int most_new = 256 - longest_prompt + 1;
// Token ids travel as i32; this bound keeps the embedding and head tables (vocab × d_model floats
// each) within a machine's memory.
constexpr int most_vocab = 1 << 24;

void add_options(CLI::App& app, settings& s) {
  namespace cli = examples::cli;
  constexpr int most = cli::most;
  cli::add_ranks(app, s.ranks, "pipeline ranks, a thread each");
  cli::add_number(app, "--requests", s.requests, cli::range<int>{1, most}, "prompts to serve");
  cli::add_number(app, "--max-new", s.max_new, cli::range<int>{1, most_new},
                  "new tokens per request at most");
  cli::add_number(app, "--groups", s.groups, cli::range<int>{0, most},
                  "groups of sequences in flight (0: one per rank)");
  cli::add_number(app, "--group-size", s.group_size, cli::range<int>{0, most},
                  "sequences per group at most (0: the requests spread over the groups)");
  cli::add_number(app, "--budget-kib", s.budget_kib,
                  cli::range<long>{0, std::numeric_limits<long>::max() / 1024},
                  "KV cache per stage at most, in KiB (0: no budget)");
  cli::add_number(app, "--blocks", s.model.blocks, cli::range<int>{1, (most - 2) / 2},
                  "transformer blocks");
  cli::add_number(app, "--d-model", s.model.d_model, cli::range<int>{1, most},
                  "width of the residual stream");
  cli::add_number(app, "--vocab", s.model.vocab, cli::range<int>{1, most_vocab},
                  "tokens in the vocabulary");
  cli::add_number(app, "--seed", s.model.seed, cli::range<std::uint64_t>{0},
                  "seed of the weights and prompts");
  app.add_option("--trace", s.trace, "the run's Chrome trace; \"\" for none")
      ->capture_default_str();
  app.add_flag_callback(
      "--no-compare", [&s] { s.compare = false; },
      "skip the run on one stage that the tokens are checked against");
}

// About what a run holds at once, in bytes: the weights, every request's KV cache (all of them
// may be in flight at once; twice when compared with one stage), the requests and their tokens,
// and the trace (an event per stage per group step).
struct run_bytes {
  std::uint64_t weights = 0;
  std::uint64_t cache = 0;
  std::uint64_t requests = 0;

  explicit run_bytes(const settings& s) {
    using examples::plus;
    using examples::product;
    const ppipe::layers::transformer_config& c = s.model;
    const auto d = static_cast<std::uint64_t>(c.d_model);
    const auto ff = static_cast<std::uint64_t>(c.d_ff);
    // Attention: 4 dense d x d with biases; MLP: d x ff and ff x d with biases; 2 layer norms.
    const std::uint64_t block = plus(product(4, plus(product(d, d), d)),
                                     plus(plus(product(2, d, ff), plus(ff, d)), product(4, d)));
    const auto vocab = static_cast<std::uint64_t>(c.vocab);
    const auto positions = static_cast<std::uint64_t>(c.max_positions);
    // Token and position embeddings, the blocks, the final norm, the head.
    const std::uint64_t parameters =
        plus(plus(product(plus(vocab, positions), d), product(c.blocks, block)),
             plus(product(2, d), product(d, plus(vocab, 1))));
    weights = product(parameters, sizeof(float));
    const auto capacity = static_cast<std::uint64_t>(longest_prompt + s.max_new - 1);
    cache = product(s.requests, c.blocks, 2, capacity, d, sizeof(float), s.compare ? 2 : 1);
    constexpr std::uint64_t per_event = 64;
    requests = plus(product(s.requests, plus(capacity, vocab), sizeof(float), 3),
                    product(s.requests, s.max_new, s.ranks, per_event));
  }
  [[nodiscard]] std::uint64_t total() const {
    return examples::plus(weights, examples::plus(cache, requests));
  }
  [[nodiscard]] std::string largest() const {
    using examples::human_bytes;
    if (weights >= cache && weights >= requests) {
      return "the weights take " + human_bytes(weights) +
             ": give a smaller --blocks, --d-model or --vocab";
    }
    if (cache >= requests) {
      return "the KV cache takes " + human_bytes(cache) +
             ": give fewer --requests, or a smaller --max-new, --blocks or --d-model";
    }
    return "the requests, their tokens and the trace take " + human_bytes(requests) +
           ": give fewer --requests or --ranks";
  }
};

// What the command line asks for, checked before anything is built.
void check(const settings& s) {
  const run_bytes bytes(s);
  examples::check_memory(
      bytes.total(),
      ppipe::detail::concat("serving --requests ", s.requests, " of up to ", longest_prompt, "+",
                            s.max_new, " tokens through a decoder of --blocks ", s.model.blocks,
                            ", --d-model ", s.model.d_model, " and --vocab ", s.model.vocab),
      bytes.largest());
  const int layers = 2 + 2 * s.model.blocks;
  if (s.ranks > layers) {
    examples::cli::refuse("--ranks ", s.ranks, ", but the decoder has ", layers,
                          " layers (--blocks ", s.model.blocks, " gives 2x", s.model.blocks,
                          "+2) and every rank needs one; give at most ", layers,
                          " ranks or more --blocks");
  }
  if (!s.trace.empty()) {
    examples::cli::check_writable(s.trace, "--trace",
                                  "give a file in a folder that exists, or --trace \"\" for none");
  }
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
    const int length = 4 + next() % (longest_prompt - 3);
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
  const int groups = std::min(s.groups > 0 ? s.groups : s.ranks, s.requests);
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
  CLI::App app{"Serves prompts through a pipelined transformer (the host backend).",
               "ppipe-generate"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  settings s;
  return examples::cli::run(app, [&] {
    add_options(app, s);
    app.parse(argc, argv);
    check(s);
    return run(s);
  });
}
