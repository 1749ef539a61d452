#include <budget/error.hpp>

namespace budget {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::Ok: return "OK";
    case ErrorCode::InvalidArgument: return "INVALID_ARGUMENT";
    case ErrorCode::UnknownModel: return "UNKNOWN_MODEL";
    case ErrorCode::NotFound: return "NOT_FOUND";
    case ErrorCode::StoreUnavailable: return "STORE_UNAVAILABLE";
    case ErrorCode::Conflict: return "CONFLICT";
    case ErrorCode::Overflow: return "OVERFLOW";
    case ErrorCode::Internal: return "INTERNAL";
    case ErrorCode::BudgetExceeded: return "BUDGET_EXCEEDED";
  }
  return "UNKNOWN";
}

void throw_error(ErrorCode code, const std::string& message) {
  switch (code) {
    case ErrorCode::InvalidArgument: throw InvalidArgumentError(message);
    case ErrorCode::UnknownModel: throw UnknownModelError(message);
    case ErrorCode::NotFound: throw NotFoundError(message);
    case ErrorCode::StoreUnavailable: throw StoreUnavailableError(message);
    case ErrorCode::Conflict: throw ConflictError(message);
    case ErrorCode::Overflow: throw OverflowError(message);
    default: throw InternalError(message);
  }
}

}  // namespace budget
