# Install rules: headers, a CMake package (core + one export set per component) and a pkg-config file.
#
# Layout under the prefix:
#   include/ppipe/...                    every header, backends included (they are inert unless used)
#   share/cmake/ppipe/                   ppipeConfig.cmake, ppipeConfigVersion.cmake, FindNCCL.cmake,
#                                        ppipeFindOpenBLAS.cmake, ppipeTargets.cmake,
#                                        ppipe{Cuda,Nccl,Mpi,Blas}Targets.cmake
#   share/pkgconfig/ppipe.pc             core only
# ppipe is header-only and its version file is ARCH_INDEPENDENT, so nothing here differs between
# architectures: share/ (not lib/<multiarch>/) is where such files belong, one copy serves every
# architecture of a multiarch system, and find_package and pkg-config search it by default.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(PPIPE_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/ppipe" CACHE STRING
    "Where ppipe's CMake package files are installed, relative to the prefix")
set(PPIPE_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig" CACHE STRING
    "Where ppipe.pc is installed, relative to the prefix")
mark_as_advanced(PPIPE_INSTALL_CMAKEDIR PPIPE_INSTALL_PKGCONFIGDIR)

# The whole tree, not a pattern: a header of another extension (.inl, .ipp) must not go missing.
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/ppipe" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

# One export set per target: a consumer loads a component's targets only after its dependency was
# found, so a machine without CUDA can still use the core and ppipe::mpi from the same install.
install(TARGETS ppipe EXPORT ppipeTargets)
install(EXPORT ppipeTargets NAMESPACE ppipe:: DESTINATION "${PPIPE_INSTALL_CMAKEDIR}")

foreach(_ppipe_c IN LISTS PPIPE_COMPONENTS)
  string(SUBSTRING "${_ppipe_c}" 0 1 _ppipe_first)
  string(SUBSTRING "${_ppipe_c}" 1 -1 _ppipe_rest)
  string(TOUPPER "${_ppipe_first}" _ppipe_first)
  set(_ppipe_set "ppipe${_ppipe_first}${_ppipe_rest}Targets")  # cuda -> ppipeCudaTargets
  install(TARGETS ppipe_${_ppipe_c} EXPORT ${_ppipe_set})
  install(EXPORT ${_ppipe_set} NAMESPACE ppipe:: DESTINATION "${PPIPE_INSTALL_CMAKEDIR}")
endforeach()

# The components this install provides, substituted into the config file.
set(PPIPE_INSTALLED_COMPONENTS "${PPIPE_COMPONENTS}")
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/ppipeConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/ppipeConfig.cmake"
  INSTALL_DESTINATION "${PPIPE_INSTALL_CMAKEDIR}"
  NO_SET_AND_CHECK_MACRO)
# 0.x: a minor release may break the API, so only the same MAJOR.MINOR satisfies a request.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/ppipeConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMinorVersion
  ARCH_INDEPENDENT)
install(FILES
          "${PROJECT_BINARY_DIR}/ppipeConfig.cmake"
          "${PROJECT_BINARY_DIR}/ppipeConfigVersion.cmake"
          "${CMAKE_CURRENT_LIST_DIR}/FindNCCL.cmake"
          "${CMAKE_CURRENT_LIST_DIR}/ppipeFindOpenBLAS.cmake"
        DESTINATION "${PPIPE_INSTALL_CMAKEDIR}")

# pkg-config: the prefix is computed from the .pc file's own location, so the install can be moved
# (or made with `cmake --install --prefix`) without rewriting the file.
if(IS_ABSOLUTE "${PPIPE_INSTALL_PKGCONFIGDIR}")
  set(PPIPE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _ppipe_up "/_/${PPIPE_INSTALL_PKGCONFIGDIR}" "/_")
  string(REGEX REPLACE "/$" "" _ppipe_up "${_ppipe_up}")
  set(PPIPE_PC_PREFIX "\${pcfiledir}/${_ppipe_up}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(PPIPE_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(PPIPE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file("${CMAKE_CURRENT_LIST_DIR}/ppipe.pc.in" "${PROJECT_BINARY_DIR}/ppipe.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/ppipe.pc" DESTINATION "${PPIPE_INSTALL_PKGCONFIGDIR}")

unset(_ppipe_c)
unset(_ppipe_first)
unset(_ppipe_rest)
unset(_ppipe_set)
unset(_ppipe_up)
