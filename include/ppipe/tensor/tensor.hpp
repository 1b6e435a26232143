#pragma once
/// @file
/// @brief Shapes (with their dtype), the host tensor and payloads: what crosses a stage boundary.

#include <algorithm>
#include <cassert>
#include <concepts>
#include <cstring>
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
#include "ppipe/tensor/dtype.hpp"

namespace ppipe {

class shape;
inline std::string to_string(const shape& s);

/// @brief The dimensions of a tensor, outermost first, and its element type (f32 unless given).
/// Dimension 0 of a pipeline's inputs and of every boundary tensor is the batch: ppipe splits it
/// into microbatches.
///
/// Every dimension is >= 0 and the element count fits in max_elements: a shape that breaks
/// either is refused with a ppipe::error naming it, where it is built (or, for a dimension set
/// through operator[], where its elements are counted), never turned into a tensor of 0 values.
class shape {
 public:
  /// @brief The most elements a shape may have: room for the bytes of 16-byte values in an
  /// std::ptrdiff_t, so that no size or offset computed from a shape can overflow.
  static constexpr std::int64_t max_elements = std::numeric_limits<std::ptrdiff_t>::max() / 16;

  /// @brief A scalar shape (rank 0, one element) of dtype f32.
  shape() = default;
  /// @brief An f32 shape: `shape{8, 16}`.
  /// @param dims the dimensions, outermost first; throws ppipe::error (invalid_argument) for a
  /// negative one or more than max_elements elements
  shape(std::initializer_list<std::int64_t> dims) : dims_(dims) { (void)elements(); }
  /// @brief A shape of another element type: `shape({8, 16}, dtype::bf16)`.
  /// @param dims the dimensions, outermost first, checked as by the constructor above
  /// @param type the element type; a value that is no enumerator of dtype throws ppipe::error
  /// (invalid_argument)
  shape(std::initializer_list<std::int64_t> dims, ppipe::dtype type) : dims_(dims), dtype_(checked(type)) {
    (void)elements();
  }
  /// @brief A shape of these dimensions and element type.
  /// @param dims the dimensions, outermost first; throws ppipe::error (invalid_argument) for a
  /// negative one or more than max_elements elements
  /// @param type the element type; a value that is no enumerator of dtype throws ppipe::error
  /// (invalid_argument)
  explicit shape(std::vector<std::int64_t> dims, ppipe::dtype type = ppipe::dtype::f32)
      : dims_(std::move(dims)), dtype_(checked(type)) {
    (void)elements();
  }

  /// @brief The number of dimensions.
  /// @return 0 for a scalar, 2 for `shape{8, 16}`
  [[nodiscard]] std::size_t rank() const noexcept { return dims_.size(); }
  /// @brief Dimension `i`, counted from the outermost.
  /// @param i the dimension's index, below rank(); others throw std::out_of_range
  /// @return its extent
  [[nodiscard]] std::int64_t operator[](std::size_t i) const { return dims_.at(i); }
  /// @brief Dimension `i`, to change it in place; the new value is checked when elements() next
  /// counts.
  /// @param i the dimension's index, below rank(); others throw std::out_of_range
  /// @return a reference to its extent, valid while the shape lives and its rank is unchanged
  [[nodiscard]] std::int64_t& operator[](std::size_t i) { return dims_.at(i); }
  /// @brief All dimensions, outermost first.
  /// @return a reference to them, valid while the shape lives
  [[nodiscard]] const std::vector<std::int64_t>& dims() const noexcept { return dims_; }
  /// @brief The element type.
  /// @return the dtype given at construction, or f32
  [[nodiscard]] ppipe::dtype dtype() const noexcept { return dtype_; }
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
  /// @brief The bytes of a tensor of this shape: elements() × size_of(dtype()).
  /// @return the size in bytes; throws ppipe::error (invalid_argument) where elements() does
  [[nodiscard]] std::size_t bytes() const { return elements() * size_of(dtype_); }
  /// @brief The same shape with dimension 0 (the batch) set to `rows` (the dtype is kept).
  /// @param rows the new batch size, >= 0; a negative value, or one that takes the element count
  /// past max_elements, throws ppipe::error (invalid_argument)
  /// @return the new shape; a scalar (rank 0) comes back unchanged
  [[nodiscard]] shape with_batch(std::int64_t rows) const {
    shape out = *this;
    if (!out.dims_.empty()) out.dims_[0] = rows;
    (void)out.elements();
    return out;
  }
  /// @brief The same dimensions with element type `type`.
  /// @param type the new element type; a value that is no enumerator of dtype throws ppipe::error
  /// (invalid_argument)
  /// @return the new shape
  [[nodiscard]] shape with_dtype(ppipe::dtype type) const {
    shape out = *this;
    out.dtype_ = checked(type);
    return out;
  }

