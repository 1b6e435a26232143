// Must not compile, with one message: a model (the index-dispatching Model concept) whose forward
// takes its output by const reference.
#include <ppipe/ppipe.hpp>

struct const_output {
  int num_layers() const { return 2; }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&) {}
};

int main() {
  const_output m;
  ppipe::pipeline<const_output> pipe(m, ppipe::pipeline_options{});
}
