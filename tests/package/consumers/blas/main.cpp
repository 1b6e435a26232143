// The layer kit through ppipe::blas: its linear layer multiplies with OpenBLAS, on one thread.
#include <cstdio>

#include <ppipe/layers/layers.hpp>

static_assert(ppipe::layers::uses_cblas, "ppipe::blas defines PPIPE_WITH_CBLAS=1");

int main() {
  // y = x W^T + b with W = [[1, 2], [3, 4], [5, 6]], b = [1, 1, 1] and x = [1, 1]: [4, 8, 12].
  ppipe::layers::linear layer(2, 3, 1);
  const float w[] = {1, 2, 3, 4, 5, 6};
  for (int k = 0; k < 6; ++k) layer.weight()[static_cast<std::size_t>(k)] = w[k];
  for (float& b : layer.bias()) b = 1;
  const ppipe::payload x{ppipe::host_tensor(ppipe::shape{1, 2}, {1, 1})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{1, 3})};
  layer.forward(ppipe::layer_context{}, x, y);
  if (y[0][0] != 4 || y[0][1] != 8 || y[0][2] != 12 || openblas_get_num_threads() != 1) {
    std::printf("unexpected: y = [%g, %g, %g], %d OpenBLAS threads\n", static_cast<double>(y[0][0]),
                static_cast<double>(y[0][1]), static_cast<double>(y[0][2]), openblas_get_num_threads());
    return 1;
  }
  std::printf("consumer ok: OpenBLAS %s, y = [4, 8, 12]\n", openblas_get_corename());
  return 0;
}
