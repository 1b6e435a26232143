// Must not compile: a zero-bubble schedule tag (its actions split the backward into I and W) with a
// model that has only a full backward. The error must say what to add, or which schedule to use.
#include <ppipe/ppipe.hpp>

struct full_backward_model {
  int num_layers() const { return 2; }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload&, ppipe::payload&) {}
  void backward(int, const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&,
                const ppipe::payload&, ppipe::payload&) {}
};

int main() {
  full_backward_model m;
  ppipe::pipeline<full_backward_model, ppipe::schedules::zb_h1> pipe(m, ppipe::pipeline_options{});  // the error
}
