#pragma once
/// @file
/// @brief Plain byte buffers: a writer and a reader of trivially copyable values, and payloads
/// turned into bytes and back (what a distributed run broadcasts as its results).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::detail {

/// memcpy, with copies of at most 16 bytes (a dimension, an 8-byte payload) done inline: a call
/// into the C library costs more than such a copy, and a header is written and read per message.
inline void copy_bytes(void* to, const void* from, std::size_t n) {
  auto* d = static_cast<std::byte*>(to);
  const auto* s = static_cast<const std::byte*>(from);
  if (n > 16) {
    std::memcpy(d, s, n);
  } else if (n >= 8) {  // two 8-byte copies that may overlap
    std::memcpy(d, s, 8);
    std::memcpy(d + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(d, s, 4);
    std::memcpy(d + n - 4, s + n - 4, 4);
  } else {
    for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
  }
}

/// Appends trivially copyable values to a byte buffer (native byte order: every process of a job
/// runs the same build).
class byte_writer {
 public:
  explicit byte_writer(std::vector<std::byte>& out) : out_(&out) {}
  template <class T>
    requires std::is_trivially_copyable_v<T>
  void put(const T& value) {
    raw(&value, sizeof(T));
  }
  void raw(const void* data, std::size_t n) {
    if (n == 0) return;
    const std::size_t at = out_->size();
    out_->resize(at + n);
    std::memcpy(out_->data() + at, data, n);
  }
  void text(std::string_view s) {
    put(static_cast<std::uint64_t>(s.size()));
    raw(s.data(), s.size());
  }

 private:
  std::vector<std::byte>* out_;
};

/// Writes trivially copyable values into memory already sized for them: what byte_writer does,
/// without growing a vector for every value (a payload header is written once per message).
class byte_cursor {
 public:
  byte_cursor(std::byte* at, std::size_t size) : at_(at), left_(size) {}
  template <class T>
    requires std::is_trivially_copyable_v<T>
  void put(const T& value) {
    room(sizeof(T));
    std::memcpy(at_, &value, sizeof(T));
    at_ += sizeof(T);
    left_ -= sizeof(T);
  }
  void raw(const void* data, std::size_t n) {
    room(n);
    copy_bytes(at_, data, n);
    at_ += n;
    left_ -= n;
  }
  [[nodiscard]] std::size_t left() const noexcept { return left_; }

 private:
  void room(std::size_t n) const {
    if (n > left_) fail(errc::backend, "ppipe sized a message ", n - left_, " bytes too small (a bug in ppipe)");
  }
  std::byte* at_;
  std::size_t left_;
};

/// Reads what byte_writer wrote; a read past the end throws ppipe::error naming `what`.
class byte_reader {
 public:
  byte_reader(const std::byte* data, std::size_t size, const char* what) : data_(data), size_(size), what_(what) {}
  template <class T>
    requires std::is_trivially_copyable_v<T>
  T get() {
    need(sizeof(T));
    T value;
    std::memcpy(&value, data_ + at_, sizeof(T));
    at_ += sizeof(T);
    return value;
  }
  void raw(void* into, std::size_t n) {
    need(n);
    copy_bytes(into, data_ + at_, n);
    at_ += n;
  }
  std::string text() {
    const auto n = get<std::uint64_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(data_ + at_), static_cast<std::size_t>(n));
    at_ += static_cast<std::size_t>(n);
    return s;
  }
  [[nodiscard]] std::size_t left() const noexcept { return size_ - at_; }

 private:
  void need(std::uint64_t n) const {
    if (n > size_ - at_) {
      fail(errc::backend, "a ", what_, " message of ", size_, " bytes ends after ", at_,
                          " bytes where ", n, " more were expected; every process of the job must run the same "
                          "build of the program");
    }
  }
  const std::byte* data_;
  std::size_t size_;
  std::size_t at_ = 0;
  const char* what_;
};

/// Most tensors in a payload, and most dimensions per tensor, that travel between processes (a
/// sanity bound on what a receiver allocates from a message).
inline constexpr std::uint32_t max_payload_tensors = 1024;
inline constexpr std::uint32_t max_tensor_dims = 16;

/// The bytes write_shapes() writes for `p`.
inline std::size_t shapes_bytes(const payload& p) {
  std::size_t n = sizeof(std::uint32_t);
  for (const host_tensor& t : p) n += sizeof(std::uint32_t) + sizeof(dtype) + t.shape().rank() * sizeof(std::int64_t);
  return n;
}

