#pragma once
// A tiny generative model for the generation engine's tests: every layer keeps a cache of what
// its rows saw, and its output depends on the whole cache, so a lost, shared or misplaced state
// changes the tokens. Layer 0 turns i32 token ids [rows] into one-hot rows [rows, vocab]; every other
// layer writes each row's argmax into its cache at the row's position and outputs the one-hot of
// (sum of its cache up to that position + layer) mod vocab. The caches are i32 tensors.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ppipe/inference/generative_model.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace toy {

struct cache_model {
  int layers = 6;
  int vocab = 11;
  std::chrono::microseconds wait{0};  // per layer call, when a test wants slow kernels
  int throw_at_layer = -1;            // forward of this layer throws (fault tests)

  [[nodiscard]] int num_layers() const { return layers; }
  [[nodiscard]] std::vector<ppipe::shape> output_shapes(int layer, const std::vector<ppipe::shape>& in) const {
    const std::int64_t rows = in.at(0)[0];
    if (layer == 0 ? in.at(0) != ppipe::shape({rows}, ppipe::dtype::i32) : in.at(0) != ppipe::shape{rows, vocab}) throw std::invalid_argument("bad shape");
    return {ppipe::shape{rows, vocab}};
  }
  [[nodiscard]] std::vector<ppipe::shape> state_shapes(int layer, int capacity) const {
    if (layer == 0) return {};
    return {ppipe::shape({capacity}, ppipe::dtype::i32)};
  }
  // The plain forward: the rows are one sequence from position 0.
  void forward(int layer, const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    const int rows = static_cast<int>(in[0].shape()[0]);
    ppipe::payload state{ppipe::host_tensor(ppipe::shape({rows}, ppipe::dtype::i32))};
    const ppipe::sequence_view<ppipe::host_tensor> one{0, 0, rows, &state};
    run(layer, std::span(&one, 1), in, out);
  }
  void forward(int layer, const ppipe::generation_context<ppipe::host_tensor>& ctx, const ppipe::payload& in,
               ppipe::payload& out) {
    run(layer, ctx.sequences, in, out);
  }

 private:
  void run(int layer, std::span<const ppipe::sequence_view<ppipe::host_tensor>> seqs, const ppipe::payload& in,
           ppipe::payload& out) {
    if (layer == throw_at_layer) throw std::runtime_error("toy layer failed");
    if (wait.count() > 0) std::this_thread::sleep_for(wait);
    const auto v = static_cast<std::size_t>(vocab);
    std::size_t row = 0;
    for (const auto& q : seqs) {
      for (int j = 0; j < q.rows; ++j, ++row) {
        int value = 0;
        if (layer == 0) {
          value = in[0].values<std::int32_t>()[row];
        } else {
          int arg = 0;
          for (std::size_t c = 1; c < v; ++c) {
            if (in[0][row * v + c] > in[0][row * v + static_cast<std::size_t>(arg)]) arg = static_cast<int>(c);
          }
          const std::span<std::int32_t> cache = q.state->at(0).values<std::int32_t>();
          const auto pos = static_cast<std::size_t>(q.position + j);
          if (pos >= cache.size()) throw std::out_of_range("toy cache overflow");
          cache[pos] = arg;
          int sum = layer;
          for (std::size_t k = 0; k <= pos; ++k) sum += cache[k];
          value = sum % vocab;
        }
        out[0][row * v + static_cast<std::size_t>(value % vocab)] = 1.0f;
      }
    }
  }
};

}  // namespace toy
