// The validator against a brute-force reference: a slow, obviously-correct executor that runs a
// schedule step by step with real FIFO channels. Thousands of mutated schedules (swapped, dropped,
// duplicated or moved actions) must get the same verdict from both.
#include <deque>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>

namespace {

using ppipe::action;
using ppipe::action_kind;

// Runs `s` the way the validator's model says ranks run: sends are posted and never block, a
// receive takes the oldest message of its channel (one channel per sender, receiver and kind) and
// waits while the channel is empty. Returns true if every rank finishes with every action legal and
// every forward and backward run exactly once.
bool reference_ok(const ppipe::schedule& s) {
  const int p = static_cast<int>(s.ranks.size());
  if (p != s.num_ranks() || s.microbatches < 1 || s.num_stages() < 1) return false;
  const int stages = s.num_stages();
  const int m = s.microbatches;
  const bool training = s.mode == ppipe::schedule_mode::training;
  std::set<std::tuple<int, int, action_kind>> done;      // (stage, mb, kind) of compute and recv
  std::map<std::tuple<int, int, int>, std::deque<std::pair<int, int>>> channels;  // (from,to,kind)
  std::vector<std::size_t> pc(static_cast<std::size_t>(p), 0);
  const auto has = [&](int stage, int mb, action_kind k) { return done.count({stage, mb, k}) > 0; };
  const auto rank_of = [&](int stage) { return s.place.rank_of(stage); };

  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < p; ++r) {
      const auto& list = s.ranks[static_cast<std::size_t>(r)];
      auto& i = pc[static_cast<std::size_t>(r)];
      while (i < list.size()) {
        const action a = list[i];
        if (a.stage < 0 || a.stage >= stages || a.microbatch < 0 || a.microbatch >= m) return false;
        if (rank_of(a.stage) != r) return false;
        if (!training && ppipe::is_backward_pass(a.kind)) return false;
        if (has(a.stage, a.microbatch, a.kind)) return false;  // duplicate
        const int st = a.stage;
        const int mb = a.microbatch;
        const bool prev_local = st > 0 && rank_of(st - 1) == r;
        const bool next_local = st + 1 < stages && rank_of(st + 1) == r;
        const auto grad_ready = [&] {
          if (st + 1 == stages) return true;
          if (next_local) return has(st + 1, mb, action_kind::backward) || has(st + 1, mb, action_kind::backward_input);
          return has(st, mb, action_kind::recv_gradient);
        };
        bool ok = true;
        switch (a.kind) {
          case action_kind::forward:
            ok = st == 0 || (prev_local ? has(st - 1, mb, action_kind::forward) : has(st, mb, action_kind::recv_activation));
            break;
          case action_kind::backward:
            ok = has(st, mb, action_kind::forward) && grad_ready() && !has(st, mb, action_kind::backward_input);
            break;
          case action_kind::backward_input:
            ok = has(st, mb, action_kind::forward) && grad_ready() && !has(st, mb, action_kind::backward);
            break;
          case action_kind::backward_weight: ok = has(st, mb, action_kind::backward_input); break;
          case action_kind::send_activation:
            ok = st + 1 < stages && !next_local && has(st, mb, action_kind::forward);
            if (ok) channels[{r, rank_of(st + 1), 0}].push_back({st, mb});
            break;
          case action_kind::send_gradient:
            ok = st > 0 && !prev_local &&
                 (has(st, mb, action_kind::backward) || has(st, mb, action_kind::backward_input));
            if (ok) channels[{r, rank_of(st - 1), 1}].push_back({st, mb});
            break;
          case action_kind::recv_activation:
          case action_kind::recv_gradient: {
            const bool act = a.kind == action_kind::recv_activation;
            const int peer_stage = act ? st - 1 : st + 1;
            if (peer_stage < 0 || peer_stage >= stages || rank_of(peer_stage) == r) return false;
            auto& queue = channels[{rank_of(peer_stage), r, act ? 0 : 1}];
            if (queue.empty()) goto blocked;
            if (queue.front() != std::pair{peer_stage, mb}) return false;  // out of order
            queue.pop_front();
            break;
          }
        }
        if (!ok) return false;  // this rank can never make it legal: its order is fixed
        done.insert({st, mb, a.kind});
        ++i;
        progress = true;
      }
    blocked:;
    }
  }
  for (int r = 0; r < p; ++r) {
    if (pc[static_cast<std::size_t>(r)] != s.ranks[static_cast<std::size_t>(r)].size()) return false;
  }
  for (const auto& [key, queue] : channels) {
    if (!queue.empty()) return false;  // a message nobody received
  }
  for (int st = 0; st < stages; ++st) {
    for (int mb = 0; mb < m; ++mb) {
      if (!has(st, mb, action_kind::forward)) return false;
      if (training && !has(st, mb, action_kind::backward) &&
          !(has(st, mb, action_kind::backward_input) && has(st, mb, action_kind::backward_weight))) {
        return false;
      }
    }
  }
  return true;
}

ppipe::schedule mutate(ppipe::schedule s, std::mt19937& rng) {
  const auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  auto& list = s.ranks[pick(s.ranks.size())];
  if (list.empty()) return s;
  switch (pick(5)) {
    case 0: std::swap(list[pick(list.size())], list[pick(list.size())]); break;
    case 1: {  // swap neighbours: the subtle case
      const std::size_t i = pick(list.size());
      if (i + 1 < list.size()) std::swap(list[i], list[i + 1]);
      break;
    }
    case 2: list.erase(list.begin() + static_cast<std::ptrdiff_t>(pick(list.size()))); break;
    case 3: list.insert(list.begin() + static_cast<std::ptrdiff_t>(pick(list.size())), list[pick(list.size())]); break;
    default: {  // move one action elsewhere in the list
      const std::size_t from = pick(list.size());
      const action a = list[from];
      list.erase(list.begin() + static_cast<std::ptrdiff_t>(from));
      list.insert(list.begin() + static_cast<std::ptrdiff_t>(pick(list.size() + 1)), a);
      break;
    }
  }
  return s;
}

}  // namespace

TEST_CASE("the validator agrees with a brute-force executor on mutated schedules") {
  std::mt19937 rng(20261123);
  std::vector<ppipe::schedule> bases;
  for (int p = 1; p <= 4; ++p) {
    for (int m : {1, 2, 4}) {
      bases.push_back(ppipe::make_schedule("gpipe", {p, m, 1}));
      bases.push_back(ppipe::make_schedule("1f1b", {p, m, 1}));
      bases.push_back(ppipe::make_schedule("forward_only", {p, m, 2}));
      if (m % p == 0) bases.push_back(ppipe::make_schedule("interleaved_1f1b", {p, m, 2}));
    }
  }
  int valid = 0;
  int invalid = 0;
  for (const auto& base : bases) {
    REQUIRE(reference_ok(base));
    REQUIRE(ppipe::check_schedule(base).ok());
    for (int trial = 0; trial < 120; ++trial) {
      ppipe::schedule s = mutate(base, rng);
      if (trial % 3 == 2) s = mutate(std::move(s), rng);
      const bool expected = reference_ok(s);
      const auto report = ppipe::check_schedule(s);
      CAPTURE(base.name, base.num_ranks(), base.microbatches, trial);
      INFO(report.message());
      REQUIRE(report.ok() == expected);
      (expected ? valid : invalid) += 1;
    }
  }
  // Both verdicts must be well represented, or the test proves little.
  CHECK(valid > 300);
  CHECK(invalid > 1000);
}
