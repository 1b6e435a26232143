// Pipelined token generation (pipeline::generate): tokens equal the unpipelined model's, sequence
// by sequence, for any number of ranks, stages per rank and groups in flight; every stage's cache
// goes back to zero; the cache budget bounds what stages hold and admission waits for it; faults
// and bad input give a ppipe::error.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "generation_reference.hpp"
#include "ppipe/layers/layers.hpp"
#include "ppipe/ppipe.hpp"
#include "toy_generator.hpp"

namespace {

using ppipe::generation_options;
using ppipe::generation_request;

template <class Policy = ppipe::schedules::one_f_one_b, class Model>
ppipe::pipeline<Model, Policy> make_pipeline(Model& model, int p, int v = 1,
                                             std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.virtual_stages = v;
  o.microbatches = p * v;  // interleaved 1F1B wants m to be a multiple of p
  o.timeout = timeout;
  return ppipe::pipeline<Model, Policy>(model, o);
}

// Requests of different prompt lengths and lengths to generate, so that sequences finish at
// different steps and waiting ones join groups that are still going.
std::vector<generation_request> mixed_requests(int n, int vocab) {
  std::vector<generation_request> out;
  for (int i = 0; i < n; ++i) {
    generation_request q;
    for (int k = 0; k < 1 + (i * 5) % 7; ++k) q.prompt.push_back((i * 3 + k * 7 + 1) % vocab);
    q.max_new_tokens = 2 + (i * 3) % 9;
    out.push_back(q);
  }
  return out;
}

template <class Model>
std::vector<std::vector<int>> unpipelined(Model& model, const std::vector<generation_request>& reqs, int eos = -1) {
  std::vector<std::vector<int>> out;
  for (const auto& q : reqs) out.push_back(reference::generate(model, q.prompt, q.max_new_tokens, eos));
  return out;
}

generation_options greedy_options(int groups, int group_size = 0) {
  generation_options g;
  g.sampler = ppipe::layers::greedy;
  g.groups = groups;
  g.max_group_size = group_size;
  return g;
}

template <class Pipe>
void check_caches_empty(Pipe& pipe) {
  for (int s = 0; s < pipe.split().num_stages(); ++s) {
    INFO("stage " << s);
    CHECK(pipe.memory(s).cache_bytes == 0);
    CHECK(pipe.memory(s).live_sequences == 0);
    CHECK(pipe.memory(s).live_bytes == 0);
  }
}

// Records the thread of every layer call: which threads a pipeline's calls run on.
struct thread_recording_model : toy::cache_model {
  std::mutex mutex;
  std::map<int, std::set<std::thread::id>> threads;  // by layer

  void note(int layer) {
    const std::lock_guard lock(mutex);
    threads[layer].insert(std::this_thread::get_id());
  }
  void forward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, ppipe::payload& out) {
    note(layer);
    cache_model::forward(layer, ctx, in, out);
  }
  void forward(int layer, const ppipe::generation_context<ppipe::host_tensor>& ctx, const ppipe::payload& in,
               ppipe::payload& out) {
    note(layer);
    cache_model::forward(layer, ctx, in, out);
  }
};

}  // namespace

TEST_CASE("generated tokens equal the unpipelined model's for any p and groups in flight", "[generation]") {
  toy::cache_model model;
  model.layers = 8;
  const auto reqs = mixed_requests(9, model.vocab);
  const auto expected = unpipelined(model, reqs);
  for (const int p : {1, 2, 3, 4}) {
    auto pipe = make_pipeline(model, p);
    for (const int groups : {1, 2, 3, 5, 8}) {
      INFO("p=" << p << " groups=" << groups);
      const ppipe::generation_result r = pipe.generate(reqs, greedy_options(groups));
      CHECK(r.tokens == expected);
      check_caches_empty(pipe);
    }
  }
  // GPipe's placement is the same loop; the training schedule does not matter to generation.
  auto gpipe = make_pipeline<ppipe::schedules::gpipe>(model, 3);
  CHECK(gpipe.generate(reqs, greedy_options(4)).tokens == expected);
}

