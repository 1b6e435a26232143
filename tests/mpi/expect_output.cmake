# Runs PROGRAM ARGUMENT under MPIEXEC with NP processes (2 unless given) and the launcher's
# LAUNCH_FLAGS, and checks that the job failed (its exit code is not 0, unless ANY_EXIT_CODE is
# set: `mpirun --enable-recovery` exits 0 after MPI_Abort) and that its output matches the regular
# expressions EXPECT_FIRST and EXPECT_SECOND.
#   cmake -DMPIEXEC=... -DNP_FLAG=-n [-DNP=4] [-DLAUNCH_FLAGS=...] [-DANY_EXIT_CODE=ON] -DPROGRAM=...
#         -DARGUMENT=... -DEXPECT_FIRST=... -DEXPECT_SECOND=... -P expect_output.cmake
if(NOT DEFINED NP)
  set(NP 2)
endif()
execute_process(COMMAND "${MPIEXEC}" ${NP_FLAG} ${NP} ${LAUNCH_FLAGS} "${PROGRAM}" ${ARGUMENT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 90)
set(all "${out}${err}")
message("${all}")
if(rc EQUAL 0 AND NOT ANY_EXIT_CODE)
  message(FATAL_ERROR "expected the job to fail, but it exited with 0")
endif()
foreach(want IN ITEMS "${EXPECT_FIRST}" "${EXPECT_SECOND}")
  if(NOT all MATCHES "${want}")
    message(FATAL_ERROR "the output lacks: ${want}")
  endif()
endforeach()
