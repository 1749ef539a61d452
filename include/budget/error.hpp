// libbudget — errors. Every failure is an exception derived from budget::Error carrying a
// stable ErrorCode. A denial is NOT an error: it is a Decision (see manager.hpp).
#pragma once

#include <budget/export.hpp>

#include <stdexcept>
#include <string>

namespace budget {

// Stable codes, shared with the C ABI (budget_status), Python and Node (.code).
enum class ErrorCode : int {
  Ok = 0,
  InvalidArgument = 1,   // bad input: NaN, negative, overflow of a parse, malformed id/JSON
  UnknownModel = 2,      // the PricingEngine has no price for the model and no fallback
  NotFound = 3,          // unknown request id, scope or limit
  StoreUnavailable = 4,  // the store could not answer (I/O error, Redis down, busy timeout)
  Conflict = 5,          // the request id was used for a different operation or amount
  Overflow = 6,          // checked money/count arithmetic would overflow int64
  Internal = 7,          // a bug or a corrupted store
  BudgetExceeded = 8,    // only thrown by the bindings' raising convenience calls
};

BUDGET_API const char* to_string(ErrorCode code) noexcept;

class BUDGET_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

#define BUDGET_DEFINE_ERROR(Name)                                                        \
  class BUDGET_API Name##Error : public Error {                                          \
   public:                                                                               \
    explicit Name##Error(const std::string& message) : Error(ErrorCode::Name, message) {} \
  };
BUDGET_DEFINE_ERROR(InvalidArgument)
BUDGET_DEFINE_ERROR(UnknownModel)
BUDGET_DEFINE_ERROR(NotFound)
BUDGET_DEFINE_ERROR(StoreUnavailable)
BUDGET_DEFINE_ERROR(Conflict)
BUDGET_DEFINE_ERROR(Overflow)
BUDGET_DEFINE_ERROR(Internal)
#undef BUDGET_DEFINE_ERROR

// Throws the Error subclass that matches `code` (used by stores and bindings).
[[noreturn]] BUDGET_API void throw_error(ErrorCode code, const std::string& message);

}  // namespace budget
