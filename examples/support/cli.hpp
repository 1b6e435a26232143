#pragma once
// What the example tools' command lines have in common, on CLI11: numbers read whole and checked
// against a range (CLI11 2.1 alone reads "010" as octal and lets strtoll clamp what overflows),
// the pipeline's -p/-m/-v, --schedule and --timeout-ms, output paths checked before a run, and the
// one place where an exception becomes a message and an exit status.

#include <unistd.h>

// At -O2, GCC 12 reports a potential null dereference in libstdc++'s string moves as CLI11's
// functions inline them (a false positive in vector growth); only CLI11's header is exempted.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

#include <charconv>
#include <cmath>
#include <exception>
#include <filesystem>
#include <iostream>
#include <limits>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include <ppipe/error.hpp>

#include "shown.hpp"
#include "sizes.hpp"

namespace examples::cli {

// Exit statuses: 0 done; 2 the input was wrong (the command line, or a file, path or size it
// names); 1 the run itself failed (a timeout, a backend, a kernel, memory that ran out).
inline constexpr int exit_failed = 1;
inline constexpr int exit_usage = 2;

// A command-line mistake found after parsing, such as two options that contradict each other.
template <class... Parts>
[[noreturn]] void refuse(const Parts&... parts) {
  throw CLI::ValidationError(ppipe::detail::concat(parts...));
}

// ---- numbers ----------------------------------------------------------------------------

// The values an option takes: [min, max], or (min, max] with above_min.
template <class T>
struct range {
  T min;
  T max = std::numeric_limits<T>::max();
  bool above_min = false;

  [[nodiscard]] bool contains(T v) const { return (above_min ? v > min : v >= min) && v <= max; }
  // "a whole number" or "a number".
  [[nodiscard]] static std::string kind() {
    return std::is_integral_v<T> ? "a whole number" : "a number";
  }
  // "from 1 to 2147483647", "above 0 up to 1.79769e+308".
  [[nodiscard]] std::string bounds() const {
    std::ostringstream os;
    os << (above_min ? "above " : "from ") << +min << (above_min ? " up to " : " to ") << +max;
    return os.str();
  }
};

// `text` as a T: for a whole number an optional sign and decimal digits, for a number a finite
// decimal; nothing else. `too_large` says whether it is a number that T cannot hold.
template <class T>
std::optional<T> read_number(std::string_view text, bool* too_large = nullptr) {
  if (text.size() > 1 && text.front() == '+' && text[1] != '-') text.remove_prefix(1);
  T value{};
  const char* end = text.data() + text.size();
  std::from_chars_result read{};
  if constexpr (std::is_integral_v<T>) {
    read = std::from_chars(text.data(), end, value, 10);
  } else {
    read = std::from_chars(text.data(), end, value, std::chars_format::general);
  }
  if (too_large) *too_large = read.ec == std::errc::result_out_of_range && read.ptr == end;
  if (read.ec != std::errc{} || read.ptr != end) return std::nullopt;
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(value)) return std::nullopt;
  }
  return value;
}

// Why `text` is not a number in `r` ("" when it is one, then in `out`).
template <class T>
std::string number_problem(std::string_view text, const range<T>& r, T& out) {
  bool too_large = false;
  const std::optional<T> value = read_number<T>(text, &too_large);
  if (value && r.contains(*value)) {
    out = *value;
    return "";
  }
  // A whole number T cannot hold ("-1" for an unsigned T) is out of range too.
  const std::size_t sign = text.find_last_of("+-");
  const bool whole = std::is_integral_v<T> && (sign == std::string_view::npos || sign == 0) &&
                     text.size() > (sign == 0 ? 1u : 0u) &&
                     text.find_first_not_of("+-0123456789") == std::string_view::npos;
  return "\"" + shown(text) + "\" is " +
         (value || too_large || whole ? "out of range" : "not " + r.kind()) + "; give " + r.kind() +
         " " + r.bounds();
}

// A CLI11 validator for numbers in `r`: it refuses any other text and hands CLI11 the number
// written plainly (CLI11 would read a leading 0 as octal).
template <class T>
CLI::Validator within(const range<T>& r) {
  CLI::Validator v(
      [r](std::string& text) {
        T value{};
        std::string why = number_problem(text, r, value);
        if (why.empty()) {
          char plain[64];
          text.assign(plain, std::to_chars(plain, plain + sizeof plain, value).ptr);
        }
        return why;
      },
      r.bounds());
  return v;
}

// An option that takes a number in `r`.
template <class T>
CLI::Option* add_number(CLI::App& app, const std::string& names, T& value, const range<T>& r,
                        const std::string& help) {
  return app.add_option(names, value, help)->capture_default_str()->transform(within(r));
}

// ---- what the tools share ----------------------------------------------------------------

inline constexpr int most = std::numeric_limits<int>::max();

