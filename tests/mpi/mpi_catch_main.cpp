// Catch2's runner for the MPI tests: every process runs every test case between MPI_Init and
// MPI_Finalize, and the job fails when any process's run failed (a process that passes while
// another fails must not make the job look green).
#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include <ppipe/backend/mpi/session.hpp>

int main(int argc, char** argv) {
  // Serialized: the MPI model of NCCL calls MPI from each rank's transfer stream.
  const ppipe::mpi::session mpi(&argc, &argv, MPI_THREAD_SERIALIZED);
  const int failed = Catch::Session().run(argc, argv);
  int worst = 0;
  MPI_Allreduce(&failed, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst == 0 ? 0 : 1;
}
