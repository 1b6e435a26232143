// Must not compile: the model has no num_layers(). The error must say what to add.
#include <ppipe/ppipe.hpp>

struct no_layers {
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload&, ppipe::payload&) {}
};

int main() {
  no_layers m;
  ppipe::pipeline<no_layers> pipe(m, ppipe::pipeline_options{});
}
