# Fuzz targets (tests/fuzz/fuzz_*.c, each an LLVMFuzzerTestOneInput).
#
# TINYSTORIES_FUZZ:        fuzz_<name> executables linked with libFuzzer.
# TINYSTORIES_BUILD_TESTS: replay_<name> executables (the same target with a
#                          plain main) and a ctest per target that replays the
#                          committed seed corpus and every saved crash input.
set(TS_FUZZ_TARGETS model tokenizer encode decode)
set(TS_FUZZ_DIR ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz)

foreach(name IN LISTS TS_FUZZ_TARGETS)
  if(TINYSTORIES_FUZZ)
    add_executable(fuzz_${name} ${TS_FUZZ_DIR}/fuzz_${name}.c)
    target_link_libraries(fuzz_${name} PRIVATE tinystories_core)
    target_compile_options(fuzz_${name} PRIVATE -Wall -Wextra)
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
  elseif(TINYSTORIES_BUILD_TESTS)
    add_executable(replay_${name} ${TS_FUZZ_DIR}/fuzz_${name}.c ${TS_FUZZ_DIR}/replay_main.c)
    target_link_libraries(replay_${name} PRIVATE tinystories_core)
    target_compile_options(replay_${name} PRIVATE -Wall -Wextra)
    add_test(NAME fuzz_replay_${name}
             COMMAND replay_${name} ${TS_FUZZ_DIR}/corpus/${name} ${TS_FUZZ_DIR}/regressions/${name})
    if(TINYSTORIES_TEST_MODEL_DIR)
      set_tests_properties(fuzz_replay_${name} PROPERTIES
        ENVIRONMENT "TS_FUZZ_TOKENIZER=${TINYSTORIES_TEST_MODEL_DIR}/tok105.bin")
    endif()
  endif()
endforeach()
