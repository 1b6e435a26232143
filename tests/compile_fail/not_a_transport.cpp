// Must not compile: the backend's transport type does not satisfy ppipe::transport.
#include <ppipe/ppipe.hpp>

struct model {
  int num_layers() const { return 2; }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload&, ppipe::payload&) {}
};
struct not_a_transport {
  using tensor_type = ppipe::host_tensor;
};
struct backend_with_a_bad_transport : ppipe::host_backend {
  using transport_type = not_a_transport;
};

int main() {
  model m;
  ppipe::pipeline<model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, backend_with_a_bad_transport> pipe(
      m, ppipe::pipeline_options{});
}
