// Must not compile, with one message: a loss that takes grad_output by value writes a copy.
#include <ppipe/ppipe.hpp>

#include "../support/toy_model.hpp"

int main() {
  toy::model m(2);
  ppipe::pipeline<toy::model> pipe(m, ppipe::pipeline_options{},
                                   [](const ppipe::payload&, const ppipe::payload&, ppipe::payload, double) { return 0.0; });
}