  /// @brief Equal dimensions and equal dtype.
  friend bool operator==(const shape&, const shape&) = default;

 private:
  static ppipe::dtype checked(ppipe::dtype type) {
    if (!is_valid(type)) {
      detail::fail(errc::invalid_argument, "dtype value ", static_cast<int>(type),
                   " is not a ppipe::dtype; use one of its enumerators");
    }
    return type;
  }
  std::vector<std::int64_t> dims_;
  ppipe::dtype dtype_ = ppipe::dtype::f32;
};

/// @brief "[8, 16]" for an f32 shape, "[8, 16] bf16" for another dtype.
/// @param s the shape
/// @return its dimensions in brackets, then its dtype unless that is f32; "[]" for an f32 scalar
inline std::string to_string(const shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.rank(); ++i) {
    if (i != 0) out += ", ";
    out += std::to_string(s[i]);
  }
  out += ']';
  if (s.dtype() != dtype::f32) {
    out += ' ';
    out += to_string(s.dtype());
  }
  return out;
}
/// @brief Writes to_string(s) to `os`.
/// @param os the stream
/// @param s the shape
/// @return `os`
inline std::ostream& operator<<(std::ostream& os, const shape& s) { return os << to_string(s); }

/// @brief "[8, 16], [8]" for a list of shapes (a payload's).
/// @param shapes the shapes, in order
/// @return each shape as to_string(const shape&) writes it, separated by ", "; "(nothing)" for none
inline std::string to_string(std::span<const shape> shapes) {
  if (shapes.empty()) return "(nothing)";
  std::string out;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    if (i != 0) out += ", ";
    out += to_string(shapes[i]);
  }
  return out;
}

namespace detail {

/// The unit of a host tensor's storage: 16 bytes aligned to 16, so that the elements of every
/// dtype (and SIMD loads of them) are aligned whatever the tensor's dtype.
struct alignas(16) storage_block {
  std::byte bytes[16];
};

/// Blocks that hold `bytes` bytes.
constexpr std::size_t blocks_for(std::size_t bytes) noexcept {
  return (bytes + sizeof(storage_block) - 1) / sizeof(storage_block);
}

}  // namespace detail

/// @brief A dense, row-major tensor in host memory, of any dtype: the buffer type of the host
/// backend.
///
/// The float API (data(), values(), operator[], the constructor from std::vector<float>) is that
/// of f32 tensors, so models written for floats compile unchanged; data<T>() and values<T>()
/// give the elements of any dtype. Both refuse a tensor of another dtype with a ppipe::error
/// naming the two, except operator[], which checks in debug builds only (an assert): it sits in
/// the inner loops of reference kernels, where a check per element would cost vectorization.
class host_tensor {
 public:
  /// @brief The element type of the float API.
  using value_type = float;
  /// @brief What the buffer pool keeps of a released tensor: its storage, of any dtype.
  using storage = std::vector<detail::storage_block>;

