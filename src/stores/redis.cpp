// Placeholder until the Redis store lands (issue 4).
#include <budget/error.hpp>

#include "store.hpp"

namespace budget::detail {
std::unique_ptr<Store> make_redis_store(const std::string& url, const StoreOptions&) {
  throw InvalidArgumentError("the Redis store is not implemented yet: " + url);
}
}  // namespace budget::detail
