# An overlay port of ppipe built from this source tree (vcpkg install --overlay-ports=<tree>/ports).
# A registry port would fetch a release instead:
#   vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO ppipe/ppipe REF "v${VERSION}" SHA512 <...>
#                     HEAD_REF main)
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

# Header-only: one (release) configuration is all there is to install.
set(VCPKG_BUILD_TYPE release)

# Every feature maps to its component, on or off: ppipe's own configure would otherwise turn on
# each component whose dependency it happens to find.
vcpkg_check_features(OUT_FEATURE_OPTIONS feature_options
  FEATURES
    cuda PPIPE_ENABLE_CUDA
    mpi  PPIPE_ENABLE_MPI
    nccl PPIPE_ENABLE_NCCL
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${feature_options}
    -DPPIPE_ENABLE_BLAS=OFF
    -DPPIPE_BUILD_TESTS=OFF
    -DPPIPE_BUILD_EXAMPLES=OFF
    -DPPIPE_BUILD_BENCHMARKS=OFF
    -DPPIPE_INSTALL=ON
    -DPPIPE_INSTALL_CMAKEDIR=share/${PORT}
    # vcpkg allows share/pkgconfig only for .pc files without Libs; ppipe.pc has -pthread.
    -DPPIPE_INSTALL_PKGCONFIGDIR=lib/pkgconfig
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup()
vcpkg_fixup_pkgconfig()

# Nothing is compiled: no debug/ tree may be left behind.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
