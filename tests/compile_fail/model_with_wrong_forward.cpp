// Must not compile: forward takes the wrong arguments. The error must show the expected signature.
#include <ppipe/ppipe.hpp>

struct wrong_forward {
  int num_layers() const { return 2; }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::payload&, ppipe::payload&) {}  // no layer_context
};

int main() {
  wrong_forward m;
  ppipe::pipeline<wrong_forward> pipe(m, ppipe::pipeline_options{});
}
