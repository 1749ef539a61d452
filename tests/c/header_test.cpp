// budget.h is usable from C++ too (extern "C", no C-only constructs), beside the C++ API.
#include <budget/budget.h>
#include <budget/budget.hpp>

int main() {
  budget_options o = BUDGET_OPTIONS_INIT;
  return o.version == BUDGET_OPTIONS_VERSION && budget_version_number() == BUDGET_VERSION_NUMBER ? 0 : 1;
}
