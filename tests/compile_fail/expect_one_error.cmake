# Runs the compiler on SOURCE and passes when it fails with exactly one error whose text holds
# EXPECTED: a ppipe message that stands alone, not the first of a cascade.
execute_process(COMMAND "${COMPILER}" -std=c++20 -fsyntax-only "-I${INCLUDE}" "${SOURCE}"
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE status)
set(text "${out}${err}")
if(status EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
string(FIND "${text}" "${EXPECTED}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the compiler did not say \"${EXPECTED}\":\n${text}")
endif()
string(REGEX MATCHALL "error:" errors "${text}")
list(LENGTH errors count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "${count} errors where the ppipe message should stand alone:\n${text}")
endif()
