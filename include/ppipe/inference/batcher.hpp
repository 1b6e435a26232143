#pragma once
/// @file
/// @brief Continuous batching: which sequences form each group's next step, admission under a
/// per-stage cache budget, and what each sampled token does to its sequence.

#include <algorithm>
#include <cstddef>
#include <deque>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generation.hpp"
#include "ppipe/inference/generative_model.hpp"

namespace ppipe {

/// @brief A sequence's admission: its id and the tokens its state must hold.
struct sequence_admission {
  int id = 0;        ///< the request's index in the generate() call
  int capacity = 0;  ///< tokens its state holds at most (continuous_batcher::capacity())
  /// @brief Compares member by member.
  /// @return whether both admissions have the same id and capacity
  friend bool operator==(const sequence_admission&, const sequence_admission&) = default;
};

/// @brief One group's next trip through the stages: the sequences whose state every stage frees
/// first, those it allocates next, and the batch (with the token ids of its new rows).
struct group_step {
  int group = 0;                          ///< the group, in [0, groups)
  std::vector<int> release;               ///< ids of finished sequences, freed before the step runs
  std::vector<sequence_admission> admit;  ///< sequences joining the group, allocated after release
  std::vector<sequence_step> batch;       ///< the group's sequences, in the order of their rows
  std::vector<int> tokens;  ///< the batch's new rows, in order: prompts, then last tokens
};

/// @brief The batching policy of a generate() call, on the first rank only: groups of at most
/// `group_size` sequences; a waiting request joins a group when the group comes back and has
/// room, in arrival order, once its state fits every stage's budget; a sequence leaves its group
/// when it has its tokens or sampled eos. Nothing here waits: it says what goes next.
class continuous_batcher {
 public:
  /// @brief A batcher with every request waiting, in the order of `requests`.
  /// @param requests the call's requests, indexed by sequence id; viewed, not copied, so they must
  /// outlive the batcher
  /// @param groups the number of groups, at least 1
  /// @param group_size the most sequences in one group, at least 1
  /// @param default_max_new the tokens to generate for a request whose max_new_tokens is 0
  /// @param eos the token that ends a sequence when sampled; a negative value ends none
  /// @param budget the most bytes of state any one stage may hold; 0: no limit
  /// @param bytes bytes[request][stage]: the request's state on each stage; one row per request,
  /// each with an entry per stage (the first row sets the number of stages)
  continuous_batcher(std::span<const generation_request> requests, int groups, int group_size, int default_max_new,
                     int eos, std::size_t budget, std::vector<std::vector<std::size_t>> bytes)
      : requests_(requests), group_size_(group_size), eos_(eos), budget_(budget), bytes_(std::move(bytes)),
        groups_(static_cast<std::size_t>(groups)), seqs_(requests.size()) {
    const std::size_t stages = bytes_.empty() ? 0 : bytes_.front().size();
    reserved_.assign(stages, 0);
    for (std::size_t i = 0; i < requests.size(); ++i) {
      seqs_[i].max_new = requests[i].max_new_tokens > 0 ? requests[i].max_new_tokens : default_max_new;
      waiting_.push_back(static_cast<int>(i));
    }
  }

  /// @brief The tokens a request's state holds at most: the prompt and every generated token but
  /// the last, which is sampled and never fed back.
  /// @param r the request
  /// @param max_new the tokens it generates: its max_new_tokens, or the call's default for 0
  /// @return `r.prompt.size() + max_new - 1`
  static int capacity(const generation_request& r, int max_new) {
    return static_cast<int>(r.prompt.size()) + max_new - 1;
  }

  /// @brief Group `g`'s next step, now that it is back (or has never gone): first the sequences
  /// that finished leave and waiting requests join, then every sequence of the group contributes
  /// its new rows. Call it while the group has no step in flight (before its first step, or after
  /// complete() of its last one).
  /// @param g the group, in [0, groups) (std::out_of_range otherwise)
  /// @param now_us the current time in microseconds, on the caller's clock: the admission time of
  /// the requests that join
  /// @return the step; std::nullopt when the group has no sequence to run, in which case its
  /// releases wait for the next step of any group that runs
  std::optional<group_step> next_step(int g, double now_us) {
    group& grp = groups_.at(static_cast<std::size_t>(g));
    group_step out;
    out.group = g;
    out.release = take_releases();
    while (!waiting_.empty() && static_cast<int>(grp.members.size()) < group_size_ && fits(waiting_.front())) {
      const int id = waiting_.front();
      waiting_.pop_front();
      sequence& q = seqs_[static_cast<std::size_t>(id)];
      const auto& bytes = bytes_[static_cast<std::size_t>(id)];
      for (std::size_t s = 0; s < reserved_.size(); ++s) reserved_[s] += bytes[s];
      q.admitted_us = now_us;
      q.active = true;
      out.admit.push_back({id, capacity(requests_[static_cast<std::size_t>(id)], q.max_new)});
      grp.members.push_back(id);
    }
    if (grp.members.empty()) {
      // Nothing to run: the releases wait for the next step that goes.
      pending_release_.insert(pending_release_.end(), out.release.begin(), out.release.end());
      return std::nullopt;
    }
    for (const int id : grp.members) {
      sequence& q = seqs_[static_cast<std::size_t>(id)];
      const auto& prompt = requests_[static_cast<std::size_t>(id)].prompt;
      if (q.out.empty()) {
        out.batch.push_back({id, 0, static_cast<int>(prompt.size())});
        out.tokens.insert(out.tokens.end(), prompt.begin(), prompt.end());
      } else {
        out.batch.push_back({id, static_cast<int>(prompt.size() + q.out.size()) - 1, 1});
        out.tokens.push_back(q.out.back());
      }
    }
    grp.in_flight = true;
    return out;
  }

