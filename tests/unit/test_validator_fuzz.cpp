// The validator against a brute-force reference: a slow, obviously-correct executor that runs a
// schedule step by step with real FIFO channels, under either transfer model. Thousands of mutated
// schedules (swapped, dropped, duplicated or moved actions) over looped and custom placements,
// full and split backwards, training and inference, must get the same verdict from both.
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
using ppipe::transfer_model;

// A message is named by its send; both ends agree on it.
std::tuple<int, int, action_kind> message_of(const action& a) {
  switch (a.kind) {
    case action_kind::recv_activation: return {a.stage - 1, a.microbatch, action_kind::send_activation};
    case action_kind::recv_gradient: return {a.stage + 1, a.microbatch, action_kind::send_gradient};
    default: return {a.stage, a.microbatch, a.kind};
  }
}

// Runs `s` as the model says ranks run. Channels: one FIFO queue per ordered pair of ranks, whatever
// the message kind. buffered: reaching a run of consecutive transfers, a rank enqueues all of the
// run's sends at once; a receive waits for its channel's head and fails if the head is another
// message. rendezvous: a run of consecutive transfers is posted at once;
// a channel's oldest posted send and oldest posted receive meet (and fail if they differ); the rank
// goes on when its whole run has met. Returns true if every rank finishes, every action was legal
// when it ran, and every forward and backward ran exactly once.
bool reference_ok(const ppipe::schedule& s, transfer_model model) {
  const int p = static_cast<int>(s.ranks.size());
  if (p != s.num_ranks() || s.microbatches < 1 || s.num_stages() < 1) return false;
  const int stages = s.num_stages();
  const int m = s.microbatches;
  const bool training = s.mode == ppipe::schedule_mode::training;
  std::set<std::tuple<int, int, action_kind>> done;
  using message = std::tuple<int, int, action_kind>;
  std::map<std::pair<int, int>, std::deque<message>> queue;                  // buffered
  std::map<std::pair<int, int>, std::deque<std::pair<message, int>>> sends;  // rendezvous: posted
  std::map<std::pair<int, int>, std::deque<std::pair<message, int>>> recvs;
  std::vector<std::size_t> pc(static_cast<std::size_t>(p), 0), group_end(static_cast<std::size_t>(p), 0);
  std::vector<int> unmet(static_cast<std::size_t>(p), 0);
  const auto has = [&](int stage, int mb, action_kind k) { return done.count({stage, mb, k}) > 0; };
  const auto rank_of = [&](int stage) { return s.place.rank_of(stage); };

  // Whether `a` may run on rank r now; for transfers, whether its data exists (sends) and it
  // crosses ranks. Returns false for anything that can never become legal.
  const auto legal = [&](int r, const action& a) {
    if (static_cast<int>(a.kind) >= ppipe::action_kind_count) return false;
    if (a.stage < 0 || a.stage >= stages || a.microbatch < 0 || a.microbatch >= m) return false;
    if (rank_of(a.stage) != r || has(a.stage, a.microbatch, a.kind)) return false;
    if (!training && ppipe::is_backward_pass(a.kind)) return false;
    const int st = a.stage;
    const int mb = a.microbatch;
    const bool prev_local = st > 0 && rank_of(st - 1) == r;
    const bool next_local = st + 1 < stages && rank_of(st + 1) == r;
    const bool grad_ready = st + 1 == stages ||
                            (next_local ? has(st + 1, mb, action_kind::backward) || has(st + 1, mb, action_kind::backward_input)
                                        : has(st, mb, action_kind::recv_gradient));
    switch (a.kind) {
      case action_kind::forward:
        return st == 0 || (prev_local ? has(st - 1, mb, action_kind::forward) : has(st, mb, action_kind::recv_activation));
      case action_kind::backward:
        return has(st, mb, action_kind::forward) && grad_ready && !has(st, mb, action_kind::backward_input) &&
               !has(st, mb, action_kind::backward_weight);
      case action_kind::backward_input:
        return has(st, mb, action_kind::forward) && grad_ready && !has(st, mb, action_kind::backward);
      case action_kind::backward_weight: return has(st, mb, action_kind::backward_input);
      case action_kind::recompute:
        return has(st, mb, action_kind::forward) && !has(st, mb, action_kind::backward) &&
               !has(st, mb, action_kind::backward_input);
      case action_kind::send_activation: return st + 1 < stages && !next_local && has(st, mb, action_kind::forward);
      case action_kind::send_gradient:
        return st > 0 && !prev_local && (has(st, mb, action_kind::backward) || has(st, mb, action_kind::backward_input));
      case action_kind::recv_activation: return st > 0 && !prev_local;
      case action_kind::recv_gradient: return st + 1 < stages && !next_local;
    }
    return false;
  };
  const auto channel = [&](int r, const action& a) {
    const int peer = rank_of(ppipe::detail::peer_stage(a));
    return ppipe::is_send(a.kind) ? std::pair{r, peer} : std::pair{peer, r};
  };

  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < p; ++r) {
      const auto& list = s.ranks[static_cast<std::size_t>(r)];
      auto& i = pc[static_cast<std::size_t>(r)];
      auto& end = group_end[static_cast<std::size_t>(r)];
      while (i < list.size()) {
        if (model == transfer_model::rendezvous && i < end) {  // inside a posted group
          if (unmet[static_cast<std::size_t>(r)] > 0) break;
          i = end;
          progress = true;
          continue;
        }
        const action a = list[i];
        if (ppipe::is_compute(a.kind)) {
          if (!legal(r, a)) return false;
          done.insert({a.stage, a.microbatch, a.kind});
          ++i;
          progress = true;
          continue;
        }
        if (model == transfer_model::buffered) {
          if (i >= end) {  // a new run: out go all of its sends
            for (end = i; end < list.size() && ppipe::is_transfer(list[end].kind); ++end) {
              const action t = list[end];
              if (!ppipe::is_send(t.kind)) continue;
              if (!legal(r, t)) return false;
              queue[channel(r, t)].push_back(message_of(t));
              done.insert({t.stage, t.microbatch, t.kind});
            }
          }
          if (!ppipe::is_send(a.kind)) {  // sends went out with their run
            if (!legal(r, a)) return false;
            auto& q = queue[channel(r, a)];
            if (q.empty()) break;  // wait for the send
            if (q.front() != message_of(a)) return false;
            q.pop_front();
            done.insert({a.stage, a.microbatch, a.kind});
          }
          ++i;
          progress = true;
          continue;
        }
        // rendezvous: post the whole run of transfers
        end = i;
        while (end < list.size() && ppipe::is_transfer(list[end].kind)) {
          const action t = list[end];
          if (!legal(r, t)) return false;
          (ppipe::is_send(t.kind) ? sends : recvs)[channel(r, t)].push_back({message_of(t), r});
          done.insert({t.stage, t.microbatch, t.kind});  // posted; a receive's data is only used after the group
          ++unmet[static_cast<std::size_t>(r)];
          ++end;
        }
        progress = true;
        for (auto& [ch, out] : sends) {
          auto& in = recvs[ch];
          while (!out.empty() && !in.empty()) {
            if (out.front().first != in.front().first) return false;
            --unmet[static_cast<std::size_t>(out.front().second)];
            --unmet[static_cast<std::size_t>(in.front().second)];
            out.pop_front();
            in.pop_front();
          }
        }
        break;
      }
    }
  }
  for (int r = 0; r < p; ++r) {
    if (pc[static_cast<std::size_t>(r)] != s.ranks[static_cast<std::size_t>(r)].size()) return false;
  }
  for (const auto& [ch, q] : queue) {
    if (!q.empty()) return false;  // a message nobody received
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

// The compute actions of `s`, each B split into I then W, transfers inserted again.
ppipe::schedule split_backward(ppipe::schedule s) {
  for (auto& list : s.ranks) {
    std::vector<action> out;
    for (const action& a : list) {
      if (a.kind == action_kind::backward) {
        out.push_back({a.stage, a.microbatch, action_kind::backward_input});
        out.push_back({a.stage, a.microbatch, action_kind::backward_weight});
      } else if (ppipe::is_compute(a.kind)) {
        out.push_back(a);
      }
    }
    list = std::move(out);
  }
  return ppipe::add_communication(std::move(s));
}

// A GPipe-like schedule for any placement: each rank runs its forwards by (microbatch, stage), then
// its backwards by (microbatch, stage descending).
ppipe::schedule gpipe_on(const ppipe::placement& place, int m, ppipe::schedule_mode mode) {
  ppipe::schedule s{"custom", place, m, mode, std::vector<std::vector<action>>(static_cast<std::size_t>(place.num_ranks()))};
  for (int r = 0; r < place.num_ranks(); ++r) {
    const auto stages = place.stages_on(r);
    auto& list = s.ranks[static_cast<std::size_t>(r)];
    for (int mb = 0; mb < m; ++mb) {
      for (int st : stages) list.push_back({st, mb, action_kind::forward});
    }
    if (mode == ppipe::schedule_mode::inference) continue;
    for (int mb = 0; mb < m; ++mb) {
      for (auto it = stages.rbegin(); it != stages.rend(); ++it) list.push_back({*it, mb, action_kind::backward});
    }
  }
  return ppipe::add_communication(std::move(s));
}

}  // namespace

