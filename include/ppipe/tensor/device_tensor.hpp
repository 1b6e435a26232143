#pragma once
/// @file
/// @brief ppipe::device_tensor: a tensor whose bytes live in a device's memory, named by its shape
/// and address, owned by the buffers of the stage that uses it.

#include <cstddef>
#include <utility>

#include "ppipe/error.hpp"
#include "ppipe/tensor/dtype.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {

/// @brief A tensor in a device's memory: its shape (dtype included) and where its bytes are. It
/// does not own them: a stage's buffers allocate and release them in stream order on the device.
/// The host must not touch the bytes (on a GPU they are not host memory); work enqueued on the
/// device does (kernels and copies, or host work on the CPU model). Copying the tensor copies
/// the address, not the bytes.
class device_tensor {
 public:
  /// @brief An empty tensor: a default shape (rank 0, f32) at a null address; a placeholder only.
  device_tensor() = default;
  /// @brief A view of `data` as a tensor of shape `s`; the bytes are neither copied nor owned.
  /// @param s the shape, dtype included
  /// @param data the first of s.bytes() bytes of device memory (null only when there are none)
  device_tensor(ppipe::shape s, std::byte* data) noexcept : shape_(std::move(s)), data_(data) {}

  /// @brief The tensor's shape, dtype included.
  /// @return a reference valid while the tensor lives and is not assigned to
  [[nodiscard]] const ppipe::shape& shape() const noexcept { return shape_; }
  /// @brief The element type (the shape's).
  /// @return shape().dtype()
  [[nodiscard]] ppipe::dtype dtype() const noexcept { return shape_.dtype(); }
  /// @brief The bytes the tensor spans.
  /// @return shape().bytes()
  [[nodiscard]] std::size_t bytes() const { return shape_.bytes(); }
  /// @brief The address of its first byte, in the device's memory.
  /// @return the address given at construction; the host must not dereference it
  [[nodiscard]] std::byte* byte_data() const noexcept { return data_; }

  /// @brief The address as `T*`, for a kernel's argument; refused when T is not the dtype.
  /// @tparam T the element type (float, bfloat16, std::int32_t, ...)
  /// @return the typed address; throws ppipe::error (invalid_argument) naming both dtypes when T
  /// is not dtype()'s element type
  template <tensor_element T>
  [[nodiscard]] T* data() const {
    if (dtype_of<T>::value != dtype()) {
      detail::fail(errc::invalid_argument, "a device tensor of dtype ", to_string(dtype()), " was read as ",
                   to_string(dtype_of<T>::value), "; ask for the element type of its dtype");
    }
    return reinterpret_cast<T*>(data_);
  }

 private:
  ppipe::shape shape_;
  std::byte* data_ = nullptr;
};

}  // namespace ppipe
