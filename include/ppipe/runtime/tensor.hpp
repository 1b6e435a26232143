#pragma once
/// @file
/// @brief Shapes, the host tensor and payloads: what crosses a stage boundary.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ostream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"

namespace ppipe {

class shape;
inline std::string to_string(const shape& s);

/// @brief The dimensions of a tensor, outermost first. Dimension 0 of a pipeline's inputs and of
/// every boundary tensor is the batch: ppipe splits it into microbatches.
///
/// Every dimension is >= 0 and the element count fits in max_elements: a shape that breaks
/// either is refused with a ppipe::error naming it, where it is built (or, for a dimension set
/// through operator[], where its elements are counted), never turned into a tensor of 0 values.
class shape {
 public:
  /// @brief The most elements a shape may have: room for the bytes of 16-byte values in an
  /// std::ptrdiff_t, so that no size or offset computed from a shape can overflow.
  static constexpr std::int64_t max_elements = std::numeric_limits<std::ptrdiff_t>::max() / 16;

  shape() = default;
  shape(std::initializer_list<std::int64_t> dims) : dims_(dims) { (void)elements(); }
  explicit shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) { (void)elements(); }

  [[nodiscard]] std::size_t rank() const noexcept { return dims_.size(); }
  [[nodiscard]] std::int64_t operator[](std::size_t i) const { return dims_.at(i); }
  [[nodiscard]] std::int64_t& operator[](std::size_t i) { return dims_.at(i); }
  [[nodiscard]] const std::vector<std::int64_t>& dims() const noexcept { return dims_; }
  /// @brief Number of elements: the product of the dimensions (1 for a scalar).
  /// @return the count; throws ppipe::error (invalid_argument) for a negative dimension or a
  /// product above max_elements.
  [[nodiscard]] std::size_t elements() const {
    bool empty = false;
    for (const std::int64_t d : dims_) {
      if (d < 0) {
        detail::fail(errc::invalid_argument, "shape ", to_string(*this), " has a negative dimension (", d,
                     "); every dimension must be >= 0");
      }
      empty = empty || d == 0;
    }
    if (empty) return 0;
    std::int64_t n = 1;
    for (const std::int64_t d : dims_) {
      if (n > max_elements / d) {
        detail::fail(errc::invalid_argument, "shape ", to_string(*this), " has more than ", max_elements,
                     " elements, more than any tensor can hold; check its dimensions");
      }
      n *= d;
    }
    return static_cast<std::size_t>(n);
  }
  /// @brief The same shape with dimension 0 (the batch) set to `rows`.
  [[nodiscard]] shape with_batch(std::int64_t rows) const {
    shape out = *this;
    if (!out.dims_.empty()) out.dims_[0] = rows;
    (void)out.elements();
    return out;
  }

  friend bool operator==(const shape&, const shape&) = default;

 private:
  std::vector<std::int64_t> dims_;
};

/// @brief "[8, 16]".
inline std::string to_string(const shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.rank(); ++i) {
    if (i != 0) out += ", ";
    out += std::to_string(s[i]);
  }
  out += ']';
  return out;
}
inline std::ostream& operator<<(std::ostream& os, const shape& s) { return os << to_string(s); }

/// @brief "[8, 16], [8]" for a list of shapes (a payload's).
inline std::string to_string(std::span<const shape> shapes) {
  if (shapes.empty()) return "(nothing)";
  std::string out;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    if (i != 0) out += ", ";
    out += to_string(shapes[i]);
  }
  return out;
}

/// @brief A dense, row-major float tensor in host memory: the buffer type of the host backend.
class host_tensor {
 public:
  using value_type = float;

  host_tensor() = default;
  /// @brief A zero-filled tensor of shape `s`.
  explicit host_tensor(ppipe::shape s) : shape_(std::move(s)), data_(shape_.elements(), 0.0f) {}
  /// @brief A tensor of shape `s` with the given values (as many as `s` has elements).
  host_tensor(ppipe::shape s, std::vector<float> values) : shape_(std::move(s)), data_(std::move(values)) {
    if (data_.size() != shape_.elements()) {
      detail::fail(errc::invalid_argument, "a tensor of shape ", to_string(shape_), " needs ",
                   shape_.elements(), " values, but ", data_.size(), " were given");
    }
  }

  [[nodiscard]] const ppipe::shape& shape() const noexcept { return shape_; }
  [[nodiscard]] std::size_t size() const noexcept { return data_.size(); }
  [[nodiscard]] std::size_t bytes() const noexcept { return data_.size() * sizeof(float); }
  [[nodiscard]] float* data() noexcept { return data_.data(); }
  [[nodiscard]] const float* data() const noexcept { return data_.data(); }
  [[nodiscard]] std::span<float> values() noexcept { return data_; }
  [[nodiscard]] std::span<const float> values() const noexcept { return data_; }
  [[nodiscard]] float& operator[](std::size_t i) { return data_[i]; }
  [[nodiscard]] float operator[](std::size_t i) const { return data_[i]; }

