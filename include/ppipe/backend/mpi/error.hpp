#pragma once
/// @file
/// @brief MPI return codes turned into ppipe::error.
///
/// Only MPI's C API is used, so this works with any MPI and with MPI_CXX_SKIP_MPICXX.

#include <mpi.h>

#include <algorithm>
#include <string>

#include <ppipe/error.hpp>

namespace ppipe::mpi {

/// @brief The name of a standard MPI error class, e.g. "MPI_ERR_COMM"; "MPI_ERR_<class>" spelled with
/// the number for classes this table does not know (implementation-specific or user-defined).
/// @param error_class an MPI error class, as MPI_Error_class gives it
/// @return its name
inline std::string error_class_name(int error_class) {
  switch (error_class) {
    case MPI_SUCCESS: return "MPI_SUCCESS";
    case MPI_ERR_BUFFER: return "MPI_ERR_BUFFER";
    case MPI_ERR_COUNT: return "MPI_ERR_COUNT";
    case MPI_ERR_TYPE: return "MPI_ERR_TYPE";
    case MPI_ERR_TAG: return "MPI_ERR_TAG";
    case MPI_ERR_COMM: return "MPI_ERR_COMM";
    case MPI_ERR_RANK: return "MPI_ERR_RANK";
    case MPI_ERR_REQUEST: return "MPI_ERR_REQUEST";
    case MPI_ERR_ROOT: return "MPI_ERR_ROOT";
    case MPI_ERR_GROUP: return "MPI_ERR_GROUP";
    case MPI_ERR_OP: return "MPI_ERR_OP";
    case MPI_ERR_TOPOLOGY: return "MPI_ERR_TOPOLOGY";
    case MPI_ERR_DIMS: return "MPI_ERR_DIMS";
    case MPI_ERR_ARG: return "MPI_ERR_ARG";
    case MPI_ERR_UNKNOWN: return "MPI_ERR_UNKNOWN";
    case MPI_ERR_TRUNCATE: return "MPI_ERR_TRUNCATE";
    case MPI_ERR_OTHER: return "MPI_ERR_OTHER";
    case MPI_ERR_INTERN: return "MPI_ERR_INTERN";
    case MPI_ERR_PENDING: return "MPI_ERR_PENDING";
    case MPI_ERR_IN_STATUS: return "MPI_ERR_IN_STATUS";
    case MPI_ERR_NO_MEM: return "MPI_ERR_NO_MEM";
    case MPI_ERR_WIN: return "MPI_ERR_WIN";
    case MPI_ERR_RMA_SYNC: return "MPI_ERR_RMA_SYNC";
    default: return ppipe::detail::concat("MPI error class ", error_class);
  }
}

namespace detail {

// Describes `code` as "<class name>: <MPI's text>", or as much of that as MPI allows. Calling MPI_Error_string or
// MPI_Error_class with a code MPI does not know invokes MPI's error handler, which by default aborts
// the whole job; an error path must never do that, so the code is range-checked first.
inline std::string describe(int code) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  const bool live = initialized != 0 && finalized == 0;
#if MPI_VERSION >= 4
  const bool may_query = true;  // MPI-4 allows MPI_Error_string/_class at any time
#else
  const bool may_query = live;  // before MPI-4 they are only valid between MPI_Init and MPI_Finalize
#endif
  if (!may_query) {
    // The predefined classes are also valid codes, so a small number can still be named.
    if (code > MPI_SUCCESS && code <= MPI_ERR_LASTCODE) {
      return error_class_name(code) + "; MPI is not initialized, so it has no text for it";
    }
    return "MPI is not initialized, so it has no text for it";
  }
  int last_code = MPI_ERR_LASTCODE;
  if (live) {
    // Codes added with MPI_Add_error_code go past MPI_ERR_LASTCODE, up to this attribute.
    int* last_used = nullptr;
    int flag = 0;
    if (MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_LASTUSEDCODE, &last_used, &flag) == MPI_SUCCESS &&
        flag != 0 && last_used != nullptr) {
      last_code = std::max(last_code, *last_used);
    }
  }
  if (code <= MPI_SUCCESS || code > last_code) {
    return "not a valid MPI error code";
  }
  int error_class = 0;
  if (MPI_Error_class(code, &error_class) != MPI_SUCCESS) {
    return "no description: MPI_Error_class failed";
  }
  std::string text(MPI_MAX_ERROR_STRING, '\0');
  int length = 0;
  if (MPI_Error_string(code, text.data(), &length) != MPI_SUCCESS) {
    return error_class_name(error_class);
  }
  text.resize(static_cast<std::size_t>(std::clamp(length, 0, MPI_MAX_ERROR_STRING)));
  const std::string name = error_class_name(error_class);
  if (text.rfind(name, 0) == 0) {
    return text;  // Open MPI's text already starts with the class name
  }
  return name + ": " + text;
}

}  // namespace detail

/// @brief Throws ppipe::error (errc::backend) unless `code` is MPI_SUCCESS. Never aborts the job.
/// @param code the value an MPI call returned (with MPI_ERRORS_RETURN set, as ppipe's backend does)
/// @param what the call that returned it, e.g. "MPI_Isend(stage 0 -> 1)"
/// The message carries the numeric code, its class name and MPI's text, e.g.
/// "[ppipe.backend] MPI_Send failed: MPI error 6 (MPI_ERR_RANK: invalid rank)".
inline void check(int code, const char* what) {
  if (code != MPI_SUCCESS) {
    ppipe::detail::fail(errc::backend, what, " failed: MPI error ", code, " (", detail::describe(code),
                        ")");
  }
}

}  // namespace ppipe::mpi

/// @brief Evaluates an MPI call once and throws ppipe::error naming the call, the file and the line
/// unless it returned MPI_SUCCESS.
#define PPIPE_MPI_CHECK(expr)                                                                      \
  do {                                                                                             \
    const int ppipe_mpi_check_code_ = (expr);                                                      \
    if (ppipe_mpi_check_code_ != MPI_SUCCESS) {                                                    \
      ::ppipe::mpi::check(ppipe_mpi_check_code_,                                                   \
                          ::ppipe::detail::concat(__FILE__, ":", __LINE__, ": ", #expr).c_str());  \
    }                                                                                              \
  } while (false)
