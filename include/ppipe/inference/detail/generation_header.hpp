#pragma once
/// @file
/// @brief The header that ends every message of a generation run: what the message is, which
/// stage gets it, and the step's sequences, as one i32 host tensor.

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/batcher.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {
namespace detail {

/// What travels with every message of a generation run, after the payload's own tensors: what the
/// message is, which stage gets it, and the step's sequences.
struct generation_header {
  enum kind_type : int { step = 1, stop = 2, sampled = 3 };
  int kind = step;
  int stage = 0;  // the stage that receives it (step, stop)
  int step_id = 0;
  int group = 0;
  std::vector<int> release;
  std::vector<sequence_admission> admit;
  std::vector<sequence_step> batch;
  std::vector<int> tokens;  // kind == sampled: one per sequence of the step's batch

  [[nodiscard]] host_tensor encode() const {
    std::vector<std::int32_t> v;
    v.reserve(8 + release.size() + 2 * admit.size() + 3 * batch.size() + tokens.size());
    const auto put = [&](std::size_t x) { v.push_back(static_cast<std::int32_t>(x)); };
    v.push_back(kind);
    v.push_back(stage);
    v.push_back(step_id);
    v.push_back(group);
    put(release.size());
    put(admit.size());
    put(batch.size());
    put(tokens.size());
    v.insert(v.end(), release.begin(), release.end());
    for (const sequence_admission& a : admit) {
      v.push_back(a.id);
      v.push_back(a.capacity);
    }
    for (const sequence_step& q : batch) {
      v.push_back(q.id);
      v.push_back(q.position);
      v.push_back(q.rows);
    }
    v.insert(v.end(), tokens.begin(), tokens.end());
    const auto n = static_cast<std::int64_t>(v.size());
    return host_tensor(shape({n}, dtype::i32), std::move(v));
  }

  static generation_header decode(const host_tensor& t) {
    if (t.dtype() != dtype::i32) {
      fail(errc::invalid_argument, "a generation message header has dtype ", to_string(t.dtype()),
           ", not i32; every rank of a generation run must run the same ppipe");
    }
    const std::span<const std::int32_t> v = t.values<std::int32_t>();
    std::size_t at = 0;
    const auto get = [&]() -> int {
      if (at >= v.size()) {
        fail(errc::invalid_argument, "a generation message of ", v.size(),
             " values ends early; every rank of a generation run must run the same ppipe");
      }
      return v[at++];
    };
    generation_header h;
    h.kind = get();
    if (h.kind != step && h.kind != stop && h.kind != sampled) {
      fail(errc::invalid_argument, "a generation message has kind ", h.kind,
           "; every rank of a generation run must run the same ppipe");
    }
    h.stage = get();
    h.step_id = get();
    h.group = get();
    const auto n_release = static_cast<std::size_t>(get());
    const auto n_admit = static_cast<std::size_t>(get());
    const auto n_batch = static_cast<std::size_t>(get());
    const auto n_tokens = static_cast<std::size_t>(get());
    for (std::size_t i = 0; i < n_release; ++i) h.release.push_back(get());
    for (std::size_t i = 0; i < n_admit; ++i) {
      const int id = get();
      h.admit.push_back({id, get()});
    }
    for (std::size_t i = 0; i < n_batch; ++i) {
      const int id = get();
      const int position = get();
      h.batch.push_back({id, position, get()});
    }
    for (std::size_t i = 0; i < n_tokens; ++i) h.tokens.push_back(get());
    return h;
  }
};

}  // namespace detail
}  // namespace ppipe
