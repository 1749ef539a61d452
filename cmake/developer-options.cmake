# Developer options: off by default so consumers never inherit sanitizers or -Werror.
option(BUDGET_DEVELOPER_MODE "Warnings as errors and sanitizers (see BUDGET_SANITIZE)" OFF)
set(BUDGET_SANITIZE "address,undefined" CACHE STRING
    "Sanitizers in developer mode: 'address,undefined', 'thread' or '' (none)")

# GCC 12 at -O2 warns -Wrestrict inside libstdc++'s std::string operator+ (a false positive,
# GCC bug 105329): a wall of warnings in every optimised build (demo.sh, pip, npm) that says
# nothing about this code. Off for GCC < 13 only.
function(budget_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
    -Wno-sign-conversion -Wno-missing-field-initializers $<$<BOOL:${BUDGET_DEVELOPER_MODE}>:-Werror>
    $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-restrict>)
endfunction()

if(BUDGET_DEVELOPER_MODE AND BUDGET_SANITIZE)
  message(STATUS "budget: developer mode with -fsanitize=${BUDGET_SANITIZE}")
  add_compile_options(-fsanitize=${BUDGET_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${BUDGET_SANITIZE})
endif()
