// Must not compile, with one message (not std::function's): the loss lacks grad_output and scale.
#include <ppipe/ppipe.hpp>

#include "../support/toy_model.hpp"

int main() {
  toy::model m(2);
  ppipe::pipeline<toy::model> pipe(m, ppipe::pipeline_options{},
                                   [](const ppipe::payload&, const ppipe::payload&) { return 0.0; });
}