TEST_CASE("the validator agrees with a brute-force executor on mutated schedules") {
  std::mt19937 rng(20261123);
  std::vector<ppipe::schedule> bases;
  for (int p = 1; p <= 4; ++p) {
    for (int m : {1, 2, 4}) {
      bases.push_back(ppipe::make_schedule("gpipe", {p, m, 1}));
      bases.push_back(ppipe::make_schedule("1f1b", {p, m, 1}));
      bases.push_back(split_backward(ppipe::make_schedule("1f1b", {p, m, 1})));
      bases.push_back(ppipe::make_schedule("forward_only", {p, m, 2}));
      if (m % p == 0) bases.push_back(ppipe::make_schedule("interleaved_1f1b", {p, m, 2}));
    }
  }
  for (const auto& place : {ppipe::placement::custom({0, 0, 1}, 2), ppipe::placement::custom({0, 1, 1, 0}, 2),
                            ppipe::placement::custom({2, 1, 0}, 3), ppipe::placement::custom({0, 1, 0, 1, 1}, 2)}) {
    for (int m : {1, 3}) {
      bases.push_back(gpipe_on(place, m, ppipe::schedule_mode::training));
      bases.push_back(split_backward(gpipe_on(place, m, ppipe::schedule_mode::training)));
      bases.push_back(gpipe_on(place, m, ppipe::schedule_mode::inference));
    }
  }
  for (const transfer_model model : {transfer_model::rendezvous, transfer_model::buffered}) {
    int valid = 0;
    int invalid = 0;
    for (const auto& base : bases) {
      CAPTURE(ppipe::to_string(model), base.name, base.num_ranks(), base.num_stages(), base.microbatches);
      REQUIRE(reference_ok(base, model));
      REQUIRE(ppipe::check_schedule(base, model).ok());
      for (int trial = 0; trial < 80; ++trial) {
        ppipe::schedule s = mutate(base, rng);
        if (trial % 3 == 2) s = mutate(std::move(s), rng);
        const bool expected = reference_ok(s, model);
        const auto report = ppipe::check_schedule(s, model);
        CAPTURE(trial);
        INFO(report.message());
        REQUIRE(report.ok() == expected);
        (expected ? valid : invalid) += 1;
        // rendezvous is the stricter model: what passes it passes buffered too.
        if (expected && model == transfer_model::rendezvous) {
          const auto buffered = ppipe::check_schedule(s, transfer_model::buffered);
          INFO(buffered.message());
          REQUIRE(buffered.ok());
        }
      }
    }
    // Both verdicts must be well represented, or the test proves little.
    CAPTURE(ppipe::to_string(model));
    CHECK(valid > 400);
    CHECK(invalid > 2000);
  }
}

