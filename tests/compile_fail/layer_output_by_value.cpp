// Must not compile, with one message: a layer whose forward takes its output by value compiles as
// C++ and would never change the loss (it writes into a copy).
#include <ppipe/ppipe.hpp>

struct scale {
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const { return in; }
  void forward(const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload out) { out = in; }
  void backward(const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&, const ppipe::payload&,
                ppipe::payload&) {}
};

int main() {
  ppipe::layer_stack model{scale{}, scale{}};
  ppipe::pipeline<decltype(model)> pipe(model, ppipe::pipeline_options{});
}
