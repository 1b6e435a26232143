// Must not compile, with one message (not std::function's): the optimizer hook takes a stage index.
#include <ppipe/ppipe.hpp>

#include "../support/toy_model.hpp"

int main() {
  toy::model m(2);
  ppipe::pipeline<toy::model> pipe(m, ppipe::pipeline_options{}, toy::loss, [](int stage) { (void)stage; });
}
