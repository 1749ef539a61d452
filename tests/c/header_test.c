/* budget.h compiles as strict C99 with every warning an error, on its own (no other include
 * first), and its version macros are usable in the preprocessor. */
#include <budget/budget.h>
#include <budget/budget.h> /* include guard */

#if !BUDGET_VERSION_CHECK(0, 0, 0)
#error "BUDGET_VERSION_CHECK"
#endif
#if !defined(BUDGET_VERSION_MAJOR) || !defined(BUDGET_VERSION_MINOR) || !defined(BUDGET_VERSION_PATCH)
#error "version macros"
#endif

/* Every *_INIT macro is a valid initialiser. */
static int use_inits(void) {
  budget_usage u = BUDGET_USAGE_INIT;
  budget_model_price p = BUDGET_MODEL_PRICE_INIT;
  budget_markup mk = BUDGET_MARKUP_INIT;
  budget_cost_options co = BUDGET_COST_OPTIONS_INIT;
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_limit l = BUDGET_LIMIT_INIT;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_ledger_query q = BUDGET_LEDGER_QUERY_INIT;
  return (int)(u.version + p.version + mk.version + co.version + o.version + l.version + e.version + c.version +
               ro.version + q.version);
}

int main(void) {
  /* Referencing functions proves the declarations link against the library. */
  const char *(*v)(void) = budget_version;
  const int versions = BUDGET_USAGE_VERSION + BUDGET_MODEL_PRICE_VERSION + BUDGET_MARKUP_VERSION +
                       BUDGET_COST_OPTIONS_VERSION + BUDGET_OPTIONS_VERSION + BUDGET_LIMIT_VERSION +
                       BUDGET_ESTIMATE_VERSION + BUDGET_CHARGE_VERSION + BUDGET_REQUEST_OPTIONS_VERSION +
                       BUDGET_LEDGER_QUERY_VERSION;
  return use_inits() == versions && v != 0 && budget_version_number() == BUDGET_VERSION_NUMBER ? 0 : 1;
}