TEST_CASE("interleaved placements (v stages per rank) generate the same tokens", "[generation]") {
  toy::cache_model model;
  model.layers = 8;
  const auto reqs = mixed_requests(7, model.vocab);
  const auto expected = unpipelined(model, reqs);
  for (const int p : {1, 2, 4}) {
    auto pipe = make_pipeline<ppipe::schedules::interleaved_1f1b>(model, p, 2);
    REQUIRE(pipe.split().num_stages() == 2 * p);
    for (const int groups : {1, 3, 4}) {
      INFO("p=" << p << " v=2 groups=" << groups);
      const auto r = pipe.generate(reqs, greedy_options(groups));
      CHECK(r.tokens == expected);
      check_caches_empty(pipe);
    }
  }
}

TEST_CASE("an eos token ends a sequence early, as it does unpipelined", "[generation]") {
  toy::cache_model model;
  const auto reqs = mixed_requests(8, model.vocab);
  const int eos = 4;
  const auto expected = unpipelined(model, reqs, eos);
  // The test means something only if some sequence stops at eos before its limit.
  bool early = false;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    early = early || static_cast<int>(expected[i].size()) < reqs[i].max_new_tokens;
  }
  REQUIRE(early);
  auto pipe = make_pipeline(model, 3);
  generation_options g = greedy_options(3);
  g.eos_token = eos;
  CHECK(pipe.generate(reqs, g).tokens == expected);
  check_caches_empty(pipe);
}

TEST_CASE("requests without max_new_tokens take the option's, and group sizes do not change tokens", "[generation]") {
  toy::cache_model model;
  auto reqs = mixed_requests(6, model.vocab);
  for (auto& q : reqs) q.max_new_tokens = 0;
  std::vector<std::vector<int>> expected;
  for (const auto& q : reqs) expected.push_back(reference::generate(model, q.prompt, 5));
  auto pipe = make_pipeline(model, 2);
  for (const int size : {1, 2, 6}) {
    generation_options g = greedy_options(2, size);
    g.max_new_tokens = 5;
    const auto r = pipe.generate(reqs, g);
    CHECK(r.tokens == expected);
  }
}

TEST_CASE("each stage holds only its own layers' cache, and it returns to zero", "[generation][memory]") {
  toy::cache_model model;
  model.layers = 7;
  const auto reqs = mixed_requests(5, model.vocab);
  auto pipe = make_pipeline(model, 3);
  const auto r = pipe.generate(reqs, greedy_options(5, 1));  // every sequence in flight at once
  std::size_t all = 0;
  for (const auto& q : reqs) all += q.prompt.size() + static_cast<std::size_t>(q.max_new_tokens) - 1;
  for (int s = 0; s < 3; ++s) {
    int stateful = 0;
    for (int layer = pipe.split().first(s); layer < pipe.split().end(s); ++layer) stateful += layer > 0 ? 1 : 0;
    INFO("stage " << s << " has " << stateful << " layers with a cache");
    // One i32 per token per stateful layer, for every sequence at once.
    CHECK(r.peak_cache_bytes[static_cast<std::size_t>(s)] == all * sizeof(std::int32_t) * static_cast<std::size_t>(stateful));
  }
  check_caches_empty(pipe);
}

TEST_CASE("a cache budget bounds every stage, and admission waits for room instead of failing",
          "[generation][memory]") {
  toy::cache_model model;
  model.layers = 6;
  std::vector<generation_request> reqs;
  for (int i = 0; i < 8; ++i) reqs.push_back({{1 + i, 2, 3}, 6});  // 3 + 6 - 1 = 8 tokens of state each
  const auto expected = unpipelined(model, reqs);
  auto pipe = make_pipeline(model, 2);
  // Stage 0 holds layers 0..2 (two with a cache), stage 1 layers 3..5: 2 or 3 i32 per token.
  const std::size_t one = 8 * 3 * sizeof(std::int32_t);
  generation_options g = greedy_options(4, 2);
  g.cache_budget = 2 * one + one / 2;  // room for two sequences at a time on the larger stage
  const auto r = pipe.generate(reqs, g);
  CHECK(r.tokens == expected);
  for (int s = 0; s < 2; ++s) CHECK(r.peak_cache_bytes[static_cast<std::size_t>(s)] <= g.cache_budget);
  CHECK(r.peak_cache_bytes[1] == 2 * one);
  // Requests 2.. waited: each was admitted only after an earlier one had finished.
  const double first_finish = *std::min_element(r.finished_us.begin(), r.finished_us.end());
  for (std::size_t i = 2; i < reqs.size(); ++i) CHECK(r.admitted_us[i] >= first_finish);
  check_caches_empty(pipe);
}