  /// @brief An empty placeholder to assign to: no storage, size() and bytes() 0, a default shape.
  host_tensor() = default;
  /// @brief A zero-filled tensor of shape `s` (of s's dtype).
  /// @param s the shape, dtype included; throws ppipe::error (invalid_argument) when its elements
  /// cannot be counted (see shape::elements())
  explicit host_tensor(ppipe::shape s)
      : shape_(std::move(s)), elements_(shape_.elements()), data_(detail::blocks_for(bytes()), detail::storage_block{}) {}
  /// @brief An f32 tensor of shape `s` with the given values (as many as `s` has elements; `s`
  /// must be f32).
  /// @param s the shape; another dtype throws ppipe::error (invalid_argument)
  /// @param values the elements in row-major order, copied; a count other than s.elements() throws
  /// ppipe::error (invalid_argument)
  host_tensor(ppipe::shape s, std::vector<float> values) : host_tensor(std::move(s), std::span<const float>(values)) {}
  /// @brief A tensor of shape `s` with the given values of another element type (bfloat16,
  /// float16, std::int32_t, double, std::int64_t); `s` must be of that dtype.
  /// @tparam T the element type, any tensor_element but float
  /// @param s the shape; a dtype other than dtype_of_v<T> throws ppipe::error (invalid_argument)
  /// @param values the elements in row-major order, copied; a count other than s.elements() throws
  /// ppipe::error (invalid_argument)
  template <tensor_element T>
    requires(!std::same_as<T, float>)
  host_tensor(ppipe::shape s, std::vector<T> values) : host_tensor(std::move(s), std::span<const T>(values)) {}
  /// @brief A tensor of shape `s` with a copy of `values`; `s` must be of T's dtype.
  /// @tparam T the element type
  /// @param s the shape; a dtype other than dtype_of_v<T> throws ppipe::error (invalid_argument)
  /// @param values the elements in row-major order, s.elements() of them (another count throws
  /// ppipe::error (invalid_argument)); the span need not outlive the call
  template <tensor_element T>
  host_tensor(ppipe::shape s, std::span<const T> values)
      : shape_(std::move(s)), elements_(shape_.elements()), data_(detail::blocks_for(bytes())) {
    if (shape_.dtype() != dtype_of_v<T>) {
      detail::fail(errc::invalid_argument, "a tensor of shape ", to_string(shape_), " holds ",
                   to_string(shape_.dtype()), " elements but was given ", to_string(dtype_of_v<T>),
                   " values; build it with shape.with_dtype(dtype::", to_string(dtype_of_v<T>),
                   ") or convert the values");
    }
    if (values.size() != elements_) {
      detail::fail(errc::invalid_argument, "a tensor of shape ", to_string(shape_), " needs ", elements_,
                   " values, but ", values.size(), " were given");
    }
    if (!values.empty()) std::memcpy(byte_data(), values.data(), bytes());
  }

  /// @brief The tensor's shape, dtype included.
  /// @return a reference valid while the tensor lives and is not assigned to
  [[nodiscard]] const ppipe::shape& shape() const noexcept { return shape_; }
  /// @brief The element type (the shape's).
  /// @return shape().dtype()
  [[nodiscard]] ppipe::dtype dtype() const noexcept { return shape_.dtype(); }
  /// @brief The number of elements.
  /// @return shape().elements(), counted once at construction
  [[nodiscard]] std::size_t size() const noexcept { return elements_; }
  /// @brief elements × size_of(dtype).
  /// @return the bytes the elements occupy, without the padding of the storage's last block
  [[nodiscard]] std::size_t bytes() const noexcept { return elements_ * size_of(shape_.dtype()); }
  /// @brief The elements' bytes, of any dtype (what a transport moves).
  /// @return the first of bytes() writable bytes, aligned to 16; null or dangling when bytes() is 0
  [[nodiscard]] std::byte* byte_data() noexcept { return reinterpret_cast<std::byte*>(data_.data()); }
  /// @brief The elements' bytes, of any dtype, read-only.
  /// @return the first of bytes() bytes, aligned to 16; null or dangling when bytes() is 0
  [[nodiscard]] const std::byte* byte_data() const noexcept { return reinterpret_cast<const std::byte*>(data_.data()); }