/// Writes a payload's shapes: its tensor count, then per tensor its rank, its dtype and its
/// dimensions (through a byte_writer or a byte_cursor).
template <class Writer>
void write_shapes(Writer& w, const payload& p) {
  if (p.size() > max_payload_tensors) {
    fail(errc::invalid_argument, "a payload of ", p.size(), " tensors cannot go to another process; ppipe sends at "
         "most ", max_payload_tensors, " tensors per payload: concatenate some of them");
  }
  w.put(static_cast<std::uint32_t>(p.size()));
  for (const host_tensor& t : p) {
    const auto& dims = t.shape().dims();
    if (dims.size() > max_tensor_dims) {
      fail(errc::invalid_argument, "a tensor of shape ", to_string(t.shape()), " has ", dims.size(),
           " dimensions; ppipe sends tensors of at most ", max_tensor_dims, " to another process: reshape it");
    }
    w.put(static_cast<std::uint32_t>(dims.size()));
    w.put(t.dtype());
    for (const std::int64_t d : dims) w.put(d);
  }
}

/// Writes a payload's values, tensor after tensor.
template <class Writer>
void write_values(Writer& w, const payload& p) {
  for (const host_tensor& t : p) w.raw(t.byte_data(), t.bytes());
}

/// Reads what write_shapes() wrote, checking every count against the bounds.
inline std::vector<shape> read_shapes(byte_reader& r) {
  const auto n = r.get<std::uint32_t>();
  if (n > max_payload_tensors) fail(errc::backend, "a message announces ", n, " tensors, more than ", max_payload_tensors);
  std::vector<shape> out;
  out.reserve(n);
  for (std::uint32_t k = 0; k < n; ++k) {
    const auto rank = r.get<std::uint32_t>();
    if (rank > max_tensor_dims) fail(errc::backend, "a message announces a tensor of ", rank, " dimensions");
    const auto type = r.get<dtype>();
    if (!is_valid(type)) fail(errc::backend, "a message announces a tensor of dtype value ", static_cast<int>(type));
    std::vector<std::int64_t> dims(rank);
    for (std::int64_t& d : dims) {
      d = r.get<std::int64_t>();
      if (d < 0) fail(errc::backend, "a message announces a dimension of ", d);
    }
    out.emplace_back(std::move(dims), type);
  }
  return out;
}

/// Reads shapes as read_shapes() does while comparing them with `p`'s tensors, allocating nothing;
/// false at the first difference (the reader is then left inside the shapes).
inline bool read_same_shapes(byte_reader& r, const payload& p) {
  if (r.get<std::uint32_t>() != p.size()) return false;
  for (const host_tensor& t : p) {
    const auto& dims = t.shape().dims();
    if (r.get<std::uint32_t>() != dims.size()) return false;
    if (r.get<dtype>() != t.dtype()) return false;
    for (const std::int64_t d : dims) {
      if (r.get<std::int64_t>() != d) return false;
    }
  }
  return true;
}

/// The bytes of the values of tensors of these shapes.
inline std::size_t value_bytes(const std::vector<shape>& shapes) {
  std::size_t n = 0;
  for (const shape& s : shapes) n += s.bytes();
  return n;
}

/// Zero-filled tensors of these shapes.
inline payload zero_payload(const std::vector<shape>& shapes) {
  payload out;
  out.reserve(shapes.size());
  for (const shape& s : shapes) out.emplace_back(s);
  return out;
}

/// Reads what write_values() wrote into tensors already in their shapes.
inline void read_values(byte_reader& r, payload& p) {
  for (host_tensor& t : p) r.raw(t.byte_data(), t.bytes());
}

/// Every microbatch's payload, as bytes: the count, then per payload its shapes and values.
inline std::vector<std::byte> serialize_payloads(const std::vector<payload>& parts) {
  std::vector<std::byte> out;
  byte_writer w(out);
  w.put(static_cast<std::uint64_t>(parts.size()));
  for (const payload& p : parts) {
    write_shapes(w, p);
    write_values(w, p);
  }
  return out;
}

/// The payloads serialize_payloads() wrote.
template <class Tensor>
std::vector<basic_payload<Tensor>> deserialize_payloads(const std::vector<std::byte>& bytes) {
  static_assert(std::is_same_v<Tensor, host_tensor>, "only host payloads travel as bytes");
  byte_reader in(bytes.data(), bytes.size(), "payload list");
  std::vector<payload> out;
  const auto n = in.get<std::uint64_t>();
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::vector<shape> shapes = read_shapes(in);
    if (value_bytes(shapes) > in.left()) {
      fail(errc::backend, "a payload list announces tensors of shapes ", to_string(shapes), " but has ", in.left(),
           " bytes left");
    }
    payload p = zero_payload(shapes);
    read_values(in, p);
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace ppipe::detail
