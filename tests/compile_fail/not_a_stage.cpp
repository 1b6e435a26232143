// Must not compile: the executor is given a stage type without a backward.
#include <ppipe/ppipe.hpp>

struct half_a_stage {
  int index() const { return 0; }
  int first_layer() const { return 0; }
  int end_layer() const { return 1; }
  void prepare(int) {}
  const ppipe::payload& forward(int, ppipe::payload p) { return kept = std::move(p); }
  const ppipe::payload& output(int) { return kept; }
  ppipe::payload infer(int, ppipe::payload p) { return p; }
  ppipe::payload kept;
};

int main() {
  ppipe::host_transport transport(1);
  std::vector<half_a_stage> stages(1);
  ppipe::executor<half_a_stage, ppipe::host_transport> run(transport, stages);
}
