// libbudget — symbol visibility. The shared library is built with hidden visibility; only
// what is marked BUDGET_API (the C++ API in namespace budget and the C ABI budget_*) is
// exported. Dependencies (fmt, nlohmann_json, SQLite, hiredis) never leak out.
#pragma once

#if defined(BUDGET_STATIC)
#  define BUDGET_API
#elif defined(_WIN32)
#  if defined(BUDGET_BUILDING)
#    define BUDGET_API __declspec(dllexport)
#  else
#    define BUDGET_API __declspec(dllimport)
#  endif
#else
#  define BUDGET_API __attribute__((visibility("default")))
#endif
