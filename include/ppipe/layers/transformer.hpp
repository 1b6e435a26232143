#pragma once
/// @file
/// @brief ppipe::layers::decoder, the CPU layer kit's small decoder-only transformer: a generative
/// model (ppipe::generative_model) with a per-sequence KV cache, for token-generation tests and
/// examples.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/layers/linear.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief The sizes of a decoder. Every value must be >= 1, and d_model a multiple of heads.
struct transformer_config {
  int vocab = 64;           ///< token ids are 0 .. vocab-1; the head gives vocab logits per row
  int d_model = 32;         ///< the width of the residual stream
  int heads = 4;            ///< attention heads, each d_model / heads wide
  int d_ff = 64;            ///< the hidden width of each MLP
  int blocks = 2;           ///< transformer blocks (an attention and an MLP layer each)
  int max_positions = 256;  ///< learned positions: no sequence may grow past this many tokens
  std::uint64_t seed = 1;   ///< the weights are a function of the config and this seed alone
};

namespace detail {

/// y = W x + b for one row: W [out, in] row-major, drawn like linear's from [-1/sqrt(in), 1/sqrt(in)].
struct dense {
  std::size_t in = 0;
  std::size_t out = 0;
  std::vector<float> weight;
  std::vector<float> bias;

  dense() = default;
  dense(int in_features, int out_features, std::uint64_t seed)
      : in(static_cast<std::size_t>(in_features)), out(static_cast<std::size_t>(out_features)),
        weight(in * out), bias(out) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(in_features));
    std::uint64_t state = seed;
    for (float& w : weight) w = uniform_symmetric(state, bound);
    for (float& b : bias) b = uniform_symmetric(state, bound);
  }
  void apply(const float* x, float* y) const noexcept {
    for (std::size_t o = 0; o < out; ++o) y[o] = dot_lanes(x, weight.data() + o * in, in) + bias[o];
  }
  [[nodiscard]] std::size_t parameters() const noexcept { return weight.size() + bias.size(); }
};

/// LayerNorm of one row, its scale and shift drawn near 1 and 0 so that a mixed-up parameter shows.
struct layer_norm {
  std::vector<float> gamma;
  std::vector<float> beta;

  layer_norm() = default;
  layer_norm(int width, std::uint64_t seed)
      : gamma(static_cast<std::size_t>(width)), beta(static_cast<std::size_t>(width)) {
    std::uint64_t state = seed;
    for (float& g : gamma) g = 1.0f + uniform_symmetric(state, 0.1f);
    for (float& b : beta) b = uniform_symmetric(state, 0.1f);
  }
  void apply(const float* x, float* y) const noexcept {
    const std::size_t n = gamma.size();
    float mean = 0.0f;
    for (std::size_t k = 0; k < n; ++k) mean += x[k];
    mean /= static_cast<float>(n);
    float var = 0.0f;
    for (std::size_t k = 0; k < n; ++k) var += (x[k] - mean) * (x[k] - mean);
    var /= static_cast<float>(n);
    const float inv = 1.0f / std::sqrt(var + 1e-5f);
    for (std::size_t k = 0; k < n; ++k) y[k] = (x[k] - mean) * inv * gamma[k] + beta[k];
  }
  [[nodiscard]] std::size_t parameters() const noexcept { return gamma.size() + beta.size(); }
};

}  // namespace detail

