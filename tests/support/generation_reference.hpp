#pragma once
// The unpipelined oracle of token generation: one sequence alone, on one thread, every layer in
// order, with nothing of ppipe's runtime in between. Pipelined generation must give its tokens.

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/layers/sampling.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace reference {

// Runs `tokens` (new rows at `position`) through every layer with the sequence's per-layer
// `states`; returns the last layer's output.
template <class Model>
ppipe::payload generation_step(Model& model, const std::vector<int>& tokens, int position,
                               std::vector<ppipe::payload>& states) {
  std::vector<std::int32_t> ids(tokens.begin(), tokens.end());
  const auto rows = static_cast<std::int64_t>(tokens.size());
  ppipe::payload x{ppipe::host_tensor(ppipe::shape({rows}, ppipe::dtype::i32), std::move(ids))};
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    const ppipe::sequence_view<ppipe::host_tensor> view{0, position, static_cast<int>(rows),
                                                        &states[static_cast<std::size_t>(layer)]};
    ppipe::generation_context<ppipe::host_tensor> ctx;
    ctx.mode = ppipe::pass_mode::inference;
    ctx.sequences = std::span<const ppipe::sequence_view<ppipe::host_tensor>>(&view, 1);
    ppipe::payload out;
    for (const ppipe::shape& s : model.output_shapes(layer, ppipe::shapes_of(x))) out.emplace_back(s);
    model.forward(layer, ctx, x, out);
    x = std::move(out);
  }
  return x;
}

// Greedy generation for `prompt` alone: prefill the whole prompt in one call per layer, sample its
// last row, then decode one token at a time until `max_new_tokens` tokens or `eos` (included).
// Returns the generated tokens, not the prompt.
template <class Model>
std::vector<int> generate(Model& model, const std::vector<int>& prompt, int max_new_tokens, int eos = -1) {
  if (prompt.empty()) {
    ppipe::detail::fail(ppipe::errc::invalid_argument,
                        "reference::generate got an empty prompt; give at least one token");
  }
  std::vector<int> generated;
  if (max_new_tokens < 1) return generated;
  // The last token generated is never fed back, so the cache holds at most this many.
  const int capacity = static_cast<int>(prompt.size()) + max_new_tokens - 1;
  std::vector<ppipe::payload> states(static_cast<std::size_t>(model.num_layers()));
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    for (const ppipe::shape& s : model.state_shapes(layer, capacity)) {
      states[static_cast<std::size_t>(layer)].emplace_back(s);
    }
  }
  ppipe::payload logits = generation_step(model, prompt, 0, states);
  int position = static_cast<int>(prompt.size());
  for (;;) {
    const int token = ppipe::layers::greedy(logits, static_cast<int>(logits[0].shape()[0]) - 1);
    generated.push_back(token);
    if (token == eos || static_cast<int>(generated.size()) == max_new_tokens) return generated;
    logits = generation_step(model, std::vector<int>{token}, position, states);
    ++position;
  }
}

}  // namespace reference