  /// @brief The elements as T; throws ppipe::error unless the tensor's dtype is T's.
  /// @tparam T the element type of dtype() (float for f32, bfloat16 for bf16, ...)
  /// @return the first of size() elements, valid while the tensor lives and keeps its storage
  template <tensor_element T>
  [[nodiscard]] T* data() {
    detail::check_dtype(dtype(), dtype_of_v<T>, "the tensor");
    return reinterpret_cast<T*>(byte_data());
  }
  /// @brief The elements as T, read-only; throws ppipe::error (invalid_argument) unless the
  /// tensor's dtype is T's.
  /// @tparam T the element type of dtype()
  /// @return the first of size() elements, valid while the tensor lives and keeps its storage
  template <tensor_element T>
  [[nodiscard]] const T* data() const {
    detail::check_dtype(dtype(), dtype_of_v<T>, "the tensor");
    return reinterpret_cast<const T*>(byte_data());
  }
  /// @brief The elements as a span of T; throws ppipe::error unless the tensor's dtype is T's.
  /// @tparam T the element type of dtype()
  /// @return a span of size() elements, valid while the tensor lives and keeps its storage
  template <tensor_element T>
  [[nodiscard]] std::span<T> values() {
    return {data<T>(), elements_};
  }
  /// @brief The elements as a read-only span of T; throws ppipe::error (invalid_argument) unless
  /// the tensor's dtype is T's.
  /// @tparam T the element type of dtype()
  /// @return a span of size() elements, valid while the tensor lives and keeps its storage
  template <tensor_element T>
  [[nodiscard]] std::span<const T> values() const {
    return {data<T>(), elements_};
  }
  /// @brief The elements of an f32 tensor (throws for another dtype).
  /// @return data<float>()
  [[nodiscard]] float* data() { return data<float>(); }
  /// @brief The elements of an f32 tensor, read-only (throws ppipe::error for another dtype).
  /// @return data<float>()
  [[nodiscard]] const float* data() const { return data<float>(); }
  /// @brief The elements of an f32 tensor as a span (throws ppipe::error for another dtype).
  /// @return values<float>()
  [[nodiscard]] std::span<float> values() { return values<float>(); }
  /// @brief The elements of an f32 tensor as a read-only span (throws ppipe::error for another
  /// dtype).
  /// @return values<float>()
  [[nodiscard]] std::span<const float> values() const { return values<float>(); }
  /// @brief Element i of an f32 tensor (the dtype is asserted in debug builds only; see above).
  /// @param i the element's row-major index, below size() (not checked)
  /// @return a reference to it, valid while the tensor lives and keeps its storage
  [[nodiscard]] float& operator[](std::size_t i) {
    assert(dtype() == ppipe::dtype::f32);
    return reinterpret_cast<float*>(byte_data())[i];
  }
  /// @brief Element i of an f32 tensor, by value (the dtype is asserted in debug builds only).
  /// @param i the element's row-major index, below size() (not checked)
  /// @return its value
  [[nodiscard]] float operator[](std::size_t i) const {
    assert(dtype() == ppipe::dtype::f32);
    return reinterpret_cast<const float*>(byte_data())[i];
  }