/// @brief A decoder-only transformer over token ids, split into layers for a pipeline:
///
/// - layer 0, the embedding: one i32 tensor [rows] of token ids -> [rows, d_model], the
///   token's embedding plus its position's;
/// - for block b, layer 1 + 2b: x + Wo MHA(LayerNorm(x)), causal, with `heads` heads;
/// - for block b, layer 2 + 2b: x + W2 relu(W1 LayerNorm(x));
/// - the last layer, 1 + 2 blocks: the final LayerNorm and the head, [rows, d_model] -> [rows, vocab]
///   logits (ppipe::layers::greedy() samples them).
///
/// The attention layers keep each sequence's keys and values (state_shapes()). The plain forward
/// takes its whole input as one sequence at positions 0..rows-1 without a cache; the generation
/// forward reads which rows belong to which sequence from its generation_context.
///
/// Numerics: every row is computed on its own, in float, in a fixed loop order, and attention
/// always reads keys and values from a cache buffer (the sequence's state, or a temporary in the
/// plain forward) after the call's new rows were written there. So an output row has the same bits
/// whichever other rows or sequences share its batch, however its prompt was split into calls, and
/// whether its keys were computed in this call or an earlier one.
///
/// Threads: the model is immutable after construction and every call works in its own locals, so
/// any calls may run at the same time, provided two calls do not write the same sequence's state.
class decoder {
 public:
  /// @brief A decoder of the sizes in `config`, its weights drawn from `config.seed` (splitmix64,
  /// the same on every platform). Throws ppipe::error (invalid_argument) for a size < 1 or a
  /// d_model that is not a multiple of heads.
  explicit decoder(const transformer_config& config = {}) : config_(validated(config)) {
    const int d = config_.d_model;
    std::uint64_t state = config_.seed;
    const auto next = [&state] { return detail::splitmix64(state); };
    std::uint64_t table = next();
    token_embedding_.resize(size(config_.vocab) * size(d));
    for (float& v : token_embedding_) v = detail::uniform_symmetric(table, 1.0f);
    table = next();
    position_embedding_.resize(size(config_.max_positions) * size(d));
    for (float& v : position_embedding_) v = detail::uniform_symmetric(table, 0.5f);
    for (int b = 0; b < config_.blocks; ++b) {
      attention_.push_back({detail::layer_norm(d, next()), detail::dense(d, d, next()), detail::dense(d, d, next()),
                            detail::dense(d, d, next()), detail::dense(d, d, next())});
      mlp_.push_back({detail::layer_norm(d, next()), detail::dense(d, config_.d_ff, next()),
                      detail::dense(config_.d_ff, d, next())});
    }
    final_norm_ = detail::layer_norm(d, next());
    head_ = detail::dense(d, config_.vocab, next());
  }

  /// @brief The sizes the model was built with.
  [[nodiscard]] const transformer_config& config() const noexcept { return config_; }
  /// @brief 2 + 2 * blocks: the embedding, an attention and an MLP layer per block, the head.
  [[nodiscard]] int num_layers() const noexcept { return 2 + 2 * config_.blocks; }

  /// @brief "embedding", "block 1 attention", "block 1 mlp" or "head", for messages.
  [[nodiscard]] std::string describe(int layer) const {
    switch (kind_of(layer)) {
      case kind::embedding: return "embedding";
      case kind::attention: return ppipe::detail::concat("block ", (layer - 1) / 2, " attention");
      case kind::mlp: return ppipe::detail::concat("block ", (layer - 1) / 2, " mlp");
      case kind::head: return "head";
    }
    return {};
  }

