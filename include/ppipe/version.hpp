#pragma once
/// @file
/// @brief The ppipe version. CMake reads the three numbers below from this file.

#define PPIPE_VERSION_MAJOR 0
#define PPIPE_VERSION_MINOR 1
#define PPIPE_VERSION_PATCH 0

/// @brief One integer that grows with every release: MAJOR * 10000 + MINOR * 100 + PATCH.
#define PPIPE_VERSION (PPIPE_VERSION_MAJOR * 10000 + PPIPE_VERSION_MINOR * 100 + PPIPE_VERSION_PATCH)

#define PPIPE_DETAIL_STR2(x) #x
#define PPIPE_DETAIL_STR(x) PPIPE_DETAIL_STR2(x)
/// @brief The version as a string literal, e.g. "0.1.0".
#define PPIPE_VERSION_STRING                                                                       \
  PPIPE_DETAIL_STR(PPIPE_VERSION_MAJOR)                                                            \
  "." PPIPE_DETAIL_STR(PPIPE_VERSION_MINOR) "." PPIPE_DETAIL_STR(PPIPE_VERSION_PATCH)

namespace ppipe {
inline constexpr int version_major = PPIPE_VERSION_MAJOR;
inline constexpr int version_minor = PPIPE_VERSION_MINOR;
inline constexpr int version_patch = PPIPE_VERSION_PATCH;
inline constexpr const char* version_string = PPIPE_VERSION_STRING;
}  // namespace ppipe