  /// @brief Reuses `from` (its capacity) for a zero-filled tensor of shape `s`; what the pool
  /// does to hand out a recycled buffer.
  /// @param s the shape, dtype included; throws ppipe::error (invalid_argument) as
  /// shape::elements() does
  /// @param from storage from release(), of any size (it grows or shrinks to fit); the tensor
  /// takes it over
  /// @return the tensor, every byte zero
  static host_tensor adopt(ppipe::shape s, storage&& from) {
    host_tensor t = reuse(std::move(s), std::move(from));
    if (t.bytes() != 0) std::memset(t.byte_data(), 0, t.bytes());
    return t;
  }
  /// @brief Reuses storage for a tensor of shape `s` without zeroing the bytes it holds: for a
  /// buffer about to be overwritten whole (a receive). Bytes it lacks are added as zeros.
  /// @param s the shape, dtype included; throws ppipe::error (invalid_argument) as
  /// shape::elements() does
  /// @param from storage from release(), of any size (it grows or shrinks to fit); the tensor
  /// takes it over
  /// @return the tensor, its elements whatever bytes `from` held
  static host_tensor reuse(ppipe::shape s, storage&& from) {
    host_tensor t;
    t.shape_ = std::move(s);
    t.elements_ = t.shape_.elements();
    t.data_ = std::move(from);
    t.data_.resize(detail::blocks_for(t.bytes()));
    return t;
  }
  /// @brief Gives the storage back (for the pool); the tensor is empty afterwards.
  /// @return the storage, which the caller now owns; pass it to adopt() or reuse()
  storage release() && {
    shape_ = {};
    elements_ = 0;
    return std::move(data_);
  }

  /// @brief Same shape (dtype included) and equal elements, compared as values of the dtype (so
  /// for floats -0 == +0 and NaN != NaN, as the float tensor compared before dtypes).
  friend bool operator==(const host_tensor& a, const host_tensor& b) {
    if (!(a.shape_ == b.shape_)) return false;
    return visit_dtype(a.dtype(), [&]<class T>(std::type_identity<T>) {
      const T* x = reinterpret_cast<const T*>(a.byte_data());
      const T* y = reinterpret_cast<const T*>(b.byte_data());
      for (std::size_t i = 0; i < a.elements_; ++i) {
        if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>) {
          if (!(static_cast<float>(x[i]) == static_cast<float>(y[i]))) return false;
        } else {
          if (!(x[i] == y[i])) return false;
        }
      }
      return true;
    });
  }

 private:
  ppipe::shape shape_;
  std::size_t elements_ = 0;
  storage data_;  // bytes() bytes used; the rest of the last block is padding
};

/// @brief What one layer reads or writes, and what crosses a stage boundary: one or more tensors,
/// each of its own shape.
template <class Tensor>
using basic_payload = std::vector<Tensor>;

/// @brief A payload of host tensors.
using payload = basic_payload<host_tensor>;

/// @brief The shapes of a payload's tensors.
/// @tparam Tensor the tensor type (a tensor_like)
/// @param p the payload
/// @return one shape per tensor, in the payload's order
template <class Tensor>
std::vector<shape> shapes_of(const basic_payload<Tensor>& p) {
  std::vector<shape> out;
  out.reserve(p.size());
  for (const Tensor& t : p) out.push_back(t.shape());
  return out;
}

/// @brief Whether a payload's tensors have exactly the shapes `want` (without building a list).
/// @tparam Tensor the tensor type (a tensor_like)
/// @param p the payload
/// @param want the expected shapes, dtypes included, in order
/// @return true when the counts match and each tensor's shape equals its entry of `want`
template <class Tensor>
bool has_shapes(const basic_payload<Tensor>& p, const std::vector<shape>& want) {
  if (p.size() != want.size()) return false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (!(p[i].shape() == want[i])) return false;
  }
  return true;
}

/// @brief Whether two payloads have tensors of the same shapes, one for one.
/// @tparam Tensor the tensor type (a tensor_like)
/// @param p the payload
/// @param like the payload to compare shapes with; its elements are not read
/// @return true when the counts match and tensor i of each has the same shape, dtype included
template <class Tensor>
bool has_shapes(const basic_payload<Tensor>& p, const basic_payload<Tensor>& like) {
  if (p.size() != like.size()) return false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (!(p[i].shape() == like[i].shape())) return false;
  }
  return true;
}

/// @brief The bytes a payload holds.
/// @tparam Tensor the tensor type (a tensor_like)
/// @param p the payload
/// @return the sum of its tensors' bytes()
template <class Tensor>
std::size_t bytes_of(const basic_payload<Tensor>& p) {
  std::size_t n = 0;
  for (const Tensor& t : p) n += t.bytes();
  return n;
}

