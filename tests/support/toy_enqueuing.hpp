#pragma once
// A model whose layers enqueue their own work on the stage's compute stream and return at once,
// as GPU layers launch kernels: toy::enqueuing<Inner> runs Inner's calls as host work on
// ctx.device->stream. On the CPU-stream backend it takes the path a CUDA stage takes (the stage
// calls layers on the rank's host thread, and their failures surface as the device's error).
// Called with a plain layer_context (the unpipelined reference), it runs the call at once.

#include <string>
#include <type_traits>
#include <utility>

#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace toy {

// What enqueued work keeps of a payload it was handed. Host payloads stay in the stage's boxes
// until an event after the work, so a pointer will do; device tensors are handles to device
// memory, copied as a kernel launch copies its pointer arguments (the stage may drop the payload
// object once the call returns).
template <class P>
auto keep(P& p) {
  if constexpr (std::is_same_v<std::remove_const_t<P>, ppipe::basic_payload<ppipe::device_tensor>>) {
    return std::remove_const_t<P>(p);
  } else {
    return &p;
  }
}
template <class K>
decltype(auto) use(K& kept) {
  if constexpr (std::is_pointer_v<K>) {
    return *kept;
  } else {
    return (kept);
  }
}

template <class Inner>
class enqueuing : public Inner {
 public:
  static constexpr bool enqueues_work = true;
  using Inner::Inner;

  void forward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, ppipe::payload& out) {
    Inner::forward(layer, ctx, in, out);
  }
  template <class Device, class Tensor>
  void forward(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::basic_payload<Tensor>& in,
               ppipe::basic_payload<Tensor>& out) {
    on_stream(ctx, "forward", layer, [this, layer, ctx, in = keep(in), out = keep(out)]() mutable {
      Inner::forward(layer, ctx, use(in), use(out));
    });
  }

  void backward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload& out,
                const ppipe::payload& g, ppipe::payload& gin) {
    Inner::backward(layer, ctx, in, out, g, gin);
  }
  template <class Device, class Tensor>
  void backward(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::basic_payload<Tensor>& in,
                const ppipe::basic_payload<Tensor>& out, const ppipe::basic_payload<Tensor>& g,
                ppipe::basic_payload<Tensor>& gin) {
    on_stream(ctx, "backward", layer,
              [this, layer, ctx, in = keep(in), out = keep(out), g = keep(g), gin = keep(gin)]() mutable {
                Inner::backward(layer, ctx, use(in), use(out), use(g), use(gin));
              });
  }

  void backward_input(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload& out,
                      const ppipe::payload& g, ppipe::payload& gin) {
    Inner::backward_input(layer, ctx, in, out, g, gin);
  }
  template <class Device, class Tensor>
  void backward_input(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::basic_payload<Tensor>& in,
                      const ppipe::basic_payload<Tensor>& out, const ppipe::basic_payload<Tensor>& g,
                      ppipe::basic_payload<Tensor>& gin) {
    on_stream(ctx, "backward_input", layer,
              [this, layer, ctx, in = keep(in), out = keep(out), g = keep(g), gin = keep(gin)]() mutable {
                Inner::backward_input(layer, ctx, use(in), use(out), use(g), use(gin));
              });
  }

  void backward_weight(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload& out,
                       const ppipe::payload& g) {
    Inner::backward_weight(layer, ctx, in, out, g);
  }
  template <class Device, class Tensor>
  void backward_weight(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::basic_payload<Tensor>& in,
                       const ppipe::basic_payload<Tensor>& out, const ppipe::basic_payload<Tensor>& g) {
    on_stream(ctx, "backward_weight", layer, [this, layer, ctx, in = keep(in), out = keep(out), g = keep(g)]() mutable {
      Inner::backward_weight(layer, ctx, use(in), use(out), use(g));
    });
  }

 private:
  template <class Device, class Work>
  void on_stream(const ppipe::basic_layer_context<Device>& ctx, const char* what, int layer, Work&& work) {
    if (ctx.device == nullptr) {
      work();
      return;
    }
    ctx.device->device->enqueue(ctx.device->stream, std::forward<Work>(work),
                                ppipe::detail::concat(what, " kernel of layer ", layer, ", microbatch ", ctx.microbatch,
                                                      " (stage ", ctx.stage, ")"));
  }
};

}  // namespace toy
