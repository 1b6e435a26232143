# The tools refuse what they cannot do: each test runs one with bad input and checks its exit status
# (2: the input was wrong, 1: the run failed) and its message (support/expect_failure.cmake).

# ppipe_expect_failure(<name> STATUS <n|nonzero> EXPECT <regex> [EACH <values...>] [REJECT <regex>] [REJECT_CONTROL]
#                      [TIMEOUT <s>] [LABELS <labels...>] [PROCESSORS <n>] [ENVIRONMENT <vars...>]
#                      COMMAND <program> <args...>)
function(ppipe_expect_failure name)
  cmake_parse_arguments(arg "REJECT_CONTROL" "STATUS;EXPECT;REJECT;TIMEOUT;PROCESSORS" "COMMAND;EACH;LABELS;ENVIRONMENT"
                        ${ARGN})
  if(NOT arg_LABELS)
    set(arg_LABELS host example)
  endif()
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 30)
  endif()
  list(JOIN arg_COMMAND "|" command)
  set(extra "")
  if(arg_EACH)
    list(JOIN arg_EACH "|" each)
    list(APPEND extra "-DEACH=${each}")
  endif()
  if(DEFINED arg_REJECT)
    list(APPEND extra "-DREJECT=${arg_REJECT}")
  endif()
  if(arg_REJECT_CONTROL)
    list(APPEND extra -DREJECT_CONTROL=ON)
  endif()
  math(EXPR script_timeout "${arg_TIMEOUT} - 10")
  add_test(NAME ${name}
    COMMAND ${CMAKE_COMMAND} "-DCOMMAND=${command}" "-DSTATUS=${arg_STATUS}" "-DEXPECT=${arg_EXPECT}" ${extra}
            -DTIMEOUT=${script_timeout} -P "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/support/expect_failure.cmake")
  set_tests_properties(${name} PROPERTIES LABELS "${arg_LABELS}" TIMEOUT ${arg_TIMEOUT})
  if(arg_PROCESSORS)
    set_tests_properties(${name} PROPERTIES PROCESSORS ${arg_PROCESSORS})
  endif()
  if(arg_ENVIRONMENT)
    set_tests_properties(${name} PROPERTIES ENVIRONMENT "${arg_ENVIRONMENT}")
  endif()
endfunction()

# --- ppipe-train: numbers that do not fit, text that is no number, sizes past the memory ----------
set(_train $<TARGET_FILE:ppipe_train>)
ppipe_expect_failure(example.train.ranks_past_32_bits STATUS 2
  EXPECT "ppipe-train: --ranks: \"4294967297\" is out of range. give a whole number from 1 to 2147483647"
  COMMAND ${_train} --ranks 4294967297)
ppipe_expect_failure(example.train.microbatches_past_32_bits STATUS 2
  EXPECT "ppipe-train: --microbatches: \"4294967312\" is out of range"
  COMMAND ${_train} -m 4294967312)
ppipe_expect_failure(example.train.ranks_past_64_bits STATUS 2
  EXPECT "ppipe-train: --ranks: \"99999999999999999999\" is out of range"
  COMMAND ${_train} --ranks 99999999999999999999)
ppipe_expect_failure(example.train.lr_not_a_number STATUS 2
  EXPECT "ppipe-train: --lr: \"abc\" is not a number. give a number from 0 to"
  COMMAND ${_train} --lr abc)
ppipe_expect_failure(example.train.steps_zero STATUS 2
  EXPECT "ppipe-train: --steps: \"0\" is out of range. give a whole number from 1 to"
  COMMAND ${_train} --steps 0)
foreach(_size IN ITEMS "batch 1000000000000" "inputs 2147483647" "width 2147483647" "hidden 1073741823")
  string(REPLACE " " ";" _size "${_size}")
  list(GET _size 0 _option)
  list(GET _size 1 _value)
  ppipe_expect_failure(example.train.${_option}_past_memory STATUS 2
    EXPECT "ppipe-train: \\[ppipe.out_of_memory\\] training an MLP [^\n]*--${_option} ${_value}[^\n]* needs (about [0-9.]+ [KMGTPE]iB|more than 16 EiB), more than this machine's [0-9.]+ [KMGTPE]iB of memory. [^\n]*--${_option}"
    COMMAND ${_train} --${_option} ${_value})