TEST_CASE("every group with work goes out before the first tokens come back", "[generation]") {
  toy::cache_model model;
  const auto reqs = mixed_requests(12, model.vocab);
  for (const int p : {1, 2, 4}) {
    auto pipe = make_pipeline(model, p);
    for (const int groups : {2, 3, 4, 6}) {
      INFO("p=" << p << " groups=" << groups);
      const auto r = pipe.generate(reqs, greedy_options(groups));  // 12 / groups sequences each
      const double first_token = *std::min_element(r.first_token_us.begin(), r.first_token_us.end());
      for (std::size_t i = 0; i < reqs.size(); ++i) CHECK(r.admitted_us[i] < first_token);
    }
  }
}

TEST_CASE("continuous batching: a waiting sequence joins a group while the others keep going", "[generation]") {
  toy::cache_model model;
  std::vector<generation_request> reqs{{{1}, 2}, {{2}, 12}, {{3}, 4}};
  auto pipe = make_pipeline(model, 2);
  const auto r = pipe.generate(reqs, greedy_options(2, 1));  // two groups of one sequence
  CHECK(r.tokens == unpipelined(model, reqs));
  // Request 2 took request 0's place as soon as 0 finished, long before 1 finished: nothing drained.
  CHECK(r.admitted_us[2] >= r.finished_us[0]);
  CHECK(r.finished_us[2] < r.finished_us[1]);
  // Two groups of one sequence: steps = prefill and decodes of each sequence.
  CHECK(r.steps == 2 + 12 + 4);
}

TEST_CASE("a budget smaller than one sequence's cache is refused before anything runs", "[generation][memory]") {
  toy::cache_model model;
  auto pipe = make_pipeline(model, 2);
  std::vector<generation_request> reqs{{{1, 2}, 3}, {{1, 2, 3, 4, 5, 6}, 10}};
  generation_options g = greedy_options(2);
  // Stage 0 holds layers 0..2 (two with a cache), stage 1 layers 3..5 (three). Request 0 needs 4
  // tokens x 3 layers x 4 bytes = 48 on stage 1; request 1, 15 tokens, 180.
  g.cache_budget = 50;
  try {
    (void)pipe.generate(reqs, g);
    FAIL("no error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::out_of_memory);
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("request 1 needs 180 bytes of cache on stage 1"));
    CHECK_THAT(msg, Catch::Contains("cache budget of 50 bytes"));
    CHECK_THAT(msg, Catch::Contains("at least 180"));
  }
  check_caches_empty(pipe);
}

TEST_CASE("bad generation input gets a ppipe::error naming the value", "[generation]") {
  toy::cache_model model;
  auto pipe = make_pipeline(model, 2);
  const auto fails_with = [&](const std::vector<generation_request>& reqs, const generation_options& g,
                              const std::string& text) {
    try {
      (void)pipe.generate(reqs, g);
      FAIL("no error for: " << text);
    } catch (const ppipe::error& e) {
      CHECK(e.code() == ppipe::errc::invalid_argument);
      CHECK_THAT(std::string(e.what()), Catch::Contains(text));
    }
  };
  const std::vector<generation_request> ok{{{1}, 2}};
  fails_with(ok, generation_options{}, "needs a sampler");
  fails_with({{{}, 2}}, greedy_options(1), "request 0 has a prompt of 0 tokens");
  fails_with({{{1}, -3}}, greedy_options(1), "max_new_tokens=-3");
  fails_with(ok, greedy_options(-1), "groups=-1");
  generation_options zero = greedy_options(1);
  zero.max_new_tokens = 0;
  fails_with({{{1}, 0}}, zero, "takes generation_options::max_new_tokens, which is 0");
  CHECK(pipe.generate(std::vector<generation_request>{{{1}, 2}}, zero).tokens.size() == 1);  // not used: fine
  fails_with({{{3, -1}, 2}}, greedy_options(1), "request 0's prompt token 1 is -1");
  // Nothing ran: an empty call is fine and the pipeline still works.
  CHECK(pipe.generate(std::vector<generation_request>{}, greedy_options(1)).tokens.empty());
  CHECK(pipe.generate(ok, greedy_options(1)).tokens == unpipelined(model, ok));
}

