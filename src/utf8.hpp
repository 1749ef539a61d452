// UTF-8 validation shared by the id checks (scope.cpp) and the ledger text checks (engine.cpp).
#pragma once

#include <string_view>

namespace budget::detail {

// Well-formed UTF-8 (no overlong forms, surrogates or C1 controls).
bool valid_utf8(std::string_view s) noexcept;

}  // namespace budget::detail