endforeach()
ppipe_expect_failure(example.train.bad_batch STATUS 2
  EXPECT "ppipe-train: --microbatches 8 is more than the 4 rows of --batch, and every microbatch needs a row"
  COMMAND ${_train} --batch 4 --microbatches 8 --steps 1)
ppipe_expect_failure(example.train.more_stages_than_layers STATUS 2
  EXPECT "ppipe-train: 100000 ranks x 1 stages per rank = 100000 stages, but the MLP has 9 layers"
  COMMAND ${_train} --ranks 100000)
ppipe_expect_failure(example.train.trace_folder_missing STATUS 2
  EXPECT "ppipe-train: \\[ppipe.invalid_argument\\] --trace \"/nonexistent/dir/x.json\" cannot be written: the folder \"/nonexistent/dir\" does not exist"
  COMMAND ${_train} --steps 1 --trace /nonexistent/dir/x.json)
# A schedule file: a typo, a schedule that does not run, forward only, missing, or given with what it decides.
file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/train-backward-first.csv" "0B0,0F0\n,1F0,1B0\n")
file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/train-forward-only.csv" "0F0,0F1\n,1F0,1F1\n")
ppipe_expect_failure(example.train.schedule_file_typo STATUS 2
  EXPECT "ppipe-train: \\[ppipe.parse_error\\] [^\n]*plan-bad.csv: line 2, cell 3: cannot read action \"1X0\""
  COMMAND ${_train} --schedule-file ${_plan_bad_csv})
ppipe_expect_failure(example.train.schedule_file_invalid STATUS 2
  EXPECT "ppipe-train: \\[ppipe.invalid_schedule\\] [^\n]*train-backward-first.csv: [^\n]*0B0 \\(backward of stage 0, microbatch 0\\) runs before 0F0"
  COMMAND ${_train} --schedule-file "${CMAKE_CURRENT_BINARY_DIR}/train-backward-first.csv")
ppipe_expect_failure(example.train.schedule_file_forward_only STATUS 2
  EXPECT "ppipe-train: \\[ppipe.invalid_argument\\] pipeline_options::schedule \"train-forward-only.csv\" is an inference \\(forward-only\\) schedule. give a training schedule"
  COMMAND ${_train} --schedule-file "${CMAKE_CURRENT_BINARY_DIR}/train-forward-only.csv")
ppipe_expect_failure(example.train.schedule_file_missing STATUS 2
  EXPECT "ppipe-train: \\[ppipe.invalid_argument\\] cannot open schedule file \"/nonexistent/dir/x.csv\""
  COMMAND ${_train} --schedule-file /nonexistent/dir/x.csv)
ppipe_expect_failure(example.train.schedule_file_with_numbers STATUS 2
  EXPECT "ppipe-train: --schedule-file trains the file's schedule \\(its ranks, stages per rank and microbatches\\)[^\n]*leave out --ranks, --microbatches"
  COMMAND ${_train} --schedule-file ${_plan_csv} -m 4 -p 2)
ppipe_expect_failure(example.train.schedule_and_schedule_file STATUS 2
  EXPECT "ppipe-train: --schedule excludes --schedule-file"
  COMMAND ${_train} --schedule-file ${_plan_csv} --schedule 1f1b)
ppipe_expect_failure(example.train.unknown_option STATUS 2
  EXPECT "ppipe-train: The following arguments? (was|were) not expected: [^\n]*--bacth"
  COMMAND ${_train} --bacth 64)

# --- ppipe-generate ------------------------------------------------------------------------------
set(_generate $<TARGET_FILE:ppipe_generate>)
ppipe_expect_failure(example.generate.ranks_past_32_bits STATUS 2
  EXPECT "ppipe-generate: --ranks: \"4294967297\" is out of range. give a whole number from 1 to 2147483647"
  COMMAND ${_generate} --ranks 4294967297)
ppipe_expect_failure(example.generate.seed_negative STATUS 2
  EXPECT "ppipe-generate: --seed: \"-1\" is out of range. give a whole number from 0 to 18446744073709551615"
  COMMAND ${_generate} --seed -1)
ppipe_expect_failure(example.generate.vocab_past_token_ids STATUS 2
  EXPECT "ppipe-generate: --vocab: \"2147483647\" is out of range. give a whole number from 1 to 16777216"
  COMMAND ${_generate} --vocab 2147483647)
