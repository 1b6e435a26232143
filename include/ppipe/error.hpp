#pragma once
/// @file
/// @brief ppipe::error, the one exception type the library throws, and its stable ids.

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ppipe {

/// @brief What kind of failure an error is. Each value has a stable id (see to_id()) that starts
/// every message, so that logs can be searched and tests can match on it.
enum class errc : int {
  invalid_argument = 1,  ///< a value given to ppipe is out of range or inconsistent
  invalid_schedule,      ///< a schedule is incomplete, misordered, or its transfers do not match
  deadlock,              ///< a schedule's ranks would wait for each other forever
  parse_error,           ///< text (an action, a command line) could not be read
  timeout,               ///< a wait ran past its deadline
  backend,               ///< CUDA, NCCL or MPI reported a failure
  unsupported,           ///< a feature that this build or configuration does not provide
  out_of_memory,         ///< a plan cannot fit the memory its devices have
  stage_failed,          ///< a user's kernel, loss or hook threw on a rank (the original is nested)
};

/// @brief The stable id of an error kind, e.g. "ppipe.invalid_argument".
/// @param code the error kind
/// @return its id, a view of a string literal; "ppipe.unknown" for a value outside errc
constexpr std::string_view to_id(errc code) noexcept {
  switch (code) {
    case errc::invalid_argument: return "ppipe.invalid_argument";
    case errc::invalid_schedule: return "ppipe.invalid_schedule";
    case errc::deadlock: return "ppipe.deadlock";
    case errc::parse_error: return "ppipe.parse_error";
    case errc::timeout: return "ppipe.timeout";
    case errc::backend: return "ppipe.backend";
    case errc::unsupported: return "ppipe.unsupported";
    case errc::out_of_memory: return "ppipe.out_of_memory";
    case errc::stage_failed: return "ppipe.stage_failed";
  }
  return "ppipe.unknown";
}

/// @brief The exception ppipe throws. `what()` reads "[<id>] <message>", where the message names
/// the offending values and how to fix them.
class error : public std::runtime_error {
 public:
  /// @brief Makes an error of kind `code`, whose what() reads "[<id>] <message>".
  /// @param code the kind of failure
  /// @param message what went wrong, naming the offending values (copied)
  error(errc code, const std::string& message)
      : std::runtime_error(std::string("[").append(to_id(code)).append("] ").append(message)), code_(code) {}

  /// @brief The kind of failure.
  /// @return the code the error was made with
  [[nodiscard]] errc code() const noexcept { return code_; }
  /// @brief The stable id, e.g. "ppipe.deadlock".
  /// @return to_id(code()), a view of a string literal
  [[nodiscard]] std::string_view id() const noexcept { return to_id(code_); }
  /// @brief The message without the "[id] " prefix.
  /// @return a view into what(), valid as long as this error lives
  [[nodiscard]] std::string_view message() const noexcept {
    return std::string_view(what()).substr(id().size() + 3);
  }

 private:
  errc code_;
};

namespace detail {

/// Streams every part into one string; the building block of error messages.
template <class... Parts>
[[nodiscard]] std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

/// Throws ppipe::error(code, concat(parts...)).
template <class... Parts>
[[noreturn]] void fail(errc code, const Parts&... parts) {
  throw error(code, concat(parts...));
}

}  // namespace detail
}  // namespace ppipe
