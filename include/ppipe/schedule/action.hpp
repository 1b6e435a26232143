#pragma once
/// @file
/// @brief One step of a pipeline schedule: a computation or a transfer, for one stage and one
/// microbatch, and its compact text form ("2F5", "1SEND_B0").

#include <charconv>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ppipe/error.hpp"

namespace ppipe {

/// @brief What an action does. The stage of an action is always the stage that lives on the rank
/// running it: `send_activation` of stage s sends s's output to stage s+1, `recv_activation` of
/// stage s receives s's input from stage s-1, `send_gradient` of stage s sends the gradient of s's
/// input to stage s-1, and `recv_gradient` of stage s receives the gradient of s's output from s+1.
enum class action_kind : std::uint8_t {
  forward,          ///< F: forward of the stage's layers
  backward,         ///< B: full backward (input and weight gradients)
  backward_input,   ///< I: the input-gradient half of a split backward
  backward_weight,  ///< W: the weight-gradient half of a split backward
  /// R: re-runs the forward of a microbatch whose forward kept only the stage's input and output
  /// (activation recomputation), before the backward that needs its activations
  recompute,
  send_activation,  ///< SEND_F
  recv_activation,  ///< RECV_F
  send_gradient,    ///< SEND_B
  recv_gradient,    ///< RECV_B
};

/// @brief Number of action kinds, for tables indexed by kind.
inline constexpr int action_kind_count = 9;

/// @brief The short code of a kind, as it appears in "2F5": F, B, I, W, R, SEND_F, RECV_F, SEND_B,
/// RECV_B.
/// @param kind the kind to spell
/// @return its code, a view of a static string; "?" for a value outside the enumeration
constexpr std::string_view code(action_kind kind) noexcept {
  switch (kind) {
    case action_kind::forward: return "F";
    case action_kind::backward: return "B";
    case action_kind::backward_input: return "I";
    case action_kind::backward_weight: return "W";
    case action_kind::recompute: return "R";
    case action_kind::send_activation: return "SEND_F";
    case action_kind::recv_activation: return "RECV_F";
    case action_kind::send_gradient: return "SEND_B";
    case action_kind::recv_gradient: return "RECV_B";
  }
  return "?";
}

/// @brief The spelled-out name of a kind, e.g. "recv_activation".
/// @param kind the kind to name
/// @return the enumerator's name, a view of a static string; "?" for a value outside the enumeration
constexpr std::string_view name(action_kind kind) noexcept {
  switch (kind) {
    case action_kind::forward: return "forward";
    case action_kind::backward: return "backward";
    case action_kind::backward_input: return "backward_input";
    case action_kind::backward_weight: return "backward_weight";
    case action_kind::recompute: return "recompute";
    case action_kind::send_activation: return "send_activation";
    case action_kind::recv_activation: return "recv_activation";
    case action_kind::send_gradient: return "send_gradient";
    case action_kind::recv_gradient: return "recv_gradient";
  }
  return "?";
}

/// @brief True for F, B, I, W and R: the actions that run the user's layers.
/// @param kind the kind to classify
/// @return whether `kind` is a compute kind
constexpr bool is_compute(action_kind kind) noexcept {
  return kind <= action_kind::recompute;
}
/// @brief True for the four transfer kinds.
/// @param kind the kind to classify
/// @return whether `kind` is SEND_F, RECV_F, SEND_B or RECV_B
constexpr bool is_transfer(action_kind kind) noexcept { return !is_compute(kind); }
/// @brief True for SEND_F and SEND_B.
/// @param kind the kind to classify
/// @return whether `kind` sends data to another rank
constexpr bool is_send(action_kind kind) noexcept {
  return kind == action_kind::send_activation || kind == action_kind::send_gradient;
}
/// @brief True for RECV_F and RECV_B.
/// @param kind the kind to classify
/// @return whether `kind` receives data from another rank
constexpr bool is_recv(action_kind kind) noexcept {
  return kind == action_kind::recv_activation || kind == action_kind::recv_gradient;
}
/// @brief True for the kinds that exist only in training: B, I, W, R, SEND_B, RECV_B.
/// @param kind the kind to classify
/// @return whether `kind` belongs to the backward pass
constexpr bool is_backward_pass(action_kind kind) noexcept {
  return kind == action_kind::backward || kind == action_kind::backward_input ||
         kind == action_kind::backward_weight || kind == action_kind::recompute ||
         kind == action_kind::send_gradient || kind == action_kind::recv_gradient;
}

/// @brief One action of a schedule: what to do, for which stage and which microbatch.
struct action {
  std::int32_t stage = 0;       ///< global stage index, 0 .. stages-1
  std::int32_t microbatch = 0;  ///< 0 .. microbatches-1
  action_kind kind = action_kind::forward;  ///< what the action does
  /// A forward that forms one action with the full backward (B) right after it in its rank's list,
  /// of another stage or microbatch (DualPipeV's F&B): the receives of both come before the pair
  /// and the sends of both after it, and an executor may overlap the two. Written "2F5+".
  bool paired = false;