ppipe_expect_failure(example.generate.max_new_past_positions STATUS 2
  EXPECT "ppipe-generate: --max-new: \"239\" is out of range. give a whole number from 1 to 238"
  COMMAND ${_generate} --max-new 239)
foreach(_size IN ITEMS "requests 2147483647" "blocks 1073741822" "d-model 2147483644")
  string(REPLACE " " ";" _size "${_size}")
  list(GET _size 0 _option)
  list(GET _size 1 _value)
  ppipe_expect_failure(example.generate.${_option}_past_memory STATUS 2
    EXPECT "ppipe-generate: \\[ppipe.out_of_memory\\] [^\n]*--${_option} ${_value}[^\n]* needs (about [0-9.]+ [KMGTPE]iB|more than 16 EiB), more than this machine's [0-9.]+ [KMGTPE]iB of memory. [^\n]*--${_option}"
    COMMAND ${_generate} --${_option} ${_value})
endforeach()
ppipe_expect_failure(example.generate.more_ranks_than_layers STATUS 2
  EXPECT "ppipe-generate: --ranks 11, but the decoder has 10 layers \\(--blocks 4 gives 2x4\\+2\\)"
  COMMAND ${_generate} --ranks 11)
ppipe_expect_failure(example.generate.trace_folder_missing STATUS 2
  EXPECT "ppipe-generate: \\[ppipe.invalid_argument\\] --trace \"/nonexistent/dir/x.json\" cannot be written: the folder \"/nonexistent/dir\" does not exist"
  COMMAND ${_generate} --trace /nonexistent/dir/x.json)

# --- ppipe-gallery ---------------------------------------------------------------------------------
ppipe_expect_failure(example.gallery.usage STATUS 2
  EXPECT "ppipe-gallery: DIR is required"
  COMMAND $<TARGET_FILE:ppipe_gallery>)
ppipe_expect_failure(example.gallery.folder_not_created STATUS 2
  EXPECT "ppipe-gallery: \\[ppipe.invalid_argument\\] cannot create the directory \"[^\"]*/plan-1f1b.csv/gallery\""
  COMMAND $<TARGET_FILE:ppipe_gallery> ${_plan_csv}/gallery)

