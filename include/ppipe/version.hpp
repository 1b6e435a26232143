#pragma once
/// @file
/// @brief The ppipe version. CMake reads the three numbers below from this file.

/// @brief The major version number: X in X.Y.Z.
#define PPIPE_VERSION_MAJOR 0
/// @brief The minor version number: Y in X.Y.Z.
#define PPIPE_VERSION_MINOR 1
/// @brief The patch version number: Z in X.Y.Z.
#define PPIPE_VERSION_PATCH 0

/// @brief One integer that grows with every release: MAJOR * 10000 + MINOR * 100 + PATCH.
#define PPIPE_VERSION (PPIPE_VERSION_MAJOR * 10000 + PPIPE_VERSION_MINOR * 100 + PPIPE_VERSION_PATCH)

/// @brief Internal: turns its argument into a string literal without expanding it.
#define PPIPE_DETAIL_STR2(x) #x
/// @brief Internal: expands its argument, then turns the result into a string literal.
#define PPIPE_DETAIL_STR(x) PPIPE_DETAIL_STR2(x)
/// @brief The version as a string literal, e.g. "0.1.0".
#define PPIPE_VERSION_STRING                                                                       \
  PPIPE_DETAIL_STR(PPIPE_VERSION_MAJOR)                                                            \
  "." PPIPE_DETAIL_STR(PPIPE_VERSION_MINOR) "." PPIPE_DETAIL_STR(PPIPE_VERSION_PATCH)

namespace ppipe {
/// @brief The major version, PPIPE_VERSION_MAJOR, as a constant of the language.
inline constexpr int version_major = PPIPE_VERSION_MAJOR;
/// @brief The minor version, PPIPE_VERSION_MINOR.
inline constexpr int version_minor = PPIPE_VERSION_MINOR;
/// @brief The patch version, PPIPE_VERSION_PATCH.
inline constexpr int version_patch = PPIPE_VERSION_PATCH;
/// @brief The version as a null-terminated string with static storage: PPIPE_VERSION_STRING.
inline constexpr const char* version_string = PPIPE_VERSION_STRING;
}  // namespace ppipe
