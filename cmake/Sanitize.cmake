# Sanitizer and fuzzing builds (issue 7). Included before any target is made,
# so the flags reach the library, the CLI, the tests and the extension alike.
#
#   -DTINYSTORIES_SANITIZE=ON  AddressSanitizer (with LeakSanitizer) and
#                              UndefinedBehaviorSanitizer, every report fatal.
#   -DTINYSTORIES_FUZZ=ON      the libFuzzer targets in tests/fuzz (clang only);
#                              implies the sanitizers and coverage instrumentation.
option(TINYSTORIES_SANITIZE "Build with AddressSanitizer + UndefinedBehaviorSanitizer" OFF)
option(TINYSTORIES_FUZZ "Build the libFuzzer targets in tests/fuzz (needs clang)" OFF)
#   -DTINYSTORIES_TSAN=ON      ThreadSanitizer instead (the pool, the decode
#                              team's barriers, sessions on many threads).
option(TINYSTORIES_TSAN "Build with ThreadSanitizer" OFF)

set(TS_SANITIZE_FLAGS
  -fsanitize=address,undefined,float-cast-overflow
  -fno-sanitize-recover=all
  -fno-omit-frame-pointer
  -g)

if(TINYSTORIES_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TINYSTORIES_FUZZ needs clang (libFuzzer): configure with CC=clang CXX=clang++")
  endif()
  add_compile_options(${TS_SANITIZE_FLAGS} -fsanitize=fuzzer-no-link)
  add_link_options(-fsanitize=address,undefined)
elseif(TINYSTORIES_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=thread)
elseif(TINYSTORIES_SANITIZE)
  add_compile_options(${TS_SANITIZE_FLAGS})
  add_link_options(-fsanitize=address,undefined)
endif()
