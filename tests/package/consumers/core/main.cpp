// Uses the installed core headers: the version macros and ppipe::error.
#include <cstdio>
#include <cstring>

#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

int main() {
#ifdef EXPECTED_VERSION
  if (std::strcmp(PPIPE_VERSION_STRING, EXPECTED_VERSION) != 0) {
    std::printf("header says %s, package says %s\n", PPIPE_VERSION_STRING, EXPECTED_VERSION);
    return 1;
  }
#endif
  static_assert(PPIPE_VERSION == PPIPE_VERSION_MAJOR * 10000 + PPIPE_VERSION_MINOR * 100 + PPIPE_VERSION_PATCH);
  try {
    ppipe::detail::fail(ppipe::errc::invalid_argument, "stages=", 0, " must be at least 1");
  } catch (const ppipe::error& e) {
    if (e.code() != ppipe::errc::invalid_argument ||
        std::strcmp(e.what(), "[ppipe.invalid_argument] stages=0 must be at least 1") != 0) {
      std::printf("unexpected error: %s\n", e.what());
      return 1;
    }
    std::printf("ppipe %s consumer ok: %s\n", ppipe::version_string, e.what());
    return 0;
  }
  return 1;
}
