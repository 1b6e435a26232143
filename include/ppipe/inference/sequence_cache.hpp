#pragma once
/// @file
/// @brief One stage's per-sequence state (its layers' KV cache) during a generate() call, and the
/// generation forward that hands each layer its sequences' state.

#include <cstddef>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {

/// @brief The state a stage keeps for each sequence it serves: per layer of the stage, the
/// tensors of the model's state_shapes(), allocated zero-filled when the sequence is admitted and
/// freed when it finishes, and counted in the stage's pool (memory().cache_bytes). Used by the
/// stage's rank only. What is still held when the cache goes (a failed call) is freed then.
/// @tparam Stage a ppipe::stage (or a stage with its model(), pool(), infer_with() and aliases)
template <class Stage>
class sequence_cache {
 public:
  using model_type = typename Stage::model_type;      ///< the stage's model; it has state_shapes()
  using tensor_type = typename Stage::tensor_type;    ///< the tensor type of the stage's payloads
  using payload_type = typename Stage::payload_type;  ///< a layer's input, output or state
  using context_type = typename Stage::context_type;  ///< the layer_context the stage passes on
  static_assert(model_has_state<model_type>, "ppipe: a sequence cache needs a model with state_shapes()");

  /// @brief An empty cache for `stage`.
  /// @param stage the stage whose layers' state this is; outlives the cache
  explicit sequence_cache(Stage& stage) : stage_(&stage) {}
  /// @brief Takes over the stage and every state of `other`, which is left holding none.
  /// @param other the cache moved from
  sequence_cache(sequence_cache&& other) noexcept
      : stage_(other.stage_), sequences_(std::exchange(other.sequences_, {})) {}
  sequence_cache& operator=(sequence_cache&&) = delete;
  sequence_cache(const sequence_cache&) = delete;
  sequence_cache& operator=(const sequence_cache&) = delete;
  ~sequence_cache() { clear(); }

  /// @brief Bytes of one sequence's state on `stage` at `capacity` tokens.
  /// @param stage the stage
  /// @param capacity tokens the sequence may hold (prompt and generated)
  /// @return the bytes its layers' state_shapes() take
  [[nodiscard]] static std::size_t bytes(const Stage& stage, int capacity) {
    return detail::state_bytes<model_type, tensor_type>(stage.model(), stage.first_layer(), stage.end_layer(),
                                                        capacity);
  }

  /// @brief Allocates sequence `id`'s state for up to `capacity` tokens, zero-filled; it stays
  /// until finish(id).
  ///
  /// Its bytes count in the stage's pool (memory().cache_bytes) until then.
  /// @param id the sequence: the request's index in the generate() call
  /// @param capacity tokens the sequence may hold (prompt and generated), passed to state_shapes()
  /// @throws ppipe::error (errc::invalid_argument) when the cache already holds sequence `id`
  void admit(int id, int capacity) {
    if (sequences_.count(id) != 0) {
      detail::fail(errc::invalid_argument, "stage ", stage_->index(), " already holds the state of sequence ", id,
                   "; a sequence is admitted once, and again only after it finished");
    }
    state st;
    for (int layer = stage_->first_layer(); layer < stage_->end_layer(); ++layer) {
      payload_type per_layer;
      for (const shape& sh : stage_->model().state_shapes(layer, capacity)) per_layer.emplace_back(sh);
      st.bytes += bytes_of(per_layer);
      st.layers.push_back(std::move(per_layer));
    }
    stage_->pool().hold_sequence(st.bytes);
    sequences_.emplace(id, std::move(st));
  }

  /// @brief Frees sequence `id`'s state.
  /// @param id the sequence, admitted and not finished since
  /// @throws ppipe::error (errc::invalid_argument) when the cache holds no state of sequence `id`
  void finish(int id) {
    const auto found = sequences_.find(id);
    if (found == sequences_.end()) {
      detail::fail(errc::invalid_argument, "stage ", stage_->index(), " holds no state of sequence ", id,
                   " to free; a sequence is freed once, after its admission");
    }
    stage_->pool().drop_sequence(found->second.bytes);
    sequences_.erase(found);
  }

  /// @brief Frees every sequence's state.
  void clear() noexcept {
    for (const auto& entry : sequences_) stage_->pool().drop_sequence(entry.second.bytes);
    sequences_.clear();
  }

  /// @brief A generation forward of `batch` (generation step `step`) through the stage: `input`
  /// stacks the new rows of the sequences in `batch`, in order, and each layer sees, per sequence,
  /// its own state. Nothing is kept but the states.
  /// @param step the step, named in the layers' context as its microbatch
  /// @param batch the step's sequences, in the order of their rows
  /// @param input the stage's input, taken over
  /// @return the stage's output
  payload_type forward(int step, std::span<const sequence_step> batch, payload_type input) {
    std::vector<state*> states;
    states.reserve(batch.size());
    for (const sequence_step& q : batch) {
      const auto found = sequences_.find(q.id);
      if (found == sequences_.end()) {
        detail::fail(errc::invalid_argument, "stage ", stage_->index(), " got rows of sequence ", q.id,
                     ", whose state it does not hold; admit a sequence before its first step");
      }
      states.push_back(&found->second);
    }
    const int first = stage_->first_layer();
    std::vector<sequence_view<tensor_type>> views(batch.size());
    return stage_->infer_with(step, std::move(input),
                              [&](int layer, const context_type& base, const payload_type& in, payload_type& out) {
      const auto k = static_cast<std::size_t>(layer - first);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        views[i] = {batch[i].id, batch[i].position, batch[i].rows, &states[i]->layers[k]};
      }
      generation_context<tensor_type, typename Stage::device_type> ctx;
      static_cast<context_type&>(ctx) = base;
      ctx.sequences = views;
      stage_->model().forward(layer, ctx, in, out);
    });
  }

 private:
  struct state {
    std::vector<payload_type> layers;  // per layer of the stage, its state_shapes()
    std::size_t bytes = 0;
  };

  Stage* stage_;
  std::unordered_map<int, state> sequences_;  // by sequence id
};

}  // namespace ppipe
