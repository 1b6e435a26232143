// Must not compile, with one message: a layer whose backward takes grad_in by const reference
// cannot hand the input gradient to the layer before it.
#include <ppipe/ppipe.hpp>

struct scale {
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const { return in; }
  void forward(const ppipe::layer_context&, const ppipe::payload&, ppipe::payload&) {}
  void backward(const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&, const ppipe::payload&,
                const ppipe::payload&) {}
};

double loss(const ppipe::payload&, const ppipe::payload&, ppipe::payload&, double) { return 0.0; }

int main() {
  ppipe::layer_stack model{scale{}, scale{}};
  ppipe::pipeline<decltype(model)> pipe(model, ppipe::pipeline_options{}, loss);
  (void)pipe.train_step({}, {});
}
