// The one-stage MLP step of layers_bench built with the layer kit's loops: this translation unit is
// compiled without PPIPE_WITH_CBLAS, so its ppipe::layers classes are the loop_kernels ones.
#include "support/mlp_step.hpp"

static_assert(!ppipe::layers::uses_cblas,
              "layers_bench_loops.cpp must be built without ppipe::blas");

std::unique_ptr<bench::mlp_step> bench::make_mlp_step_loops() {
  return std::make_unique<mlp_step_on_one_stage>();
}