inline CLI::Option* add_ranks(CLI::App& app, int& ranks,
                              const std::string& help = "pipeline ranks") {
  return add_number(app, "-p,--ranks", ranks, range<int>{1, most}, help);
}
inline CLI::Option* add_microbatches(CLI::App& app, int& microbatches) {
  return add_number(app, "-m,--microbatches", microbatches, range<int>{1, most},
                    "microbatches per step");
}
inline CLI::Option* add_virtual(CLI::App& app, int& virtual_stages,
                                const std::string& help = "stages per rank") {
  return add_number(app, "-v,--virtual", virtual_stages, range<int>{1, most}, help);
}
inline CLI::Option* add_timeout(CLI::App& app, long& milliseconds) {
  return add_number(app, "--timeout-ms", milliseconds, range<long>{1},
                    "how long a rank waits for another before the run fails, in milliseconds");
}

// "a, b or c".
inline std::string listed(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  }
  return out;
}

// A validator that takes one of `names`: "\"x\" is not <what>; use a, b or c".
inline CLI::Validator one_of(const std::vector<std::string>& names, const std::string& what) {
  return CLI::Validator(
      [names, what](std::string& text) {
        for (const std::string& name : names) {
          if (text == name) return std::string();
        }
        return "\"" + shown(text) + "\" is not " + what + "; use " + listed(names);
      },
      "");
}

// --schedule NAME, one of `names`.
inline CLI::Option* add_schedule(CLI::App& app, std::string& schedule,
                                 const std::vector<std::string>& names,
                                 const std::string& help = "the schedule") {
  return app.add_option("--schedule", schedule, help + ": " + listed(names))
      ->capture_default_str()
      ->type_name("NAME")
      ->check(one_of(names, "a schedule here"));
}

// Throws ppipe::error (invalid_argument) unless a file can be written at `path`: its folder
// exists and this process may write into it, and the path is not a folder. Checked before a run,
// so that a mistyped path costs nothing; `fix` says what else to give.
inline void check_writable(const std::string& path, std::string_view option, std::string_view fix) {
  namespace fs = std::filesystem;
  const fs::path file(path);
  const fs::path folder = file.has_parent_path() ? file.parent_path() : fs::path(".");
  std::error_code ec;
  std::string why;
  if (!fs::is_directory(folder, ec)) {
    why = fs::exists(folder, ec)
              ? "\"" + shown(folder.string(), 4096) + "\" is not a folder"
              : "the folder \"" + shown(folder.string(), 4096) + "\" does not exist";
  } else if (fs::is_directory(file, ec)) {
    why = "it is a folder; give a file in it";
  } else if (::access(folder.c_str(), W_OK) != 0 ||
             (fs::exists(file, ec) && ::access(file.c_str(), W_OK) != 0)) {
    why = "this process may not write it";
  }
  if (!why.empty()) {
    ppipe::detail::fail(ppipe::errc::invalid_argument, option, " \"", shown(path, 4096),
                        "\" cannot be written: ", why, "; ", fix);
  }
}

// ---- errors and exit statuses ------------------------------------------------------------

// What an exception means for the user: the exit status and the message (for --help, status 0
// and the help text, which goes to stdout).
struct outcome {
  int status = exit_failed;
  std::string message;
  bool help = false;
};

inline int status_of(ppipe::errc code) {
  switch (code) {
    case ppipe::errc::timeout:
    case ppipe::errc::backend:
    case ppipe::errc::stage_failed:
      return exit_failed;
    default:
      return exit_usage;
  }
}

inline outcome outcome_of(std::exception_ptr thrown, const CLI::App& app) {
  try {
    std::rethrow_exception(thrown);
  } catch (const CLI::CallForHelp&) {
    return {0, app.help(), true};
  } catch (const CLI::ParseError& e) {
    // CLI11 echoes what it did not expect; a few hundred characters of it say enough.
    return {exit_usage,
            shown(e.what(), 400, true) + "\n(" + app.get_name() + " --help lists the options)"};
  } catch (const ppipe::error& e) {
    return {status_of(e.code()), printable(e.what())};
  } catch (const std::bad_alloc&) {
    return {exit_failed, "ran out of memory; give smaller sizes"};
  } catch (const std::exception& e) {
    return {exit_failed, printable(e.what())};
  } catch (...) {
    return {exit_failed, "an unknown exception"};
  }
}

// Runs `body` (which parses the command line into `app` and does the work) and returns its exit
// status; whatever it throws is printed as "<program>: <message>" on stderr.
template <class Body>
int run(CLI::App& app, Body&& body) {
  try {
    return body();
  } catch (...) {
    const outcome o = outcome_of(std::current_exception(), app);
    if (o.help) {
      std::cout << o.message;
    } else {
      std::cerr << app.get_name() << ": " << o.message << "\n";
    }
    return o.status;
  }
}

}  // namespace examples::cli
