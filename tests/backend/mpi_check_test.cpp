// One test case owns MPI's whole lifetime (MPI_Init may run once per process): it checks messages
// before MPI_Init, while MPI runs, and after MPI_Finalize. Run under mpiexec with one rank.
#include <string>

#include <ppipe/mpi.hpp>

#include "catch.hpp"

namespace {

std::string message_of(int code, const char* what) {
  try {
    ppipe::mpi::check(code, what);
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::backend);
    return e.what();
  }
  return "(no exception)";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Finalizes MPI on every path out of the test case, including a failed REQUIRE.
struct mpi_session {
  mpi_session() { MPI_Init(nullptr, nullptr); }
  ~mpi_session() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized == 0) {
      MPI_Finalize();
    }
  }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;
};

}  // namespace

TEST_CASE("mpi::check turns MPI failures into ppipe::error, before, during and after MPI", "[mpi]") {
  REQUIRE_NOTHROW(ppipe::mpi::check(MPI_SUCCESS, "MPI_Barrier"));

  // Before MPI_Init: still a ppipe::error, with the number, and no abort.
  const std::string before = message_of(MPI_ERR_RANK, "MPI_Send");
  INFO(before);
  CHECK(before.rfind("[ppipe.backend] MPI_Send failed: MPI error " + std::to_string(MPI_ERR_RANK), 0) == 0);
  CHECK(contains(before, "MPI_ERR_RANK"));

  mpi_session session;

  // A known error class: its name and MPI's own text.
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  REQUIRE(MPI_Error_string(MPI_ERR_RANK, text, &length) == MPI_SUCCESS);
  const std::string during = message_of(MPI_ERR_RANK, "MPI_Send(stage 0 -> 9)");
  INFO(during);
  CHECK(during.rfind("[ppipe.backend] MPI_Send(stage 0 -> 9) failed: MPI error " +
                         std::to_string(MPI_ERR_RANK) + " (MPI_ERR_RANK: ",
                     0) == 0);
  CHECK(contains(during, std::string(text, static_cast<std::size_t>(length))));
  CHECK(!contains(during, "MPI_ERR_RANK: MPI_ERR_RANK"));  // Open MPI's text starts with the name

  // A number MPI never issued must not reach MPI_Error_string, whose handler would abort the job.
  const std::string bogus = message_of(MPI_ERR_LASTCODE + 100000, "MPI_Recv");
  INFO(bogus);
  CHECK(contains(bogus, "not a valid MPI error code"));

  // A real failing call, with errors returned rather than fatal.
  REQUIRE(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN) == MPI_SUCCESS);
  int size = 0;
  REQUIRE(MPI_Comm_size(MPI_COMM_WORLD, &size) == MPI_SUCCESS);
  int payload = 42;
  std::string real;
  try {
    PPIPE_MPI_CHECK(MPI_Send(&payload, 1, MPI_INT, size + 7, 0, MPI_COMM_WORLD));
  } catch (const ppipe::error& e) {
    real = e.what();
  }
  INFO(real);
  CHECK(contains(real, "mpi_check_test.cpp:"));
  CHECK(contains(real, "MPI_Send(&payload, 1, MPI_INT, size + 7, 0, MPI_COMM_WORLD) failed: MPI error"));
  CHECK(contains(real, "MPI_ERR_RANK"));

  REQUIRE(MPI_Finalize() == MPI_SUCCESS);
  const std::string after = message_of(MPI_ERR_COMM, "MPI_Bcast");
  INFO(after);
  CHECK(contains(after, "MPI error " + std::to_string(MPI_ERR_COMM)));
}
