// Must not compile, with one message: a layer_stack whose layers disagree on who enqueues their
// work (one launches on the stream like a GPU layer, one computes before it returns) could be
// called neither way by a stage.
#include <ppipe/ppipe.hpp>

struct computes {
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const { return in; }
  void forward(const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) { out = in; }
};

struct launches : computes {
  static constexpr bool enqueues_work = true;
};

int main() {
  ppipe::layer_stack model{computes{}, launches{}};
  return model.num_layers();
}
