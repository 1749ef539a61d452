/* The README's C example, verbatim between the README:begin and README:end markers (the test
 * c_example_readme checks that it matches README.md), run on a fresh SQLite file; then the
 * spend it committed is read back. */
#include <stdio.h>
#include <budget/budget.h>

static int readme_example(void) {
  /* README:begin */
  budget_manager *m = NULL;
  budget_options opts = BUDGET_OPTIONS_INIT;
  budget_limit lim = BUDGET_LIMIT_INIT;
  const char *subject[] = {"tenant:acme", "user:alice"};
  budget_estimate est = BUDGET_ESTIMATE_INIT;
  budget_decision *d = NULL;
  budget_receipt *r = NULL;
  budget_charge actual = BUDGET_CHARGE_INIT;

  if (budget_manager_open(&m, "sqlite:budget.db", &opts) != BUDGET_OK) {
    fprintf(stderr, "%s\n", budget_last_error());
    return 1;
  }
  lim.scope = "user:*"; lim.window = "day";
  budget_money_parse(&lim.amount, "1.00");
  budget_set_limit(m, &lim);
  est.cost_nanos = 50000000;                                 /* $0.05 */
  if (budget_reserve(&d, m, subject, 2, &est, NULL) == BUDGET_OK && d->allowed) {
    actual.cost_nanos = 42000000;
    budget_commit(&r, m, d->request_id, &actual);
    budget_free(r);
  }
  budget_free(d);
  budget_manager_close(m);
  /* README:end */
  return 0;
}

int main(void) {
  budget_manager *m = NULL;
  budget_limit_status_list *st = NULL;
  int ok;
  remove("budget.db");
  remove("budget.db-wal");
  remove("budget.db-shm");
  if (readme_example() != 0) return 1;
  if (budget_manager_open(&m, "sqlite:budget.db", NULL) != BUDGET_OK ||
      budget_scope_status(&st, m, "user:alice") != BUDGET_OK) {
    fprintf(stderr, "%s\n", budget_last_error());
    return 1;
  }
  ok = st->count == 1 && st->items[0]->spent == 42000000 && st->items[0]->limit == 1000000000;
  printf("user:alice: %zu limit(s), spent %lld nanos of %lld\n", st->count,
         st->count ? (long long)st->items[0]->spent : 0LL, st->count ? (long long)st->items[0]->limit : 0LL);
  budget_free(st);
  budget_manager_close(m);
  return ok ? 0 : 1;
}