# --- ppipe-mpi-train: a failure on one process ends the job, with every process's own message -----
if(PPIPE_ENABLE_MPI)
  set(_mpi_train ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG})
  # Each process checks its own trace file before training: all four say so and the job ends,
  # where process 0 once finalized and the others waited in a barrier for ever.
  ppipe_expect_failure(example.mpi_train.trace_folder_missing STATUS nonzero TIMEOUT 60 LABELS mpi example
    EXPECT "ppipe-mpi-train: process <each>: \\[ppipe.invalid_argument\\] --trace \"/nonexistent/dir/x.rank<each>.json\" cannot be written: the folder \"/nonexistent/dir\" does not exist"
    EACH 0 1 2 3
    PROCESSORS 4 ENVIRONMENT ${PPIPE_MPI_TEST_ENVIRONMENT}
    COMMAND ${_mpi_train} 4 ${MPIEXEC_PREFLAGS} $<TARGET_FILE:ppipe_mpi_train> ${MPIEXEC_POSTFLAGS}
            --steps 2 --trace /nonexistent/dir/x)
  ppipe_expect_failure(example.mpi_train.batch_past_memory STATUS nonzero TIMEOUT 60 LABELS mpi example
    EXPECT "ppipe-mpi-train: process <each>: \\[ppipe.out_of_memory\\] running 2 processes on this machine, each training an MLP [^\n]*--batch 1000000000000 rows, needs about [0-9.]+ [KMGTPE]iB, more than this machine's"
    EACH 0 1
    PROCESSORS 4 ENVIRONMENT ${PPIPE_MPI_TEST_ENVIRONMENT}
    COMMAND ${_mpi_train} 2 ${MPIEXEC_PREFLAGS} $<TARGET_FILE:ppipe_mpi_train> ${MPIEXEC_POSTFLAGS}
            --batch 1000000000000)
  ppipe_expect_failure(example.mpi_train.microbatches_past_32_bits STATUS nonzero TIMEOUT 60 LABELS mpi example
    EXPECT "ppipe-mpi-train: --microbatches: \"4294967312\" is out of range"
    PROCESSORS 4 ENVIRONMENT ${PPIPE_MPI_TEST_ENVIRONMENT}
    COMMAND ${_mpi_train} 2 ${MPIEXEC_PREFLAGS} $<TARGET_FILE:ppipe_mpi_train> ${MPIEXEC_POSTFLAGS}
            -m 4294967312)
  # A schedule file that no process can read, and one of other ranks than the processes: every
  # process says so.
  ppipe_expect_failure(example.mpi_train.schedule_file_typo STATUS nonzero TIMEOUT 60 LABELS mpi example
    EXPECT "ppipe-mpi-train: process <each>: \\[ppipe.parse_error\\] [^\n]*plan-bad.csv: line 2, cell 3"
    EACH 0 1
    PROCESSORS 2 ENVIRONMENT ${PPIPE_MPI_TEST_ENVIRONMENT}
    COMMAND ${_mpi_train} 2 ${MPIEXEC_PREFLAGS} $<TARGET_FILE:ppipe_mpi_train> ${MPIEXEC_POSTFLAGS}
            --schedule-file ${_plan_bad_csv})
  ppipe_expect_failure(example.mpi_train.schedule_file_other_ranks STATUS nonzero TIMEOUT 60 LABELS mpi example
    EXPECT "ppipe-mpi-train: process <each>: [^\n]*pipeline_options::schedule \"zb_h1_p4_m8.csv\" has p=4 ranks but the transport has 2 ranks"
    EACH 0 1
    PROCESSORS 2 ENVIRONMENT ${PPIPE_MPI_TEST_ENVIRONMENT}
    COMMAND ${_mpi_train} 2 ${MPIEXEC_PREFLAGS} $<TARGET_FILE:ppipe_mpi_train> ${MPIEXEC_POSTFLAGS}
            --schedule-file ${CMAKE_CURRENT_SOURCE_DIR}/plans/zb_h1_p4_m8.csv --steps 1 --no-trace)
  ppipe_expect_failure(example.mpi_train.check_with_replicas STATUS nonzero TIMEOUT 60 LABELS mpi example
    EXPECT "ppipe-mpi-train: --check compares one pipeline with the host backend. drop --replicas 2"
    PROCESSORS 4 ENVIRONMENT ${PPIPE_MPI_TEST_ENVIRONMENT}
    COMMAND ${_mpi_train} 2 ${MPIEXEC_PREFLAGS} $<TARGET_FILE:ppipe_mpi_train> ${MPIEXEC_POSTFLAGS}
            --replicas 2 --check)
endif()

# --- ppipe-plan: non-zero whenever nothing was planned or written, and echoes that stay short ------
set(_plan $<TARGET_FILE:ppipe_plan>)
ppipe_expect_failure(example.plan.ranks_zero STATUS 2
  EXPECT "ppipe-plan: --ranks: \"0\" is out of range. give a whole number from 1 to 2147483647"
  COMMAND ${_plan} -p 0)
ppipe_expect_failure(example.plan.microbatches_zero STATUS 2
  EXPECT "ppipe-plan: --microbatches: \"0\" is out of range"
  COMMAND ${_plan} -m 0)
ppipe_expect_failure(example.plan.microbatches_past_32_bits STATUS 2
  EXPECT "ppipe-plan: --microbatches: \"4294967312\" is out of range"
  COMMAND ${_plan} -m 4294967312)
ppipe_expect_failure(example.plan.forward_zero STATUS 2
  EXPECT "ppipe-plan: --forward: time 1 of the list: \"0\" is out of range. give a number above 0"
  COMMAND ${_plan} --forward 0)
ppipe_expect_failure(example.plan.nothing_planned STATUS 2
  EXPECT "== zb_v: not possible with these numbers: --forward lists 3 costs.*ppipe-plan: \\[ppipe.invalid_argument\\] no schedule could be planned with these numbers"
  COMMAND ${_plan} --forward 1,1,1 --no-timeline)
ppipe_expect_failure(example.plan.past_memory STATUS 2
  EXPECT "== gpipe: not possible with these numbers: planning gpipe with p=2147483647, m=2147483647 and v=1 needs more than 16 EiB.*no schedule could be planned"
  COMMAND ${_plan} -p 2147483647 -m 2147483647 --no-timeline)