  /// @brief The shapes layer `layer` makes from `in`: [rows, d_model] from the embedding's [rows]
  /// and the blocks' [rows, d_model], [rows, vocab] from the head's [rows, d_model]. Throws
  /// ppipe::error (invalid_argument) naming the layer, the shapes it got and what it takes.
  [[nodiscard]] std::vector<shape> output_shapes(int layer, const std::vector<shape>& in) const {
    const kind k = kind_of(layer);
    if (k == kind::embedding) {
      if (in.size() != 1 || in[0].rank() != 1 || in[0].dtype() != dtype::i32) {
        ppipe::detail::fail(errc::invalid_argument, "decoder layer 0 (embedding) takes one i32 tensor [rows] of token "
                            "ids but got ", ppipe::to_string(std::span<const shape>(in)),
                            "; give it the tokens as one rank-1 tensor of shape({rows}, dtype::i32)");
      }
      return {shape{in[0][0], config_.d_model}};
    }
    if (in.size() != 1 || in[0].rank() != 2 || in[0][1] != config_.d_model) {
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer),
                          ") takes one tensor [rows, ", config_.d_model, "] but got ",
                          ppipe::to_string(std::span<const shape>(in)), "; give it layer ", layer - 1,
                          "'s output");
    }
    return {shape{in[0][0], k == kind::head ? config_.vocab : config_.d_model}};
  }

  /// @brief The state layer `layer` keeps per sequence of up to `capacity` tokens: the keys
  /// [capacity, d_model] and values [capacity, d_model] of an attention layer; none for the others.
  [[nodiscard]] std::vector<shape> state_shapes(int layer, int capacity) const {
    if (capacity < 0) {
      ppipe::detail::fail(errc::invalid_argument, "decoder state capacity ", capacity,
                          " is negative; give the most tokens a sequence may hold (>= 0)");
    }
    if (kind_of(layer) != kind::attention) return {};
    return {shape{capacity, config_.d_model}, shape{capacity, config_.d_model}};
  }

  /// @brief Layer `layer` over one sequence: the input's rows are its tokens at positions
  /// 0..rows-1, attended causally without a cache.
  void forward(int layer, const layer_context& /*ctx*/, const payload& in, payload& out) const {
    const std::size_t rows = check_io(layer, in, out);
    const kind k = kind_of(layer);
    if (k == kind::embedding) {
      check_span(0, rows);
      check_tokens(in[0].data<std::int32_t>(), 0, rows);
      embed(in[0].data<std::int32_t>(), out[0].data(), rows, 0);
    } else if (k == kind::attention) {
      std::vector<float> keys(rows * width()), values(rows * width());
      attend(attention_[block(layer)], in[0].data(), out[0].data(), rows, 0, keys.data(), values.data());
    } else {
      rowwise(layer, in[0].data(), out[0].data(), rows);
    }
  }

  /// @brief Layer `layer` over a generation batch: the input's rows are ctx.sequences' new rows,
  /// stacked in order; sequence s's row j is at position s.position + j. An attention layer writes
  /// the new rows' keys and values into (*s.state)[0] and [1] at those positions, then lets row j
  /// attend over cache positions 0 .. s.position + j. Throws ppipe::error (invalid_argument),
  /// before writing anything, when the sequences' rows do not add up to the input's, a sequence
  /// would pass max_positions or its state's capacity, or an attention layer's state is missing or
  /// not in state_shapes()'s shapes.
  void forward(int layer, const generation_context<host_tensor>& ctx, const payload& in, payload& out) const {
    const std::size_t rows = check_io(layer, in, out);
    const kind k = kind_of(layer);
    std::size_t total = 0;
    for (std::size_t s = 0; s < ctx.sequences.size(); ++s) {
      const sequence_view<host_tensor>& seq = ctx.sequences[s];
      if (seq.position < 0 || seq.rows < 0) {
        ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer), "): sequence ",
                            seq.id, " (entry ", s, ") has position ", seq.position, " and rows ", seq.rows,
                            "; both must be >= 0");
      }
      total += size(seq.rows);
    }
    if (total != rows) {
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer), "): the ",
                          ctx.sequences.size(), " sequences of the generation context hold ", total,
                          " rows but the input has ", rows,
                          "; stack exactly the sequences' new rows, in the context's order");
    }
    if (k != kind::embedding && k != kind::attention) {
      rowwise(layer, in[0].data(), out[0].data(), rows);
      return;
    }
    for (std::size_t s = 0, first = 0; s < ctx.sequences.size(); first += size(ctx.sequences[s].rows), ++s) {
      const sequence_view<host_tensor>& seq = ctx.sequences[s];
      check_positions(layer, seq, first);
      if (k == kind::embedding) check_tokens(in[0].data<std::int32_t>(), first, size(seq.rows));
      if (k == kind::attention) check_state(layer, seq, s);
    }
    std::size_t first = 0;
    for (const sequence_view<host_tensor>& seq : ctx.sequences) {
      const std::size_t n = size(seq.rows);
      const std::size_t position = size(seq.position);
      float* y = out[0].data() + first * width();
      if (k == kind::embedding) {
        embed(in[0].data<std::int32_t>() + first, y, n, position);
      } else {
        attend(attention_[block(layer)], in[0].data() + first * width(), y, n, position, (*seq.state)[0].data(),
               (*seq.state)[1].data());
      }
      first += n;
    }
  }

  /// @brief A rough forward cost of layer `layer` for `rows` rows, for the partitioner to balance:
  /// flops (a multiply-add counts 2), the backward nominally twice that (the decoder does not
  /// train), parameter bytes, and the bytes of the output and working rows.
  [[nodiscard]] layer_cost cost(int layer, std::int64_t rows = 1) const {
    const double n = static_cast<double>(rows);
    const double d = config_.d_model;
    double flops = 0.0;
    double params = 0.0;
    double work = d;
    switch (kind_of(layer)) {
      case kind::embedding:
        flops = d;
        params = static_cast<double>(token_embedding_.size() + position_embedding_.size());
        break;
      case kind::attention: {
        const attention_block& a = attention_[block(layer)];
        flops = 8.0 * d * d + 8.0 * d;  // four projections and the norm; attention itself grows with position
        params = static_cast<double>(a.norm.parameters() + a.q.parameters() + a.k.parameters() +
                                     a.v.parameters() + a.o.parameters());
        work = 4.0 * d;
        break;
      }
      case kind::mlp: {
        const mlp_block& m = mlp_[block(layer)];
        flops = 4.0 * d * config_.d_ff + 8.0 * d;
        params = static_cast<double>(m.norm.parameters() + m.up.parameters() + m.down.parameters());
        work = d + config_.d_ff;
        break;
      }
      case kind::head:
        flops = 2.0 * d * config_.vocab + 8.0 * d;
        params = static_cast<double>(final_norm_.parameters() + head_.parameters());
        work = d + config_.vocab;
        break;
    }
    return {n * flops, 2.0 * n * flops, params * sizeof(float), n * work * sizeof(float)};
  }

 private:
  enum class kind : unsigned char { embedding, attention, mlp, head };

  struct attention_block {
    detail::layer_norm norm;
    detail::dense q, k, v, o;
  };
  struct mlp_block {
    detail::layer_norm norm;
    detail::dense up, down;
  };

  static std::size_t size(int n) noexcept { return static_cast<std::size_t>(n); }
  std::size_t width() const noexcept { return size(config_.d_model); }
  static std::size_t block(int layer) noexcept { return static_cast<std::size_t>((layer - 1) / 2); }

  static transformer_config validated(const transformer_config& c) {
    const auto positive = [](const char* name, int value) {
      if (value < 1) {
        ppipe::detail::fail(errc::invalid_argument, "transformer_config.", name, " is ", value, "; give ", name,
                            " >= 1");
      }
    };
    positive("vocab", c.vocab);
    positive("d_model", c.d_model);
    positive("heads", c.heads);
    positive("d_ff", c.d_ff);
    positive("blocks", c.blocks);
    positive("max_positions", c.max_positions);
    if (c.d_model % c.heads != 0) {
      ppipe::detail::fail(errc::invalid_argument, "transformer_config.d_model ", c.d_model,
                          " is not a multiple of heads ", c.heads, "; give a d_model divisible by heads (e.g. ",
                          (c.d_model / c.heads + 1) * c.heads, ") or another head count");
    }
    return c;
  }

  kind kind_of(int layer) const {
    if (layer < 0 || layer >= num_layers()) {
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " is outside the model's ", num_layers(),
                          " layers; give an index in [0, ", num_layers(), ")");
    }
    if (layer == 0) return kind::embedding;
    if (layer == num_layers() - 1) return kind::head;
    return layer % 2 == 1 ? kind::attention : kind::mlp;
  }

  /// Checks `in` and `out` against output_shapes(); returns the rows.
  std::size_t check_io(int layer, const payload& in, payload& out) const {
    const std::vector<shape> want = output_shapes(layer, shapes_of(in));
    if (shapes_of(out) != want) {
      const std::vector<shape> got = shapes_of(out);
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer),
                          "): `out` has shapes ", ppipe::to_string(std::span<const shape>(got)), " but needs ",
                          ppipe::to_string(std::span<const shape>(want)), "; allocate it from output_shapes()");
    }
    return static_cast<std::size_t>(in[0].shape()[0]);
  }

  /// The plain forward's check: its rows are positions 0..rows-1 of one sequence.
  void check_span(int layer, std::size_t rows) const {
    if (rows > size(config_.max_positions)) {
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer), "): ", rows,
                          " rows are positions 0..", rows - 1, " of one sequence but the model has ",
                          config_.max_positions, " positions; give at most max_positions rows (or build it with more)");
    }
  }
  void check_positions(int layer, const sequence_view<host_tensor>& seq, std::size_t first_row) const {
    if (size(seq.position) + size(seq.rows) > size(config_.max_positions)) {
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer), "): sequence ",
                          seq.id, " (input rows ", first_row, "..", first_row + size(seq.rows), ") at position ",
                          seq.position, " with ", seq.rows, " new rows needs ", seq.position + seq.rows,
                          " positions but the model has ", config_.max_positions,
                          "; keep sequences within max_positions (or build it with more)");
    }
  }

  void check_state(int layer, const sequence_view<host_tensor>& seq, std::size_t entry) const {
    const payload* state = seq.state;
    const bool shaped = state != nullptr && state->size() == 2 && (*state)[0].shape().rank() == 2 &&
                        (*state)[0].shape()[1] == config_.d_model && (*state)[1].shape() == (*state)[0].shape();
    if (!shaped) {
      const std::string got = state == nullptr ? std::string("no state (null)")
                                               : ppipe::to_string(std::span<const shape>(shapes_of(*state)));
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer), "): sequence ",
                          seq.id, " (entry ", entry, ") has ", got, " but the layer needs its keys and values, [",
                          "capacity, ", config_.d_model, "] each; allocate them from state_shapes(", layer,
                          ", capacity)");
    }
    const std::int64_t capacity = (*state)[0].shape()[0];
    if (seq.position + seq.rows > capacity) {
      ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", describe(layer), "): sequence ",
                          seq.id, " at position ", seq.position, " with ", seq.rows, " new rows needs ",
                          seq.position + seq.rows, " cache rows but its state holds ", capacity,
                          "; allocate the state with state_shapes(layer, capacity) for capacity >= ",
                          seq.position + seq.rows);
    }
  }

  /// Checks that rows [first, first + rows) of the embedding's input are token ids.
  void check_tokens(const std::int32_t* ids, std::size_t first, std::size_t rows) const {
    for (std::size_t r = first; r < first + rows; ++r) {
      const std::int32_t id = ids[r];
      if (id < 0 || id >= config_.vocab) {
        ppipe::detail::fail(errc::invalid_argument, "decoder embedding: row ", r, " holds token id ", id,
                            ", which is not in [0, ", config_.vocab, "); give token ids below the vocabulary size");
      }
    }
  }

  void embed(const std::int32_t* ids, float* y, std::size_t rows, std::size_t position) const {
    const std::size_t d = width();
    for (std::size_t r = 0; r < rows; ++r) {
      const float* token = token_embedding_.data() + static_cast<std::size_t>(ids[r]) * d;
      const float* place = position_embedding_.data() + (position + r) * d;
      for (std::size_t k = 0; k < d; ++k) y[r * d + k] = token[k] + place[k];
    }
  }

  /// One sequence's rows through attention block `a`: x and y are [rows, d], the sequence's rows
  /// at positions position..position+rows-1; keys and values hold its cache (at least
  /// position + rows rows of d), rows 0..position-1 already filled.
  void attend(const attention_block& a, const float* x, float* y, std::size_t rows, std::size_t position,
              float* keys, float* values) const {
    const std::size_t d = width();
    const std::size_t heads = size(config_.heads);
    const std::size_t hd = d / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> normed(d), queries(rows * d), mixed(d), weights(position + rows);
    // Every new row's keys and values go into the cache first, so that attention below reads
    // them from there whether they were written by this call or an earlier one.
    for (std::size_t r = 0; r < rows; ++r) {
      a.norm.apply(x + r * d, normed.data());
      a.q.apply(normed.data(), queries.data() + r * d);
      a.k.apply(normed.data(), keys + (position + r) * d);
      a.v.apply(normed.data(), values + (position + r) * d);
    }
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t seen = position + r + 1;  // causal: positions 0 .. position + r
      for (std::size_t h = 0; h < heads; ++h) {
        const float* q = queries.data() + r * d + h * hd;
        float top = 0.0f;
        for (std::size_t i = 0; i < seen; ++i) {
          weights[i] = detail::dot_lanes(q, keys + i * d + h * hd, hd) * scale;
          if (i == 0 || weights[i] > top) top = weights[i];
        }
        float total = 0.0f;
        for (std::size_t i = 0; i < seen; ++i) {
          weights[i] = std::exp(weights[i] - top);
          total += weights[i];
        }
        float* acc = mixed.data() + h * hd;
        for (std::size_t k = 0; k < hd; ++k) acc[k] = 0.0f;
        for (std::size_t i = 0; i < seen; ++i) {
          const float w = weights[i];
          const float* v = values + i * d + h * hd;
          for (std::size_t k = 0; k < hd; ++k) acc[k] += w * v[k];
        }
        const float inv = 1.0f / total;
        for (std::size_t k = 0; k < hd; ++k) acc[k] *= inv;
      }
      float* out = y + r * d;
      a.o.apply(mixed.data(), out);
      for (std::size_t k = 0; k < d; ++k) out[k] += x[r * d + k];
    }
  }

  /// The layers whose rows do not see each other: an MLP sublayer or the head.
  void rowwise(int layer, const float* x, float* y, std::size_t rows) const {
    const std::size_t d = width();
    std::vector<float> normed(d);
    if (kind_of(layer) == kind::head) {
      const std::size_t v = size(config_.vocab);
      for (std::size_t r = 0; r < rows; ++r) {
        final_norm_.apply(x + r * d, normed.data());
        head_.apply(normed.data(), y + r * v);
      }
      return;
    }
    const mlp_block& m = mlp_[block(layer)];
    std::vector<float> hidden(size(config_.d_ff));
    for (std::size_t r = 0; r < rows; ++r) {
      m.norm.apply(x + r * d, normed.data());
      m.up.apply(normed.data(), hidden.data());
      for (float& h : hidden) h = h > 0.0f ? h : 0.0f;
      float* out = y + r * d;
      m.down.apply(hidden.data(), out);
      for (std::size_t k = 0; k < d; ++k) out[k] += x[r * d + k];
    }
  }

  transformer_config config_;
  std::vector<float> token_embedding_;     // [vocab, d_model]
  std::vector<float> position_embedding_;  // [max_positions, d_model]
  std::vector<attention_block> attention_;
  std::vector<mlp_block> mlp_;
  detail::layer_norm final_norm_;
  detail::dense head_;
};

}  // namespace ppipe::layers
