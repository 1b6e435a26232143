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
#include "ppipe/runtime/tensor.hpp"

namespace ppipe::detail {

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

/// Reads what byte_writer wrote; a read past the end throws ppipe::error naming `what`.
class byte_reader {
 public:
  byte_reader(const std::byte* data, std::size_t size, const char* what) : data_(data), size_(size), what_(what) {}
  template <class T>
    requires std::is_trivially_copyable_v<T>
  T get() {
    T value{};
    raw(&value, sizeof(T));
    return value;
  }
  void raw(void* into, std::size_t n) {
    need(n);
    if (n != 0) std::memcpy(into, data_ + at_, n);
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

/// Every microbatch's payload, as bytes: the count, then per payload its tensors' dimensions and
/// values.
inline std::vector<std::byte> serialize_payloads(const std::vector<payload>& parts) {
  std::vector<std::byte> out;
  byte_writer w(out);
  w.put(static_cast<std::uint64_t>(parts.size()));
  for (const payload& p : parts) {
    w.put(static_cast<std::uint64_t>(p.size()));
    for (const host_tensor& t : p) {
      w.put(static_cast<std::uint64_t>(t.shape().rank()));
      for (const std::int64_t d : t.shape().dims()) w.put(d);
      w.raw(t.data(), t.bytes());
    }
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
    payload p;
    const auto tensors = in.get<std::uint64_t>();
    for (std::uint64_t k = 0; k < tensors; ++k) {
      const auto rank = in.get<std::uint64_t>();
      if (rank > 64) fail(errc::backend, "a payload list announces a tensor of ", rank, " dimensions");
      std::vector<std::int64_t> dims(static_cast<std::size_t>(rank));
      for (std::int64_t& d : dims) {
        d = in.get<std::int64_t>();
        if (d < 0) fail(errc::backend, "a payload list announces a dimension of ", d);
      }
      shape sh(std::move(dims));
      if (sh.elements() * sizeof(float) > in.left()) {
        fail(errc::backend, "a payload list announces a tensor of shape ", to_string(sh), " but has ", in.left(),
             " bytes left");
      }
      host_tensor t(std::move(sh));
      in.raw(t.data(), t.bytes());
      p.push_back(std::move(t));
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace ppipe::detail
