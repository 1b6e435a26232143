# Warnings and sanitizers for ppipe's own executables (tests, examples, benchmarks). They are never
# put on the exported targets: a user's flags are the user's business.
include_guard(GLOBAL)

set(_ppipe_warning_flags
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-compare -Wnon-virtual-dtor
  -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wnull-dereference -Wdouble-promotion)

# ppipe_target_defaults(<target>): warnings (errors under PPIPE_WARNINGS_AS_ERRORS) and sanitizers.
function(ppipe_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${_ppipe_warning_flags}>)
  if(PPIPE_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-Werror>
      $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
  endif()
  if(PPIPE_SANITIZE)
    set(_san -fsanitize=${PPIPE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${_san}>)
    target_link_options(${target} PRIVATE ${_san})
  endif()
endfunction()
