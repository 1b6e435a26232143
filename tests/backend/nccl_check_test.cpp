#include <string>

#include <ppipe/nccl.hpp>

#include "catch.hpp"

TEST_CASE("nccl::version is the loaded library's, and matches the nccl.h compiled against", "[nccl]") {
  // ppipe builds against the toolkit's nccl.h and links its libnccl, so the two agree here.
  CHECK(ppipe::nccl::version() == NCCL_VERSION_CODE);
  CHECK(ppipe::nccl::version() >= NCCL_VERSION(2, 0, 0));
}

TEST_CASE("nccl::check accepts ncclSuccess", "[nccl]") {
  REQUIRE_NOTHROW(ppipe::nccl::check(ncclSuccess, "ncclGroupEnd"));
}

TEST_CASE("nccl::check throws a backend error carrying the code, its name and NCCL's text", "[nccl]") {
  std::string what;
  try {
    ppipe::nccl::check(ncclInvalidArgument, "ncclSend(stage 1 -> 2)");
    FAIL("expected a ppipe::error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::backend);
    what = e.what();
  }
  INFO(what);
  CHECK(what.rfind("[ppipe.backend] ncclSend(stage 1 -> 2) failed", 0) == 0);
  CHECK(what.find("NCCL error 4 ncclInvalidArgument") != std::string::npos);
  CHECK(what.find(ncclGetErrorString(ncclInvalidArgument)) != std::string::npos);
}

TEST_CASE("nccl::result_name names every result NCCL defines", "[nccl]") {
  CHECK(std::string(ppipe::nccl::result_name(ncclSuccess)) == "ncclSuccess");
  CHECK(std::string(ppipe::nccl::result_name(ncclUnhandledCudaError)) == "ncclUnhandledCudaError");
  CHECK(std::string(ppipe::nccl::result_name(ncclSystemError)) == "ncclSystemError");
  CHECK(std::string(ppipe::nccl::result_name(ncclInternalError)) == "ncclInternalError");
  CHECK(std::string(ppipe::nccl::result_name(ncclInvalidUsage)) == "ncclInvalidUsage");
  CHECK(std::string(ppipe::nccl::result_name(ncclRemoteError)) == "ncclRemoteError");
  CHECK(std::string(ppipe::nccl::result_name(ncclInProgress)) == "ncclInProgress");
  CHECK(std::string(ppipe::nccl::result_name(static_cast<ncclResult_t>(ncclNumResults))) ==
        "ncclUnknownResult");
}

TEST_CASE("PPIPE_NCCL_CHECK names the expression and the file", "[nccl]") {
  try {
    PPIPE_NCCL_CHECK(ncclInvalidUsage);
    FAIL("expected a ppipe::error");
  } catch (const ppipe::error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("nccl_check_test.cpp:") != std::string::npos);
    CHECK(what.find(": ncclInvalidUsage failed: NCCL error 5 ncclInvalidUsage") != std::string::npos);
  }
}
