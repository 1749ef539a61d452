// UTF-8 validation shared by the id checks (scope.cpp), the ledger text checks (engine.cpp)
// and the JSON writers (json_text.hpp).
#pragma once

#include <string_view>

namespace budget::detail {

// Well-formed UTF-8 (no overlong forms, surrogates or C1 controls).
bool valid_utf8(std::string_view s) noexcept;
// Well-formed UTF-8, C1 controls allowed: what nlohmann::json reads and writes (json_text.hpp).
bool well_formed_utf8(std::string_view s) noexcept;

}  // namespace budget::detail
