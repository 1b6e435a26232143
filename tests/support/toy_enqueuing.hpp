#pragma once
// A model whose layers enqueue their own work on the stage's compute stream and return at once,
// as GPU layers launch kernels: toy::enqueuing<Inner> runs Inner's calls as host work on
// ctx.device->stream. On the CPU-stream backend it takes the path a CUDA stage takes (the stage
// calls layers on the rank's host thread, and their failures surface as the device's error).
// Called with a plain layer_context (the unpipelined reference), it runs the call at once.

#include <string>

#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace toy {

template <class Inner>
class enqueuing : public Inner {
 public:
  static constexpr bool enqueues_work = true;
  using Inner::Inner;

  void forward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, ppipe::payload& out) {
    Inner::forward(layer, ctx, in, out);
  }
  template <class Device>
  void forward(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::payload& in, ppipe::payload& out) {
    const ppipe::layer_context base = ctx;
    on_stream(ctx, "forward", layer, [this, layer, base, in = &in, out = &out] { Inner::forward(layer, base, *in, *out); });
  }

  void backward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload& out,
                const ppipe::payload& g, ppipe::payload& gin) {
    Inner::backward(layer, ctx, in, out, g, gin);
  }
  template <class Device>
  void backward(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::payload& in,
                const ppipe::payload& out, const ppipe::payload& g, ppipe::payload& gin) {
    const ppipe::layer_context base = ctx;
    on_stream(ctx, "backward", layer, [this, layer, base, in = &in, out = &out, g = &g, gin = &gin] {
      Inner::backward(layer, base, *in, *out, *g, *gin);
    });
  }

 private:
  // The payloads live in the stage's boxes, which it keeps until an event after this work.
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