TEST_CASE("a layer that throws on one rank stops every rank; the caches are freed; the next call works",
          "[generation][faults]") {
  toy::cache_model model;
  model.layers = 6;
  const auto reqs = mixed_requests(6, model.vocab);
  const auto expected = unpipelined(model, reqs);
  struct fault {
    int ranks, virtual_stages, layer;
    const char* where;
  };
  // One layer per stage with v = 2 on 3 ranks; two per stage otherwise.
  for (const fault f : {fault{3, 1, 3, "rank 1, stage 1"}, fault{3, 1, 0, "rank 0, stage 0"},
                        fault{3, 1, 5, "rank 2, stage 2"}, fault{3, 2, 3, "rank 0, stage 3"},
                        fault{1, 1, 4, "rank 0, stage 0"}}) {
    INFO("p=" << f.ranks << " v=" << f.virtual_stages << " layer " << f.layer);
    const auto check = [&](auto& pipe) {
      model.throw_at_layer = f.layer;
      try {
        (void)pipe.generate(reqs, greedy_options(3));
        FAIL("no error");
      } catch (const ppipe::error& e) {
        CHECK(e.code() == ppipe::errc::stage_failed);
        CHECK_THAT(std::string(e.what()), Catch::Contains(f.where));
        CHECK_THAT(std::string(e.what()), Catch::Contains("toy layer failed"));
      }
      check_caches_empty(pipe);
      model.throw_at_layer = -1;
      CHECK(pipe.generate(reqs, greedy_options(3)).tokens == expected);
    };
    if (f.virtual_stages == 1) {
      auto pipe = make_pipeline(model, f.ranks);
      check(pipe);
    } else {
      auto pipe = make_pipeline<ppipe::schedules::interleaved_1f1b>(model, f.ranks, 2);
      check(pipe);
    }
  }
}