# No split fits 8GiB cards: each schedule says so, and the run fails.
ppipe_expect_failure(example.plan.split_no_fit STATUS 2
  EXPECT "== 1f1b: does not fit: no split of the 26 layers.*ppipe-plan: \\[ppipe.out_of_memory\\] no schedule could be planned: no split fits in memory"
  COMMAND ${_plan} --model ${_mixed_gpus} --devices 1:8GiB,0.6:8GiB)
ppipe_expect_failure(example.plan.svg_folder_missing STATUS 2
  EXPECT "ppipe-plan: \\[ppipe.invalid_argument\\] --svg \"/nonexistent/dir\" is not a folder that exists"
  REJECT "not possible"
  COMMAND ${_plan} --no-timeline --svg /nonexistent/dir)
ppipe_expect_failure(example.plan.svg_file_folder_missing STATUS 2
  EXPECT "ppipe-plan: \\[ppipe.invalid_argument\\] --svg \"/nonexistent/dir/1f1b.svg\" cannot be written: the folder \"/nonexistent/dir\" does not exist"
  COMMAND ${_plan} --schedule 1f1b --svg /nonexistent/dir/1f1b.svg)
ppipe_expect_failure(example.plan.schedule_file_with_microbatches STATUS 2
  EXPECT "ppipe-plan: --schedule-file plans the file's schedule \\(its ranks, stages and microbatches\\)[^\n]*leave out --schedule, -p, -m, -v"
  COMMAND ${_plan} --schedule-file ${_plan_csv} -m 4)
ppipe_expect_failure(example.plan.model_not_text STATUS 2
  EXPECT "ppipe-plan: \\[ppipe.parse_error\\] the model file \"/dev/zero\" is larger than 64.0 MiB"
  COMMAND ${_plan} --model /dev/zero)

# A 10 MB line and control bytes, in a model file and in a schedule file: the message shows the
# start of the line, escaped, and not the rest. (An unmatched [ in an argument would join the
# arguments after it into one list item: the regexes match it with a dot.)
set(_inputs "${CMAKE_CURRENT_BINARY_DIR}/cli-inputs")
string(REPEAT "x" 200 _x200)
if(NOT EXISTS "${_inputs}/long_line.csv")
  string(REPEAT "x" 10000000 _x10m)
  file(WRITE "${_inputs}/long_line.txt" "layer ${_x10m}\n")
  file(WRITE "${_inputs}/long_line.csv" "0F0,${_x10m}\n")
  unset(_x10m)
endif()
string(ASCII 27 _esc)
string(ASCII 255 _ff)
string(ASCII 1 _soh)
file(WRITE "${_inputs}/binary.txt" "${_esc}[2J${_ff}${_soh} junk\n")
file(WRITE "${_inputs}/binary.csv" "0F0,${_esc}[31m\n")
ppipe_expect_failure(example.plan.model_long_line STATUS 2
  EXPECT "long_line.txt:1: expected layer NAME FORWARD BACKWARD [^\n]*, not \"layer xxxxxxxxxx[x]*\\.\\.\\.\"\n"
  REJECT "${_x200}"
  COMMAND ${_plan} --model "${_inputs}/long_line.txt")
ppipe_expect_failure(example.plan.model_binary STATUS 2
  EXPECT "binary.txt:1: expected [^\n]*, not \"\\\\x1b.2J\\\\xff\\\\x01 junk\""
  REJECT_CONTROL
  COMMAND ${_plan} --model "${_inputs}/binary.txt")
ppipe_expect_failure(example.plan.schedule_file_long_line STATUS 2
  EXPECT "\\[ppipe.parse_error\\] [^\n]*long_line.csv: line 1, cell 2[^\n]* is 10000000 characters"
  REJECT "${_x200}"
  COMMAND ${_plan} --schedule-file "${_inputs}/long_line.csv")
ppipe_expect_failure(example.plan.schedule_file_binary STATUS 2
  EXPECT "\\[ppipe.parse_error\\] [^\n]*binary.csv: [^\n]*\\\\x1b.31m"
  REJECT_CONTROL
  COMMAND ${_plan} --schedule-file "${_inputs}/binary.csv")