  /// @brief The same action: stage, microbatch and kind match (`paired` is how the action is run,
  /// not which one it is; compare it on its own where it matters).
  /// @return whether the two name the same action
  friend constexpr bool operator==(const action& x, const action& y) noexcept {
    return x.stage == y.stage && x.microbatch == y.microbatch && x.kind == y.kind;
  }
};

/// @brief Compact form "<stage><code><microbatch>", e.g. "2F5" or "1SEND_B0" (the notation of
/// PyTorch's pipelining schedule files); a paired forward ends in "+", e.g. "2F5+".
/// @param a the action to write
/// @return its compact form; parse_action() reads it back
inline std::string to_string(const action& a) {
  return std::to_string(a.stage) + std::string(code(a.kind)) + std::to_string(a.microbatch) + (a.paired ? "+" : "");
}

/// @brief Writes the compact form of `a`, as to_string() gives it.
/// @param os the stream to write to
/// @param a the action to write
/// @return `os`
inline std::ostream& operator<<(std::ostream& os, const action& a) { return os << to_string(a); }

/// @brief A sentence-fragment description for error messages, e.g.
/// "2F5 (forward of stage 2, microbatch 5)".
/// @param a the action to describe
/// @return its compact form followed by its kind, stage and microbatch in words
inline std::string describe(const action& a) {
  return detail::concat(to_string(a), " (", name(a.kind), " of stage ", a.stage, ", microbatch ", a.microbatch,
                        a.paired ? ", paired with the backward after it" : "", ")");
}

namespace detail {

/// Reads the action in line[begin, end); error columns count from the start of `line`.
inline action parse_action_in(std::string_view line, std::size_t begin, std::size_t end) {
  const std::string_view text = line.substr(begin, end - begin);
  const auto bad = [&](std::size_t at, std::string_view why) {
    fail(errc::parse_error, "cannot read action \"", text, "\" at column ", begin + at + 1, ": ", why,
         "; write <stage><kind><microbatch> such as 2F5 or 1SEND_B0, with kind one of "
         "F, B, I, W, R, SEND_F, RECV_F, SEND_B, RECV_B (and 2F5+ for a forward paired with the next B)");
  };
  const auto read_number = [&](std::size_t from, std::int32_t& out) -> std::size_t {
    const char* first = text.data() + from;
    const auto [stop, ec] = std::from_chars(first, text.data() + text.size(), out);
    if (ec == std::errc::result_out_of_range) bad(from, "number too large");
    if (ec != std::errc() || out < 0) bad(from, "expected a non-negative number");
    return static_cast<std::size_t>(stop - text.data());
  };

  action a;
  std::size_t pos = read_number(0, a.stage);
  std::size_t code_end = pos;
  while (code_end < text.size() &&
         ((text[code_end] >= 'A' && text[code_end] <= 'Z') || text[code_end] == '_')) {
    ++code_end;
  }
  const std::string_view kind_code = text.substr(pos, code_end - pos);
  bool known = false;
  for (int k = 0; k < action_kind_count; ++k) {
    if (code(static_cast<action_kind>(k)) == kind_code) {
      a.kind = static_cast<action_kind>(k);
      known = true;
    }
  }
  if (!known) bad(pos, kind_code.empty() ? "missing kind" : "unknown kind");
  pos = read_number(code_end, a.microbatch);
  if (pos + 1 == text.size() && text[pos] == '+') {
    if (a.kind != action_kind::forward) bad(pos, "only a forward pairs with the backward after it (F+)");
    a.paired = true;
    ++pos;
  }
  if (pos != text.size()) bad(pos, "unexpected text after the microbatch");
  return a;
}

}  // namespace detail

/// @brief Reads the compact form written by to_string(). Throws ppipe::error (parse_error) naming
/// the column of the first character it cannot read.
/// @param text one action and nothing else (no surrounding whitespace), e.g. "1SEND_B0"
/// @return the action; its stage and microbatch are not checked against any schedule
inline action parse_action(std::string_view text) {
  return detail::parse_action_in(text, 0, text.size());
}

/// @brief Reads whitespace-separated actions, e.g. a rank's list "0F0 0SEND_F0 0RECV_B0 0B0".
/// Error columns count from the start of `line`.
/// Throws ppipe::error (parse_error) as parse_action() does, for the first action it cannot read.
/// @param line the actions, separated by spaces, tabs or line breaks
/// @return the actions in the order written; empty when `line` holds only whitespace
inline std::vector<action> parse_actions(std::string_view line) {
  std::vector<action> out;
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  for (std::size_t i = 0; i < line.size();) {
    if (space(line[i])) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < line.size() && !space(line[end])) ++end;
    out.push_back(detail::parse_action_in(line, i, end));
    i = end;
  }
  return out;
}

}  // namespace ppipe