  /// @brief The tokens group `g`'s step sampled, one per sequence of its batch, in order.
  ///
  /// A sequence that reaches its token count or samples eos finishes: its state leaves this
  /// account and its id goes to the releases.
  /// @param g the group whose step came back, in [0, groups) (std::out_of_range otherwise)
  /// @param tokens the sampled tokens
  /// @param now_us the current time in microseconds, on next_step()'s clock: the time of a
  /// sequence's first token or of its finish
  /// @throws ppipe::error (errc::invalid_argument) when no step of group `g` is in flight, or
  /// `tokens` does not hold one token per sequence of the group
  void complete(int g, std::span<const int> tokens, double now_us) {
    group& grp = groups_.at(static_cast<std::size_t>(g));
    if (!grp.in_flight || tokens.size() != grp.members.size()) {
      detail::fail(errc::invalid_argument, "group ", g, " got ", tokens.size(), " tokens for its ", grp.members.size(),
                   " sequences", grp.in_flight ? "" : " while no step of it was in flight",
                   "; the last stage returns one token per sequence of each step");
    }
    grp.in_flight = false;
    std::vector<int> stay;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const int id = grp.members[i];
      sequence& q = seqs_[static_cast<std::size_t>(id)];
      if (q.out.empty()) q.first_token_us = now_us;
      q.out.push_back(tokens[i]);
      if (static_cast<int>(q.out.size()) >= q.max_new || tokens[i] == eos_) {
        q.finished_us = now_us;
        q.active = false;
        const auto& bytes = bytes_[static_cast<std::size_t>(id)];
        for (std::size_t s = 0; s < reserved_.size(); ++s) reserved_[s] -= bytes[s];
        pending_release_.push_back(id);
      } else {
        stay.push_back(id);
      }
    }
    grp.members = std::move(stay);
  }

  /// @brief Sequences that finished and whose state the stages have not been told to free yet.
  /// @return their ids; each id is returned once, and the batcher then forgets it
  std::vector<int> take_releases() { return std::exchange(pending_release_, {}); }

  /// @brief True when every request has finished.
  /// @return whether no request waits and no admitted sequence is still generating
  [[nodiscard]] bool done() const noexcept {
    return waiting_.empty() && std::none_of(seqs_.begin(), seqs_.end(), [](const sequence& q) { return q.active; });
  }
  /// @brief The requests not admitted yet.
  /// @return their count
  [[nodiscard]] std::size_t waiting() const noexcept { return waiting_.size(); }
  /// @brief Bytes of state that admitted, unfinished sequences hold on stage `s`, by this account.
  /// @param s the stage, in [0, stages) (std::out_of_range otherwise)
  /// @return the sum of their bytes[request][s]
  [[nodiscard]] std::size_t reserved(int s) const { return reserved_.at(static_cast<std::size_t>(s)); }

  /// @brief The tokens sequence `id` has generated so far, eos included when it sampled it.
  /// @param id the request's index (std::out_of_range when there is no such request)
  /// @return its tokens, a reference valid while the batcher lives
  [[nodiscard]] const std::vector<int>& tokens(int id) const { return seqs_.at(static_cast<std::size_t>(id)).out; }
  /// @brief When sequence `id` was admitted, on next_step()'s clock.
  /// @param id the request's index (std::out_of_range when there is no such request)
  /// @return the time in microseconds; 0 while it waits
  [[nodiscard]] double admitted_us(int id) const { return seqs_.at(static_cast<std::size_t>(id)).admitted_us; }
  /// @brief When sequence `id`'s first token came back, on complete()'s clock.
  /// @param id the request's index (std::out_of_range when there is no such request)
  /// @return the time in microseconds; 0 until then
  [[nodiscard]] double first_token_us(int id) const { return seqs_.at(static_cast<std::size_t>(id)).first_token_us; }
  /// @brief When sequence `id` finished, on complete()'s clock.
  /// @param id the request's index (std::out_of_range when there is no such request)
  /// @return the time in microseconds; 0 until then
  [[nodiscard]] double finished_us(int id) const { return seqs_.at(static_cast<std::size_t>(id)).finished_us; }

 private:
  struct sequence {
    int max_new = 0;
    bool active = false;
    std::vector<int> out;
    double admitted_us = 0.0;
    double first_token_us = 0.0;
    double finished_us = 0.0;
  };
  struct group {
    std::vector<int> members;
    bool in_flight = false;
  };

  [[nodiscard]] bool fits(int id) const {
    if (budget_ == 0) return true;
    const auto& bytes = bytes_[static_cast<std::size_t>(id)];
    for (std::size_t s = 0; s < reserved_.size(); ++s) {
      if (reserved_[s] + bytes[s] > budget_) return false;
    }
    return true;
  }

  std::span<const generation_request> requests_;
  int group_size_;
  int eos_;
  std::size_t budget_;
  std::vector<std::vector<std::size_t>> bytes_;
  std::vector<group> groups_;
  std::vector<sequence> seqs_;
  std::deque<int> waiting_;
  std::vector<std::size_t> reserved_;
  std::vector<int> pending_release_;
};

}  // namespace ppipe
