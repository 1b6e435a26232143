// The backend contract (backend_contract.hpp) on the backends that run in one process: numerics,
// memory, failures and timeouts, each body instantiated once per backend fixture below.

#include <utility>

#include "ppipe/runtime/pipeline.hpp"

namespace contract {

/// Rank threads of this process over the in-process transport: any p.
struct host_fixture {
  static constexpr const char* name = "host";
  static bool can_run(int p) { return p >= 1; }
  static bool on_any_process(bool b) { return b; }
  template <class Schedule, class Model>
  static ppipe::pipeline<Model, Schedule> make(Model& model, ppipe::pipeline_options o, ppipe::loss_function<> loss = {},
                                               ppipe::optimizer_hook optimizer = {}) {
    return ppipe::pipeline<Model, Schedule>(model, std::move(o), std::move(loss), std::move(optimizer));
  }
};

}  // namespace contract

// One line per backend: a new backend's fixture goes here.
#define PPIPE_CONTRACT_BACKENDS contract::host_fixture

#include "backend_contract.hpp"
