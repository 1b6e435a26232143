#pragma once
// The toy model and loss over device tensors, for the CPU model of a GPU backend (stages whose
// tensors live in the device's stream-ordered memory). The CPU model's device memory is host
// memory, so each call copies its payloads into host tensors, runs the host math of Inner (or of
// the host loss), and copies what it wrote back: the numbers are the host model's, bit for bit.
// Called with host payloads (the unpipelined reference), Inner runs as it is.

#include <cstring>
#include <utility>

#include "ppipe/device/cpu_device.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace toy {

using device_payload = ppipe::basic_payload<ppipe::device_tensor>;

// The bytes of device tensors, in new host tensors.
inline ppipe::payload to_host(const device_payload& p) {
  ppipe::payload out;
  out.reserve(p.size());
  for (const ppipe::device_tensor& t : p) {
    out.emplace_back(t.shape());
    std::memcpy(out.back().byte_data(), t.byte_data(), t.bytes());
  }
  return out;
}

// What a host call wrote, back into the device tensors. A tensor the call replaced by one of
// another shape (a fault the tests inject) keeps its address under the new shape, so that the
// stage sees a layer that did not write what it was handed.
inline void write_back(const ppipe::payload& host, device_payload& into) {
  for (std::size_t k = 0; k < host.size() && k < into.size(); ++k) {
    if (host[k].shape() != into[k].shape()) {
      into[k] = ppipe::device_tensor(host[k].shape(), into[k].byte_data());
      continue;
    }
    std::memcpy(into[k].byte_data(), host[k].byte_data(), host[k].bytes());
  }
}

template <class Inner>
class on_device : public Inner {
 public:
  using Inner::Inner;
  using Inner::backward;
  using Inner::backward_input;
  using Inner::backward_weight;
  using Inner::forward;

  template <class Device>
  void forward(int layer, const ppipe::basic_layer_context<Device>& ctx, const device_payload& in, device_payload& out) {
    const ppipe::layer_context base = ctx;
    ppipe::payload host_out = to_host(out);
    Inner::forward(layer, base, to_host(in), host_out);
    write_back(host_out, out);
  }

  template <class Device>
  void backward(int layer, const ppipe::basic_layer_context<Device>& ctx, const device_payload& in,
                const device_payload& out, const device_payload& g, device_payload& gin) {
    const ppipe::layer_context base = ctx;
    ppipe::payload host_gin = to_host(gin);
    Inner::backward(layer, base, to_host(in), to_host(out), to_host(g), host_gin);
    write_back(host_gin, gin);
  }

  template <class Device>
  void backward_input(int layer, const ppipe::basic_layer_context<Device>& ctx, const device_payload& in,
                      const device_payload& out, const device_payload& g, device_payload& gin) {
    const ppipe::layer_context base = ctx;
    ppipe::payload host_gin = to_host(gin);
    Inner::backward_input(layer, base, to_host(in), to_host(out), to_host(g), host_gin);
    write_back(host_gin, gin);
  }

  template <class Device>
  void backward_weight(int layer, const ppipe::basic_layer_context<Device>& ctx, const device_payload& in,
                       const device_payload& out, const device_payload& g) {
    const ppipe::layer_context base = ctx;
    Inner::backward_weight(layer, base, to_host(in), to_host(out), to_host(g));
  }
};

// A host loss as a device loss: the value is written into the f64 the pipeline gives.
inline ppipe::device_loss_function<ppipe::device_tensor, ppipe::basic_layer_context<ppipe::cpu_stream_device>>
device_loss(ppipe::loss_function<> host) {
  if (!host) return {};
  return [host = std::move(host)](const auto&, const device_payload& y, const device_payload& t, device_payload& g,
                                  double scale, const ppipe::device_tensor& value) {
    ppipe::payload host_g = to_host(g);
    const double v = host(to_host(y), to_host(t), host_g, scale);
    write_back(host_g, g);
    std::memcpy(value.byte_data(), &v, sizeof v);
  };
}

// The same loss for layers that enqueue their own work: called on the rank's host thread, it
// enqueues the computation on the stage's stream, keeping the device tensors (not the payload
// objects, which the pipeline may drop once the call returns), as a kernel launch would.
inline ppipe::device_loss_function<ppipe::device_tensor, ppipe::basic_layer_context<ppipe::cpu_stream_device>>
enqueued_device_loss(ppipe::loss_function<> host) {
  if (!host) return {};
  auto now = device_loss(std::move(host));
  return [now](const ppipe::basic_layer_context<ppipe::cpu_stream_device>& ctx, const device_payload& y,
               const device_payload& t, device_payload& g, double scale, const ppipe::device_tensor& value) {
    ctx.device->device->enqueue(
        ctx.device->stream,
        [now, ctx, y, t, g, scale, value]() mutable { now(ctx, y, t, g, scale, value); },
        ppipe::detail::concat("loss kernel, microbatch ", ctx.microbatch));
  };
}

}  // namespace toy