TEST_CASE("rendezvous is the stricter model: grouping decides whether interleaved 1F1B deadlocks") {
  // Interleaved 1F1B's own lowering groups transfers per (forward, backward) pair. Lowered one
  // compute action at a time instead, p=2 ranks each post a lone gradient send that the other
  // receives only after its next forward: fine when sends are buffered, a deadlock when they wait.
  const auto generated = ppipe::make_schedule("interleaved_1f1b", {2, 4, 2});
  ppipe::schedule per_action = generated;
  for (auto& list : per_action.ranks) {
    std::erase_if(list, [](const action& a) { return ppipe::is_transfer(a.kind); });
  }
  per_action = ppipe::add_communication(std::move(per_action));
  CHECK(ppipe::check_schedule(generated, transfer_model::rendezvous).ok());
  CHECK(ppipe::check_schedule(generated, transfer_model::buffered).ok());
  CHECK(ppipe::check_schedule(per_action, transfer_model::buffered).ok());
  const auto report = ppipe::check_schedule(per_action, transfer_model::rendezvous);
  REQUIRE_FALSE(report.ok());
  CHECK(report.problem->kind == ppipe::problem_kind::deadlock);
  CHECK(reference_ok(per_action, transfer_model::buffered));
  CHECK_FALSE(reference_ok(per_action, transfer_model::rendezvous));
}
