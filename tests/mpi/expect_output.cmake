# Runs PROGRAM ARGUMENT under MPIEXEC with 2 processes and checks that the job failed (its exit code
# is not 0) and that its output matches the regular expressions EXPECT_FIRST and EXPECT_SECOND.
#   cmake -DMPIEXEC=... -DNP_FLAG=-n -DPROGRAM=... -DARGUMENT=... -DEXPECT_FIRST=... -DEXPECT_SECOND=...
#         -P expect_output.cmake
execute_process(COMMAND "${MPIEXEC}" ${NP_FLAG} 2 "${PROGRAM}" ${ARGUMENT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 90)
set(all "${out}${err}")
message("${all}")
if(rc EQUAL 0)
  message(FATAL_ERROR "expected the job to fail, but it exited with 0")
endif()
foreach(want IN ITEMS "${EXPECT_FIRST}" "${EXPECT_SECOND}")
  if(NOT all MATCHES "${want}")
    message(FATAL_ERROR "the output lacks: ${want}")
  endif()
endforeach()