  /// @brief Reuses `storage` (its capacity) for a zero-filled tensor of shape `s`; what the pool
  /// does to hand out a recycled buffer.
  static host_tensor adopt(ppipe::shape s, std::vector<float>&& storage) {
    host_tensor t;
    t.shape_ = std::move(s);
    t.data_ = std::move(storage);
    t.data_.assign(t.shape_.elements(), 0.0f);
    return t;
  }
  /// @brief Reuses `storage` for a tensor of shape `s` without zeroing the values it holds: for a
  /// buffer about to be overwritten whole (a receive). Elements it lacks are added as zeros.
  static host_tensor reuse(ppipe::shape s, std::vector<float>&& storage) {
    host_tensor t;
    t.shape_ = std::move(s);
    t.data_ = std::move(storage);
    t.data_.resize(t.shape_.elements());
    return t;
  }
  /// @brief Gives the storage back (for the pool); the tensor is empty afterwards.
  std::vector<float> release() && {
    shape_ = {};
    return std::move(data_);
  }

  friend bool operator==(const host_tensor&, const host_tensor&) = default;

 private:
  ppipe::shape shape_;
  std::vector<float> data_;
};

/// @brief What one layer reads or writes, and what crosses a stage boundary: one or more tensors,
/// each of its own shape.
template <class Tensor>
using basic_payload = std::vector<Tensor>;

/// @brief A payload of host tensors.
using payload = basic_payload<host_tensor>;

/// @brief The shapes of a payload's tensors.
template <class Tensor>
std::vector<shape> shapes_of(const basic_payload<Tensor>& p) {
  std::vector<shape> out;
  out.reserve(p.size());
  for (const Tensor& t : p) out.push_back(t.shape());
  return out;
}

/// @brief Whether a payload's tensors have exactly the shapes `want` (without building a list).
template <class Tensor>
bool has_shapes(const basic_payload<Tensor>& p, const std::vector<shape>& want) {
  if (p.size() != want.size()) return false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (!(p[i].shape() == want[i])) return false;
  }
  return true;
}

/// @brief Whether two payloads have tensors of the same shapes, one for one.
template <class Tensor>
bool has_shapes(const basic_payload<Tensor>& p, const basic_payload<Tensor>& like) {
  if (p.size() != like.size()) return false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (!(p[i].shape() == like[i].shape())) return false;
  }
  return true;
}

/// @brief The bytes a payload holds.
template <class Tensor>
std::size_t bytes_of(const basic_payload<Tensor>& p) {
  std::size_t n = 0;
  for (const Tensor& t : p) n += t.bytes();
  return n;
}

/// @brief Rows `[first, first + rows)` of dimension 0 of every tensor in `batch`.
inline payload slice_rows(const payload& batch, std::int64_t first, std::int64_t rows) {
  payload out;
  out.reserve(batch.size());
  for (const host_tensor& t : batch) {
    const std::int64_t total = t.shape().rank() ? t.shape()[0] : 0;
    if (first < 0 || rows < 0 || first + rows > total) {
      detail::fail(errc::invalid_argument, "rows ", first, "..", first + rows, " are outside a tensor of shape ",
                   to_string(t.shape()), "; slice within its ", total, " rows");
    }
    const std::size_t row = total ? t.size() / static_cast<std::size_t>(total) : 0;
    const auto begin = t.values().begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(first) * row);
    out.emplace_back(t.shape().with_batch(rows),
                     std::vector<float>(begin, begin + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(rows) * row)));
  }
  return out;
}

/// @brief Stacks `parts` along dimension 0, tensor by tensor; every part must have the same number
/// of tensors with the same shapes apart from dimension 0.
inline payload concat_rows(const std::vector<payload>& parts) {
  payload out;
  if (parts.empty()) return out;
  for (std::size_t k = 0; k < parts.front().size(); ++k) {
    std::int64_t rows = 0;
    std::vector<float> values;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].size() != parts.front().size() || parts[i][k].shape().rank() == 0 ||
          parts[i][k].shape().with_batch(0) != parts.front()[k].shape().with_batch(0)) {
        detail::fail(errc::invalid_argument, "cannot stack microbatch ", i, "'s tensors (",
                     to_string(shapes_of(parts[i])), ") under microbatch 0's (",
                     to_string(shapes_of(parts.front())), "); every part needs the same shapes after dimension 0");
      }
      rows += parts[i][k].shape()[0];
      values.insert(values.end(), parts[i][k].values().begin(), parts[i][k].values().end());
    }
    out.emplace_back(parts.front()[k].shape().with_batch(rows), std::move(values));
  }
  return out;
}

}  // namespace ppipe
