#pragma once
/// @file
/// @brief Writing a whole file for the trace and picture writers, with one error for every way it
/// can fail.

#include <cerrno>
#include <fstream>
#include <string>
#include <system_error>

#include "ppipe/error.hpp"

namespace ppipe::detail {

/// Creates (or truncates) the file `path` and lets `write(std::ostream&)` fill it. Throws
/// ppipe::error (invalid_argument) naming `what` ("the SVG file"), the path and the reason if the
/// file cannot be opened, written or closed.
template <class Write>
void save_file(const std::string& path, const char* what, Write&& write) {
  const auto fail_at = [&](const char* doing, int code) {
    const std::string why = code != 0 ? std::generic_category().message(code) : "unknown error";
    fail(errc::invalid_argument, "cannot ", doing, " ", what, " \"", path, "\": ", why,
         "; give a path in a directory that exists and that this process may write");
  };
  errno = 0;
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file.is_open()) fail_at("open", errno);
  errno = 0;
  write(file);
  file.flush();
  if (!file) fail_at("write", errno);
  file.close();
  if (file.fail()) fail_at("close", errno);
}

}  // namespace ppipe::detail
