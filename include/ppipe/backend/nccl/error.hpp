#pragma once
/// @file
/// @brief NCCL result codes turned into ppipe::error, and the NCCL library's version.

#include <nccl.h>

#include <ppipe/error.hpp>

namespace ppipe::nccl {

/// @brief The enumerator's name of an NCCL result, e.g. "ncclInvalidArgument".
/// @param result the value an NCCL call returned
/// @return the name; "ncclUnknownResult" for a code this header does not know
constexpr const char* result_name(ncclResult_t result) noexcept {
  switch (result) {
    case ncclSuccess: return "ncclSuccess";
    case ncclUnhandledCudaError: return "ncclUnhandledCudaError";
    case ncclSystemError: return "ncclSystemError";
    case ncclInternalError: return "ncclInternalError";
    case ncclInvalidArgument: return "ncclInvalidArgument";
    case ncclInvalidUsage: return "ncclInvalidUsage";
    case ncclRemoteError: return "ncclRemoteError";
    case ncclInProgress: return "ncclInProgress";
    default: return "ncclUnknownResult";
  }
}

/// @brief Throws ppipe::error (errc::backend) unless `result` is ncclSuccess.
/// @param result the value an NCCL call returned
/// @param what   the call that returned it, e.g. "ncclSend(stage 1 -> 2)"
/// The message carries the numeric code, its name, NCCL's description and, when NCCL kept one, its
/// detailed last error (which usually names the failing peer or resource).
inline void check(ncclResult_t result, const char* what) {
  if (result == ncclSuccess) {
    return;
  }
  const char* last = ncclGetLastError(nullptr);  // the communicator argument is unused by NCCL
  const bool has_last = last != nullptr && last[0] != '\0';
  ppipe::detail::fail(errc::backend, what, " failed: NCCL error ", static_cast<int>(result), " ",
                      result_name(result), " (", ncclGetErrorString(result), ")",
                      has_last ? "; NCCL says: " : "", has_last ? last : "");
}

/// @brief The version of the NCCL library loaded at run time, encoded like NCCL_VERSION_CODE
/// (e.g. 22809 for 2.28.9). It may differ from the nccl.h this code was compiled against.
/// @return the version code
/// @throws ppipe::error (errc::backend) when ncclGetVersion fails
inline int version() {
  int code = 0;
  check(ncclGetVersion(&code), "ncclGetVersion");
  return code;
}

}  // namespace ppipe::nccl

/// @brief Evaluates an NCCL call once and throws ppipe::error naming the call, the file and the line
/// unless it returned ncclSuccess.
#define PPIPE_NCCL_CHECK(expr)                                                                     \
  do {                                                                                             \
    const ::ncclResult_t ppipe_nccl_check_result_ = (expr);                                        \
    if (ppipe_nccl_check_result_ != ::ncclSuccess) {                                               \
      ::ppipe::nccl::check(ppipe_nccl_check_result_,                                               \
                           ::ppipe::detail::concat(__FILE__, ":", __LINE__, ": ", #expr).c_str()); \
    }                                                                                              \
  } while (false)
