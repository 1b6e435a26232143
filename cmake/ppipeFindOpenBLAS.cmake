# ppipe_find_openblas(<prefix>): finds OpenBLAS as ppipe::blas uses it, in ppipe's own build and in
# a consumer's find_package(ppipe COMPONENTS blas) alike:
#   - the library through CMake's FindBLAS (BLA_VENDOR OpenBLAS, 32-bit integers), which defines
#     the imported target BLAS::BLAS;
#   - the directory of its cblas.h, recognised by the openblas_config.h beside it: ppipe calls
#     openblas_set_num_threads, which another BLAS's cblas.h does not declare.
# Sets <prefix>_FOUND, <prefix>_INCLUDE_DIR and <prefix>_REASON (why not, when not found) in the
# caller's scope. A BLAS::BLAS that the caller had already found for another vendor is kept by
# FindBLAS; linking ppipe::blas then fails on openblas_set_num_threads.
include_guard(GLOBAL)

function(ppipe_find_openblas prefix)
  # Local to this function: the caller's own BLA_* settings are left as they were.
  set(BLA_VENDOR OpenBLAS)
  set(BLA_SIZEOF_INTEGER 4)
  find_package(BLAS QUIET)
  # OpenBLAS installs its headers under include/ or include/openblas; Debian under
  # include/<multiarch>/, one directory per threading flavour below it.
  find_path(PPIPE_OPENBLAS_INCLUDE_DIR openblas_config.h
    PATH_SUFFIXES openblas openblas-pthread openblas-openmp openblas-serial
    DOC "The directory of OpenBLAS's cblas.h and openblas_config.h, for ppipe::blas")
  mark_as_advanced(PPIPE_OPENBLAS_INCLUDE_DIR)

  set(found FALSE)
  set(reason "")
  if(NOT BLAS_FOUND OR NOT TARGET BLAS::BLAS)
    string(CONCAT reason "ppipe::blas needs OpenBLAS (libopenblas), which was not found: install it "
                         "(Debian: libopenblas-dev) or add its prefix to CMAKE_PREFIX_PATH")
  elseif(NOT PPIPE_OPENBLAS_INCLUDE_DIR OR NOT EXISTS "${PPIPE_OPENBLAS_INCLUDE_DIR}/cblas.h")
    string(CONCAT reason "ppipe::blas found OpenBLAS's library but not its cblas.h (beside openblas_config.h): "
                         "set PPIPE_OPENBLAS_INCLUDE_DIR to the directory that holds both")
  else()
    set(found TRUE)
  endif()
  set(${prefix}_FOUND ${found} PARENT_SCOPE)
  set(${prefix}_INCLUDE_DIR "${PPIPE_OPENBLAS_INCLUDE_DIR}" PARENT_SCOPE)
  set(${prefix}_REASON "${reason}" PARENT_SCOPE)
endfunction()
