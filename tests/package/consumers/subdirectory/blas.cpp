// The layer kit through the ppipe::blas target of a subproject build: it compiles against
// OpenBLAS's cblas.h and links libopenblas.
#include <ppipe/layers/layers.hpp>

static_assert(ppipe::layers::uses_cblas, "ppipe::blas defines PPIPE_WITH_CBLAS=1");

int main() { return openblas_get_num_threads() >= 1 ? 0 : 1; }
