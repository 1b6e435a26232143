#pragma once
/// @file
/// @brief tensor_view: a typed, non-owning view of elements of any dtype; what a model hands
/// ppipe for each of its parameters and gradients.

#include <cstddef>
#include <span>
#include <type_traits>

#include "ppipe/tensor/dtype.hpp"

namespace ppipe {

/// @brief Elements of one dtype somewhere in host memory, not owned: a parameter or a gradient
/// as a model hands it to ppipe through for_each_parameter. Built from a std::span of any
/// tensor_element type (implicitly, so `f(std::span<float>(w), std::span<float>(g))` still
/// works); read back with as<T>(), which checks the dtype.
struct tensor_view {
  ppipe::dtype type = ppipe::dtype::f32;  ///< the element type
  void* data = nullptr;                   ///< the first element
  std::size_t elements = 0;               ///< how many

  /// @brief An empty view: no f32 elements at a null address.
  constexpr tensor_view() = default;
  /// @brief A view of `elements` elements of `type` at `data`.
  /// @param type_ the element type (not checked against the enumerators)
  /// @param data_ the first element, not owned; null only when `elements_` is 0
  /// @param elements_ how many elements the view spans
  constexpr tensor_view(ppipe::dtype type_, void* data_, std::size_t elements_) noexcept
      : type(type_), data(data_), elements(elements_) {}
  /// @brief A view of the elements of `s`, of T's dtype.
  /// @tparam T the element type, not const (a view may be written through)
  /// @param s the elements; they must outlive every use of the view
  template <tensor_element T>
    requires(!std::is_const_v<T>)
  constexpr tensor_view(std::span<T> s) noexcept  // NOLINT(google-explicit-constructor): a span is a view
      : type(dtype_of_v<T>), data(s.data()), elements(s.size()) {}

  /// @brief The elements as T.
  /// @tparam T the element type of `type` (float for f32, bfloat16 for bf16, ...)
  /// @return a span of `elements` T; throws ppipe::error (invalid_argument) naming both dtypes
  /// when T is not `type`'s element type
  template <tensor_element T>
  [[nodiscard]] std::span<T> as() const {
    detail::check_dtype(type, dtype_of_v<T>, "the tensor view");
    return {static_cast<T*>(data), elements};
  }
  /// @brief elements × size_of(type).
  /// @return the bytes the viewed elements occupy
  [[nodiscard]] constexpr std::size_t bytes() const noexcept { return elements * size_of(type); }
};

}  // namespace ppipe