TEST_CASE("a sampler that throws on the last stage is reported with its rank", "[generation][faults]") {
  toy::cache_model model;
  auto pipe = make_pipeline(model, 2);
  generation_options g = greedy_options(2);
  int calls = 0;
  g.sampler = [&calls](const ppipe::payload& out, int row) {
    if (++calls == 3) throw std::runtime_error("sampler broke");
    return ppipe::layers::greedy(out, row);
  };
  try {
    (void)pipe.generate(mixed_requests(4, model.vocab), g);
    FAIL("no error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::stage_failed);
    CHECK_THAT(std::string(e.what()), Catch::Contains("rank 1, stage 1"));
    CHECK_THAT(std::string(e.what()), Catch::Contains("sampler broke"));
  }
  check_caches_empty(pipe);
}

TEST_CASE("generate() runs on the rank threads that infer() runs on, starting none of its own",
          "[generation]") {
  thread_recording_model model;
  const auto reqs = mixed_requests(5, model.vocab);
  const auto expected = unpipelined(model, reqs);
  model.threads.clear();  // the reference ran on this thread
  auto pipe = make_pipeline(model, 3);
  const ppipe::payload ids{ppipe::host_tensor(ppipe::shape({3}, ppipe::dtype::i32), std::vector<std::int32_t>{1, 2, 3})};
  (void)pipe.infer(ids);
  for (int call = 0; call < 2; ++call) CHECK(pipe.generate(reqs, greedy_options(3)).tokens == expected);
  (void)pipe.infer(ids);
  REQUIRE(static_cast<int>(model.threads.size()) == model.layers);
  std::set<std::thread::id> all;
  for (const auto& [layer, seen] : model.threads) {
    INFO("layer " << layer);
    CHECK(seen.size() == 1);  // every call of a layer, infer() or generate(), on its rank's one thread
    all.insert(seen.begin(), seen.end());
  }
  CHECK(all.size() == 3);
  CHECK(all.count(std::this_thread::get_id()) == 0);
}

TEST_CASE("the engine leaves no message behind, and refuses placements that are not a loop", "[generation]") {
  toy::cache_model model;
  model.layers = 6;
  using stage_type = ppipe::stage<toy::cache_model>;
  using engine_type = ppipe::generation_engine<stage_type, ppipe::host_transport>;
  std::vector<stage_type> stages;
  for (int s = 0; s < 6; ++s) stages.emplace_back(model, s, s, s + 1, 1);
  ppipe::host_transport transport(3);
  ppipe::rank_pool ranks;
  const ppipe::placement looped = ppipe::placement::looped(3, 2);
  engine_type engine(transport, stages, looped, ranks, std::chrono::seconds(30), true);
  const auto reqs = mixed_requests(7, model.vocab);
  std::vector<std::vector<std::size_t>> bytes;
  for (const auto& q : reqs) {
    const int capacity = static_cast<int>(q.prompt.size()) + q.max_new_tokens - 1;
    bytes.emplace_back();
    for (const stage_type& st : stages) bytes.back().push_back(ppipe::sequence_cache<stage_type>::bytes(st, capacity));
  }
  const auto r = engine.run(reqs, greedy_options(3), 3, 3, bytes);
  CHECK(r.tokens == unpipelined(model, reqs));
  CHECK(transport.undelivered() == 0);
  CHECK_THROWS_WITH(engine.run(reqs, greedy_options(0), 0, 3, bytes), Catch::Contains("not groups=0"));

  // The last stage must be on the last rank, or its tokens would not reach rank 0.
  for (const auto& bad : {std::vector<int>{0, 1, 2, 0, 1, 0}, std::vector<int>{0, 2, 1, 0, 2, 1}}) {
    try {
      engine_type e(transport, stages, ppipe::placement::custom(bad, 3), ranks, std::chrono::seconds(1), false);
      FAIL("no error");
    } catch (const ppipe::error& e) {
      CHECK(e.code() == ppipe::errc::unsupported);
      CHECK_THAT(std::string(e.what()), Catch::Contains("generation needs the stages in a loop"));
    }
  }
}

TEST_CASE("a stalled stage times out with what every rank was doing", "[generation][faults]") {
  toy::cache_model model;
  model.layers = 4;
  auto pipe = make_pipeline(model, 2, 1, std::chrono::milliseconds(100));
  model.wait = std::chrono::milliseconds(400);
  try {
    (void)pipe.generate(std::vector<generation_request>{{{1}, 2}}, greedy_options(1));
    FAIL("no error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::timeout);
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("waited 100 ms for the next message from rank"));
    CHECK_THAT(msg, Catch::Contains("running stage"));
  }
  check_caches_empty(pipe);
}

TEST_CASE("the trace has one event per stage per step, and utilisation is busy time over the call",
          "[generation][trace]") {
  toy::cache_model model;
  auto pipe = make_pipeline(model, 3);
  const auto reqs = mixed_requests(6, model.vocab);
  const auto r = pipe.generate(reqs, greedy_options(3));
  REQUIRE(r.trace.num_ranks() == 3);
  for (int rank = 0; rank < 3; ++rank) {
    CHECK(static_cast<int>(r.trace.ranks[static_cast<std::size_t>(rank)].size()) == r.steps);
    CHECK(r.trace.busy(rank) == Approx(r.stage_busy_us[static_cast<std::size_t>(rank)]));
    CHECK(r.utilisation(rank) > 0.0);
  }
  CHECK(r.generated() == [&] {
    std::size_t n = 0;
    for (const auto& q : reqs) n += static_cast<std::size_t>(q.max_new_tokens);
    return n;
  }());
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    CHECK(r.first_token_us[i] >= r.admitted_us[i]);
    CHECK(r.finished_us[i] >= r.first_token_us[i]);
    CHECK(r.finished_us[i] <= r.elapsed_us);
  }
  CHECK(pipe.last_trace().ranks.size() == 3);
}

TEST_CASE("the layer kit's transformer generates through the pipeline what it generates alone",
          "[generation][transformer]") {
  ppipe::layers::transformer_config cfg;
  cfg.vocab = 48;
  cfg.d_model = 24;
  cfg.heads = 3;
  cfg.d_ff = 40;
  cfg.blocks = 3;  // 8 layers: embedding, 3 x (attention, MLP), head
  cfg.seed = 7;
  ppipe::layers::decoder model(cfg);
  const auto reqs = mixed_requests(7, cfg.vocab);
  const auto expected = unpipelined(model, reqs);
  for (const int p : {1, 2, 4}) {
    auto pipe = make_pipeline(model, p);
    for (const int groups : {1, p, 2 * p + 1}) {
      INFO("p=" << p << " groups=" << groups);
      const auto r = pipe.generate(reqs, greedy_options(groups));
      CHECK(r.tokens == expected);
      check_caches_empty(pipe);
    }
  }
  auto interleaved = make_pipeline<ppipe::schedules::interleaved_1f1b>(model, 2, 2);
  CHECK(interleaved.generate(reqs, greedy_options(3)).tokens == expected);
  check_caches_empty(interleaved);
}
