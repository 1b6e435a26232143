#include <set>
#include <string>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>

TEST_CASE("ppipe::error carries a stable id in front of its message") {
  const ppipe::error e(ppipe::errc::deadlock, "rank 0 waits on rank 1");
  CHECK(e.code() == ppipe::errc::deadlock);
  CHECK(e.id() == "ppipe.deadlock");
  CHECK(std::string(e.what()) == "[ppipe.deadlock] rank 0 waits on rank 1");
  CHECK(e.message() == "rank 0 waits on rank 1");
  const std::runtime_error& base = e;  // catchable as a standard exception
  CHECK(std::string(base.what()).find("rank 0") != std::string::npos);
}

TEST_CASE("every error kind has its own id") {
  std::set<std::string_view> ids;
  for (int k = 1; k <= static_cast<int>(ppipe::errc::stage_failed); ++k) {
    const auto id = ppipe::to_id(static_cast<ppipe::errc>(k));
    CHECK(id.substr(0, 6) == "ppipe.");
    CHECK(id != "ppipe.unknown");
    ids.insert(id);
  }
  CHECK(ids.size() == static_cast<std::size_t>(ppipe::errc::stage_failed));
}

TEST_CASE("detail::fail streams every part of the message") {
  try {
    ppipe::detail::fail(ppipe::errc::invalid_argument, "m=", 3, " p=", 4.5);
    FAIL("fail() returned");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::invalid_argument);
    CHECK(e.message() == "m=3 p=4.5");
  }
}

TEST_CASE("the version macros agree with the constants") {
  CHECK(ppipe::version_major == PPIPE_VERSION_MAJOR);
  CHECK(PPIPE_VERSION == PPIPE_VERSION_MAJOR * 10000 + PPIPE_VERSION_MINOR * 100 + PPIPE_VERSION_PATCH);
  CHECK(std::string(ppipe::version_string) ==
        std::to_string(PPIPE_VERSION_MAJOR) + "." + std::to_string(PPIPE_VERSION_MINOR) + "." +
            std::to_string(PPIPE_VERSION_PATCH));
}
