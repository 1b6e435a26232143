#pragma once
/// @file
/// @brief A run over a distributed transport: this process runs its one rank on the calling
/// thread, and at the end the processes agree on how the run went and share its results.

#include <cstddef>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/runtime/failure_channel.hpp"
#include "ppipe/runtime/run_context.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/tensor/bytes.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/stream_transport.hpp"

namespace ppipe::detail {

// Broadcasts `bytes` from rank `root` to every process; `what` names them if it times out.
template <class Stage, distributed_transport Transport>
void share(const run_context<Stage, Transport>& ctx, std::vector<std::byte>& bytes, int root, const char* what) {
  if (ctx.transport->broadcast(bytes, root, ctx.deadline()) != wait_status::ready) {
    fail(errc::timeout, "rank ", ctx.transport->rank(), " waited ", ctx.options.timeout.count(), " ms for rank ", root,
         " to broadcast ", what);
  }
}

/// Runs this process's rank of `s`: `run_actions(at)` runs its actions (and, on a stream device,
/// waits for its streams), `run_hooks(at)` its optimizer hooks. At the end the transport makes
/// every process agree on how the run went, so a failure on any rank is thrown on every rank, and
/// the losses or outputs reach every rank before the optimizer hooks run. What the actions' sends
/// read must outlive this call: conclude() clears every transfer a failure left in flight.
template <class Stage, distributed_transport Transport, class RunActions, class RunHooks>
void run_distributed(run_context<Stage, Transport>& ctx, const schedule& s,
                     typename run_context<Stage, Transport>::data_type& data, RunActions&& run_actions,
                     RunHooks&& run_hooks) {
  using tensor_type = typename run_context<Stage, Transport>::tensor_type;
  const int r = ctx.transport->rank();
  run_position at;
  rank_outcome report;
  bool failed_here = false;
  try {
    run_actions(at);
  } catch (const run_aborted&) {
    report.what = rank_outcome::outcome::aborted;
  } catch (const transfers_aborted&) {  // the transport stopped for another rank's failure
    report.what = rank_outcome::outcome::aborted;
  } catch (...) {
    ctx.failures.report(std::current_exception(), r, at);
  }
  // A failure here, thrown or recorded (a stream's work records its own and the rank then stops).
  if (ctx.failures.first().error) {
    failed_here = true;
    report.what = rank_outcome::outcome::failed;
    try {
      ctx.rethrow_failure(s);
    } catch (const error& e) {
      report.code = e.code();
      report.message = std::string(e.message());
    } catch (const std::exception& e) {
      report.message = e.what();
    }
  }
  const run_verdict verdict = ctx.transport->conclude(report, ctx.deadline());
  if (!verdict.ok) {
    for (Stage& st : *ctx.stages) st.prepare(s.microbatches);
    if (failed_here && verdict.rank == r) ctx.rethrow_failure(s);
    throw error(verdict.code, verdict.message);
  }
  // Every rank learns the results, which the last stage's rank holds.
  const int last = s.place.rank_table()[static_cast<std::size_t>(s.num_stages() - 1)];
  std::vector<std::byte> bytes;
  if (s.mode == schedule_mode::training) {
    bytes.resize(data.losses.size() * sizeof(double));
    if (r == last) std::memcpy(bytes.data(), data.losses.data(), bytes.size());
    share(ctx, bytes, last, "the microbatch losses");
    if (bytes.size() != data.losses.size() * sizeof(double)) {
      fail(errc::backend, "rank ", last, " sent ", bytes.size(), " bytes of losses for ", data.losses.size(),
           " microbatches; every process must make the same calls on the pipeline");
    }
    std::memcpy(data.losses.data(), bytes.data(), bytes.size());
  } else {
    if (r == last) bytes = serialize_payloads(data.outputs);
    share(ctx, bytes, last, "the inference outputs");
    if (r != last) data.outputs = deserialize_payloads<tensor_type>(bytes);
  }
  try {
    run_hooks(at);
  } catch (...) {
    ctx.failures.report(std::current_exception(), r, at);
    ctx.rethrow_failure(s);
  }
}

}  // namespace ppipe::detail
