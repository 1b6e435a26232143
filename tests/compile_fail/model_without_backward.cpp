// Must not compile: train_step on a model with no backward. The error must say what to add.
#include <ppipe/ppipe.hpp>

struct forward_only_model {
  int num_layers() const { return 2; }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload&, ppipe::payload&) {}
};

int main() {
  forward_only_model m;
  ppipe::pipeline<forward_only_model> pipe(m, ppipe::pipeline_options{});
  ppipe::payload x;
  pipe.infer(x);          // fine: inference needs no backward
  pipe.train_step(x, x);  // the error
}