/// @brief Rows `[first, first + rows)` of dimension 0 of every tensor in `batch` (any dtype).
/// @param batch the tensors to slice; each needs at least `first + rows` rows (a scalar has none)
/// @param first the first row, >= 0
/// @param rows how many rows, >= 0
/// @return a copy of those rows of each tensor, in order; a range outside a tensor throws
/// ppipe::error (invalid_argument) naming its shape
inline payload slice_rows(const payload& batch, std::int64_t first, std::int64_t rows) {
  payload out;
  out.reserve(batch.size());
  for (const host_tensor& t : batch) {
    const std::int64_t total = t.shape().rank() ? t.shape()[0] : 0;
    if (first < 0 || rows < 0 || first + rows > total) {
      detail::fail(errc::invalid_argument, "rows ", first, "..", first + rows, " are outside a tensor of shape ",
                   to_string(t.shape()), "; slice within its ", total, " rows");
    }
    const std::size_t row = total ? t.bytes() / static_cast<std::size_t>(total) : 0;
    host_tensor part = host_tensor::reuse(t.shape().with_batch(rows), {});
    if (part.bytes() != 0) {
      std::memcpy(part.byte_data(), t.byte_data() + static_cast<std::size_t>(first) * row, part.bytes());
    }
    out.push_back(std::move(part));
  }
  return out;
}

/// @brief Stacks `parts` along dimension 0, tensor by tensor (any dtype); every part must have the
/// same number of tensors with the same shapes (and dtypes) apart from dimension 0.
/// @param parts the payloads, in the order their rows are stacked
/// @return one tensor per position, holding the rows of every part in turn; an empty payload for no
/// parts. Parts that do not match (or a scalar tensor) throw ppipe::error (invalid_argument)
inline payload concat_rows(const std::vector<payload>& parts) {
  payload out;
  if (parts.empty()) return out;
  for (std::size_t k = 0; k < parts.front().size(); ++k) {
    std::int64_t rows = 0;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].size() != parts.front().size() || parts[i][k].shape().rank() == 0 ||
          parts[i][k].shape().with_batch(0) != parts.front()[k].shape().with_batch(0)) {
        detail::fail(errc::invalid_argument, "cannot stack microbatch ", i, "'s tensors (",
                     to_string(shapes_of(parts[i])), ") under microbatch 0's (",
                     to_string(shapes_of(parts.front())), "); every part needs the same shapes after dimension 0");
      }
      rows += parts[i][k].shape()[0];
    }
    host_tensor whole = host_tensor::reuse(parts.front()[k].shape().with_batch(rows), {});
    std::byte* next = whole.byte_data();
    for (const payload& p : parts) {
      if (p[k].bytes() == 0) continue;
      std::memcpy(next, p[k].byte_data(), p[k].bytes());
      next += p[k].bytes();
    }
    out.push_back(std::move(whole));
  }
  return out;
}

/// @brief What ppipe needs of a backend's tensor type: its shape (dtype included), its size in
/// bytes, and a zero-filled tensor made from a shape. Moving bytes in stream order is the device's
/// business (stream_device's copy_async and zero_async).
template <class T>
concept tensor_like = std::movable<T> && requires(const T& t, const shape& s) {
  { t.shape() } -> std::convertible_to<shape>;
  { t.bytes() } -> std::convertible_to<std::size_t>;
  T(s);
};

/// @brief A tensor type whose payloads a pipeline can cut into microbatches and stack again:
/// `slice_rows(payload, first, rows)` and `concat_rows(parts)`, found next to the tensor type (as
/// host_tensor's are above), so a backend supplies its own.
template <class T>
concept batch_tensor = tensor_like<T> && requires(const basic_payload<T>& p, const std::vector<basic_payload<T>>& parts,
                                                  std::int64_t row) {
  { slice_rows(p, row, row) } -> std::same_as<basic_payload<T>>;
  { concat_rows(parts) } -> std::same_as<basic_payload<T>>;
};

static_assert(batch_tensor<host_tensor>);

}  // namespace ppipe
