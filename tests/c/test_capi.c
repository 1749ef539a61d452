/* libbudget C API tests, written in C (C99). One process per test name: test_capi <name>.
 * Every function of budget.h is called; every error path checks the documented status,
 * budget_last_status() and a non-empty budget_last_error(). Runs clean under ASan/LSan. */
#define _POSIX_C_SOURCE 200809L

#include <budget/budget.h>

#include "test_driver.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BUDGET_TEST_TMP_DIR
#error "BUDGET_TEST_TMP_DIR must be defined"
#endif
#ifndef BUDGET_SHARED_DATA_DIR
#error "BUDGET_SHARED_DATA_DIR must be defined"
#endif
#ifndef BUDGET_TEST_DATA_DIR
#error "BUDGET_TEST_DATA_DIR must be defined"
#endif

static int g_failures = 0;

#define CHECK(cond)                                                                       \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "%s:%d: CHECK(%s) failed [last error: %s]\n", __FILE__, __LINE__, #cond, \
              budget_last_error());                                                       \
      ++g_failures;                                                                       \
    }                                                                                     \
  } while (0)

#define OK(call)                                                                          \
  do {                                                                                    \
    budget_status st_ = (call);                                                           \
    if (st_ != BUDGET_OK) {                                                               \
      fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,                 \
              budget_status_name(st_), budget_last_error());                              \
      ++g_failures;                                                                       \
    } else {                                                                              \
      CHECK(budget_last_status() == BUDGET_OK);                                           \
      CHECK(budget_last_error()[0] == '\0');                                              \
    }                                                                                     \
  } while (0)

/* The call fails with `code`, and the thread's status and message say so. */
#define ERR(code, call)                                                                   \
  do {                                                                                    \
    budget_status st_ = (call);                                                           \
    if (st_ != (code)) {                                                                  \
      fprintf(stderr, "%s:%d: %s -> %s (expected %s): %s\n", __FILE__, __LINE__, #call,  \
              budget_status_name(st_), budget_status_name(code), budget_last_error());    \
      ++g_failures;                                                                       \
    } else {                                                                              \
      CHECK(budget_last_status() == (code));                                              \
      CHECK(budget_last_error()[0] != '\0');                                              \
    }                                                                                     \
  } while (0)

#define NANOS(units) ((int64_t)(units) * 1000000000LL)

static const char *const ALICE[] = {"tenant:acme", "user:alice"};
static const char *const BOB[] = {"tenant:acme", "user:bob"};

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = (char *)malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) {
    buf[n] = '\0';
    *len = (size_t)n;
  }
  return buf;
}

static size_t count_lines(const char *s) {
  size_t n = 0;
  for (; *s; ++s)
    if (*s == '\n') ++n;
  return n;
}

static budget_manager *open_memory(const budget_options *opts) {
  budget_manager *m = NULL;
  OK(budget_manager_open(&m, "memory", opts));
  CHECK(m != NULL);
  return m;
}

static void set_cost_limit(budget_manager *m, const char *scope, const char *window, int64_t nanos) {
  budget_limit l = BUDGET_LIMIT_INIT;
  l.scope = scope;
  l.window = window;
  l.amount = nanos;
  OK(budget_set_limit(m, &l));
}

static int64_t fake_clock(void *user_data) { return *(const int64_t *)user_data; }

/* ---- version, errors, memory, money ---------------------------------------------------- */

static void test_version(void) {
  CHECK(strcmp(budget_version(), BUDGET_VERSION_STRING) == 0);
  CHECK(budget_version_number() == BUDGET_VERSION_NUMBER);
  CHECK(budget_version_number() ==
        BUDGET_VERSION_MAJOR * 10000 + BUDGET_VERSION_MINOR * 100 + BUDGET_VERSION_PATCH);
  CHECK(BUDGET_VERSION_CHECK(0, 1, 0));
  CHECK(!BUDGET_VERSION_CHECK(BUDGET_VERSION_MAJOR + 1, 0, 0));
}

static void *other_thread(void *arg) {
  int64_t v = 0;
  (void)arg;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_parse(&v, "not money"));
  return NULL;
}

static void test_errors(void) {
  int64_t v = 1;
  pthread_t t;
  CHECK(strcmp(budget_status_name(BUDGET_OK), "OK") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_INVALID_ARGUMENT), "INVALID_ARGUMENT") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_UNKNOWN_MODEL), "UNKNOWN_MODEL") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_NOT_FOUND), "NOT_FOUND") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_STORE_UNAVAILABLE), "STORE_UNAVAILABLE") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_CONFLICT), "CONFLICT") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_OVERFLOW), "OVERFLOW") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_INTERNAL), "INTERNAL") == 0);
  CHECK(strcmp(budget_status_name(BUDGET_ERR_BUDGET_EXCEEDED), "BUDGET_EXCEEDED") == 0);
  CHECK(strcmp(budget_status_name((budget_status)42), "UNKNOWN") == 0);
  CHECK(strcmp(budget_status_name((budget_status)-1), "UNKNOWN") == 0);

  /* A failure sets the message; a success clears it. */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_parse(&v, "1.2.3"));
  CHECK(v == 0);
  CHECK(strstr(budget_last_error(), "1.2.3") != NULL);
  OK(budget_money_parse(&v, "1"));
  CHECK(budget_last_error()[0] == '\0');

  /* The message is per thread: another thread's failure leaves ours alone. */
  ERR(BUDGET_ERR_OVERFLOW, budget_money_parse(&v, "99999999999"));
  CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(budget_last_status() == BUDGET_ERR_OVERFLOW);
  CHECK(strstr(budget_last_error(), "not money") == NULL);

  budget_free(NULL); /* a no-op */
}

static void test_money(void) {
  int64_t v = 0;
  char *s = NULL;
  OK(budget_money_parse(&v, "12.50"));
  CHECK(v == 12500000000LL);
  OK(budget_money_parse(&v, "0.000000150"));
  CHECK(v == 150);
  OK(budget_money_parse(&v, "-3"));
  CHECK(v == NANOS(-3));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_parse(&v, "1e-3"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_parse(&v, "0.0000000001"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_parse(&v, ""));
  ERR(BUDGET_ERR_OVERFLOW, budget_money_parse(&v, "10000000000"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_parse(&v, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_parse(NULL, "1"));

  OK(budget_money_format(&s, 12500000000LL));
  CHECK(s && strcmp(s, "12.50") == 0);
  budget_free(s);
  OK(budget_money_format(&s, 150));
  CHECK(s && strcmp(s, "0.00000015") == 0);
  budget_free(s);
  OK(budget_money_format(&s, NANOS(-3)));
  CHECK(s && strcmp(s, "-3.00") == 0);
  budget_free(s);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_money_format(NULL, 1));
}

/* ---- the manager ------------------------------------------------------------------------ */

static void test_open(void) {
  budget_manager *m = (budget_manager *)&m; /* garbage: must be reset to NULL on failure */
  budget_options o = BUDGET_OPTIONS_INIT;
  char url[512];

  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(NULL, "memory", NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, NULL, NULL));
  CHECK(m == NULL);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "bogus:whatever", NULL));
  CHECK(m == NULL);
  ERR(BUDGET_ERR_STORE_UNAVAILABLE, budget_manager_open(&m, "sqlite:/nonexistent-dir/x/y/budget.db", NULL));
  CHECK(m == NULL);

  /* A Redis URL is passed through to the store: nothing listens on port 1. */
  o.store_timeout_ms = 500;
  {
    budget_status st = budget_manager_open(&m, "redis://127.0.0.1:1/0", &o);
    CHECK(st == BUDGET_ERR_STORE_UNAVAILABLE || st == BUDGET_ERR_INVALID_ARGUMENT /* built without Redis */);
    CHECK(budget_last_status() == st && budget_last_error()[0] != '\0');
    CHECK(m == NULL);
  }
  o.store_timeout_ms = 0;

  o.version = 0; /* not initialised */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.version = BUDGET_OPTIONS_VERSION + 1; /* from the future */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.version = BUDGET_OPTIONS_VERSION;
  o.default_ttl_ms = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.default_ttl_ms = 0;
  o.default_buffer_bp = 5000; /* < 1.0 */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.default_buffer_bp = 0;
  o.min_growth_nanos = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.min_growth_nanos = 0;
  o.persist_every_nanos = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.persist_every_nanos = 0;
  o.store_timeout_ms = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.store_timeout_ms = 0;
  o.store_pool_size = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.store_pool_size = 0;
  o.time_zone = "Mars/Olympus"; /* version 2 field: an unknown IANA zone */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  o.version = 1; /* a version-1 caller never had the field: it is not read */
  OK(budget_manager_open(&m, "memory", &o));
  budget_manager_close(m);
  m = NULL;
  o.version = BUDGET_OPTIONS_VERSION;
  o.time_zone = "Europe/Paris";
  OK(budget_manager_open(&m, "memory", &o));
  budget_manager_close(m);
  m = NULL;
  o.time_zone = NULL;

  /* Every option set, on a SQLite store; then reopened: the limits persist. */
  o.currency = "EUR";
  o.utc_offset_minutes = 60;
  o.default_ttl_ms = 60000;
  o.default_buffer_bp = 12000;
  o.growth_step_bp = 2500;
  o.min_growth_nanos = 10;
  o.persist_every_nanos = 1000;
  o.fail_open = 0;
  o.store_timeout_ms = 500;
  o.store_pool_size = 2;
  snprintf(url, sizeof url, "sqlite:%s/open.db", BUDGET_TEST_TMP_DIR);
  remove(url + 7);
  OK(budget_manager_open(&m, url, &o));
  set_cost_limit(m, "global", "day", NANOS(100));
  budget_manager_close(m);
  m = NULL;
  OK(budget_manager_open(&m, url, NULL));
  {
    budget_limit_list *ls = NULL;
    OK(budget_list_limits(&ls, m));
    CHECK(ls && ls->count == 1);
    budget_free(ls);
  }
  budget_manager_close(m);
  budget_manager_close(NULL); /* a no-op */
}

static void test_limits(void) {
  budget_manager *m = open_memory(NULL);
  budget_limit l = BUDGET_LIMIT_INIT;
  budget_limit_list *ls = NULL;
  uint32_t alerts[] = {50, 80, 100};
  int removed = -1;
  size_t i;

  l.scope = "user:*"; /* a kind-wide default */
  l.window = "day";
  l.amount = NANOS(10);
  l.alert_thresholds_pct = alerts;
  l.alert_thresholds_count = 3;
  OK(budget_set_limit(m, &l));
  l.scope = "user:alice"; /* overrides the default */
  l.amount = NANOS(20);
  l.alert_thresholds_count = 0;
  OK(budget_set_limit(m, &l));
  l.scope = "tenant:acme";
  l.window = "rolling:1h";
  l.metric = BUDGET_METRIC_TOKENS;
  l.amount = 100000;
  OK(budget_set_limit(m, &l));
  l.window = "minute";
  l.metric = BUDGET_METRIC_REQUESTS;
  l.amount = 60;
  OK(budget_set_limit(m, &l));

  OK(budget_list_limits(&ls, m));
  CHECK(ls && ls->count == 4);
  for (i = 0; ls && i < ls->count; ++i) {
    const budget_limit *x = ls->items[i];
    CHECK(x->version == BUDGET_LIMIT_VERSION);
    if (strcmp(x->scope, "user:*") == 0) {
      CHECK(strcmp(x->window, "day") == 0);
      CHECK(x->metric == BUDGET_METRIC_COST);
      CHECK(x->amount == NANOS(10));
      CHECK(x->alert_thresholds_count == 3 && x->alert_thresholds_pct[2] == 100);
    } else if (strcmp(x->scope, "tenant:acme") == 0 && x->metric == BUDGET_METRIC_TOKENS) {
      CHECK(strcmp(x->window, "rolling:1h") == 0);
      CHECK(x->amount == 100000);
    }
  }
  budget_free(ls);

  OK(budget_remove_limit(&removed, m, "tenant:acme", "minute", BUDGET_METRIC_REQUESTS));
  CHECK(removed == 1);
  OK(budget_remove_limit(&removed, m, "tenant:acme", "minute", BUDGET_METRIC_REQUESTS));
  CHECK(removed == 0);
  OK(budget_remove_limit(NULL, m, "user:alice", "day", BUDGET_METRIC_COST));

  /* Errors. */
  l = (budget_limit)BUDGET_LIMIT_INIT;
  l.scope = "global";
  l.window = "day";
  l.amount = 1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(NULL, &l));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, NULL));
  l.window = "fortnight";
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  l.window = NULL;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  l.window = "day";
  l.scope = "no colon";
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  l.scope = NULL;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  l.scope = "global";
  l.amount = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  l.amount = 1;
  l.metric = (budget_metric)9;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  l.metric = BUDGET_METRIC_COST;
  l.alert_thresholds_count = 2; /* with a NULL array */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  l.alert_thresholds_count = 0;
  l.version = 77;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_set_limit(m, &l));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_remove_limit(&removed, NULL, "global", "day", BUDGET_METRIC_COST));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_remove_limit(&removed, m, NULL, "day", BUDGET_METRIC_COST));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_remove_limit(&removed, m, "global", "never", BUDGET_METRIC_COST));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_list_limits(NULL, m));
  ls = (budget_limit_list *)&ls;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_list_limits(&ls, NULL));
  CHECK(ls == NULL);
  budget_manager_close(m);
}

/* ---- the lifecycle ----------------------------------------------------------------------- */

static void test_reserve_commit(void) {
  budget_manager *m = open_memory(NULL);
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_decision *d = NULL;
  budget_receipt *r = NULL;
  const char *meta[] = {"route", "/v1/chat", "team", "search"};

  set_cost_limit(m, "user:alice", "day", NANOS(10));
  ro.request_id = "req-1";
  ro.provider = "openai";
  ro.metadata = meta;
  ro.metadata_count = 2;
  e.cost_nanos = NANOS(4);
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d && d->allowed == 1 && d->replayed == 0 && d->fail_open == 0);
  CHECK(d && strcmp(d->request_id, "req-1") == 0);
  CHECK(d && d->held_nanos == NANOS(4) && d->estimate_nanos == NANOS(4));
  CHECK(d && d->expires_at_ms > 0 && d->denial == NULL);
  budget_free(d);

  /* Same id, same request: the first result, replayed. */
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d && d->allowed && d->replayed == 1);
  budget_free(d);
  /* Same id, different amount: CONFLICT, *out reset. */
  e.cost_nanos = NANOS(5);
  d = (budget_decision *)&d;
  ERR(BUDGET_ERR_CONFLICT, budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d == NULL);

  c.cost_nanos = NANOS(3);
  OK(budget_commit(&r, m, "req-1", &c));
  CHECK(r && strcmp(r->request_id, "req-1") == 0);
  CHECK(r && r->charged_nanos == NANOS(3) && r->released_nanos == NANOS(1));
  CHECK(r && r->over_hold == 0 && r->over_limit == 0);
  CHECK(r && r->replayed == 0);
  CHECK(r && r->after_expiry == 0);
  CHECK(r && r->over_limit_scopes_count == 0 && r->items_count == 0);
  budget_free(r);
  /* Double commit, same amount: replayed. */
  OK(budget_commit(&r, m, "req-1", &c));
  CHECK(r && r->replayed == 1 && r->charged_nanos == NANOS(3));
  budget_free(r);
  /* Double commit with a different amount: CONFLICT. */
  c.cost_nanos = NANOS(2);
  r = (budget_receipt *)&r;
  ERR(BUDGET_ERR_CONFLICT, budget_commit(&r, m, "req-1", &c));
  CHECK(r == NULL);
  CHECK(strstr(budget_last_error(), "req-1") != NULL);
  /* Releasing a committed request: CONFLICT. */
  ERR(BUDGET_ERR_CONFLICT, budget_release(&r, m, "req-1"));

  /* An empty request id is refused (NULL has one generated): a key read from an absent field
     must not silently become a fresh id, charged again on every retry. Nothing is held. */
  ro.request_id = "";
  d = (budget_decision *)&d;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d == NULL);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_record(NULL, m, ALICE, 2, &c, &ro));
  ro.request_id = NULL;
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d && d->allowed && strlen(d->request_id) > 0);
  OK(budget_release(NULL, m, d->request_id));
  budget_free(d);

  /* A commit above the hold and the limit is recorded and reported. */
  ro.request_id = "req-2";
  ro.metadata_count = 0;
  e.cost_nanos = NANOS(1);
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d && d->allowed);
  budget_free(d);
  c.cost_nanos = NANOS(9);
  OK(budget_commit(&r, m, "req-2", &c));
  CHECK(r && r->over_hold == 1 && r->over_limit == 1 && r->charged_nanos == NANOS(9));
  CHECK(r && r->over_limit_scopes_count >= 1);
  if (r && r->over_limit_scopes_count >= 1) CHECK(strcmp(r->over_limit_scopes[0], "user:alice") == 0);
  budget_free(r);

  /* Release, then release again (replayed), with and without out. */
  ro.request_id = NULL; /* generated */
  e.cost_nanos = 0;
  OK(budget_reserve(&d, m, BOB, 2, &e, &ro));
  CHECK(d && d->allowed && strlen(d->request_id) > 0);
  if (d) {
    OK(budget_release(&r, m, d->request_id));
    CHECK(r && r->charged_nanos == 0 && r->replayed == 0);
    budget_free(r);
    OK(budget_release(NULL, m, d->request_id));
  }
  budget_free(d);

  /* Errors: NULL handles and arguments, bad ids, unknown ids, bad structs. */
  c.cost_nanos = NANOS(1);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(NULL, m, ALICE, 2, &e, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, NULL, ALICE, 2, &e, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, NULL, 2, &e, NULL));
  {
    const char *bad_subject[] = {"user:alice", NULL};
    const char *bad_scope[] = {"user:"};
    ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, bad_subject, 2, &e, NULL));
    ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, bad_scope, 1, &e, NULL));
  }
  ro.request_id = "bad\nid";
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, &ro));
  ro.request_id = NULL;
  ro.ttl_ms = -5;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, &ro));
  ro.ttl_ms = 0;
  ro.buffer_bp = 9000;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, &ro));
  ro.buffer_bp = 0;
  ro.metadata = NULL;
  ro.metadata_count = 1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, &ro));
  ro.metadata_count = 0;
  ro.version = 0;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, &ro));
  ro.version = BUDGET_REQUEST_OPTIONS_VERSION;
  e.version = 2;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, NULL));
  e.version = BUDGET_ESTIMATE_VERSION;
  e.cost_nanos = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, NULL));
  e.cost_nanos = 0;
  e.model = "gpt-4o"; /* a model without usage */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, ALICE, 2, &e, NULL));
  e.model = NULL;

  ERR(BUDGET_ERR_NOT_FOUND, budget_commit(&r, m, "no-such-request", &c));
  ERR(BUDGET_ERR_NOT_FOUND, budget_release(&r, m, "no-such-request"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_commit(&r, m, NULL, &c));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_commit(&r, m, "req-1", NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_commit(NULL, m, "req-1", &c));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_commit(&r, NULL, "req-1", &c));
  c.version = 0;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_commit(&r, m, "req-1", &c));
  c.version = BUDGET_CHARGE_VERSION;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_release(&r, NULL, "req-1"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_release(&r, m, NULL));
  budget_manager_close(m);
}

static void test_denial_and_check(void) {
  budget_manager *m = open_memory(NULL);
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_decision *d = NULL;
  budget_limit_status_list *st = NULL;

  set_cost_limit(m, "user:*", "day", NANOS(10));
  set_cost_limit(m, "tenant:acme", "total", NANOS(100));

  e.cost_nanos = NANOS(11);
  OK(budget_reserve(&d, m, ALICE, 2, &e, NULL));
  CHECK(d && d->allowed == 0 && d->denial != NULL);
  if (d && d->denial) {
    const budget_denial *x = d->denial;
    CHECK(x->reason == BUDGET_DENY_LIMIT_EXCEEDED);
    CHECK(strcmp(x->scope, "user:alice") == 0);
    CHECK(strcmp(x->window, "day") == 0);
    CHECK(x->metric == BUDGET_METRIC_COST);
    CHECK(x->limit == NANOS(10) && x->spent == 0 && x->held == 0);
    CHECK(x->remaining == NANOS(10) && x->requested == NANOS(11));
    CHECK(x->has_resets_at == 1 && x->resets_at_ms > 0);
    CHECK(x->hard == 1);
    CHECK(strlen(x->message) > 0);
  }
  CHECK(d && d->held_nanos == 0 && d->request_id != NULL);
  budget_free(d);

  /* check: allowed or not, nothing is held. */
  e.cost_nanos = NANOS(6);
  OK(budget_check(&d, m, ALICE, 2, &e));
  CHECK(d && d->allowed == 1 && d->held_nanos == 0 && d->denial == NULL);
  budget_free(d);
  OK(budget_check(&d, m, ALICE, 2, NULL)); /* a zero estimate */
  CHECK(d && d->allowed == 1);
  budget_free(d);
  e.cost_nanos = NANOS(200);
  OK(budget_check(&d, m, BOB, 2, &e));
  CHECK(d && d->allowed == 0 && d->denial && strcmp(d->denial->scope, "tenant:acme") == 0);
  CHECK(d && d->denial && d->denial->has_resets_at == 0); /* "total" never resets */
  budget_free(d);

  OK(budget_scope_status(&st, m, "user:alice"));
  CHECK(st && st->count == 1);
  if (st && st->count == 1) {
    const budget_limit_status *s = st->items[0];
    CHECK(strcmp(s->scope, "user:alice") == 0 && strcmp(s->window, "day") == 0);
    CHECK(strcmp(s->key, "user:alice|cost|day") == 0); /* from the user:* default */
    CHECK(s->limit == NANOS(10) && s->spent == 0 && s->held == 0 && s->remaining == NANOS(10));
    CHECK(s->has_resets_at == 1 && s->resets_at_ms > s->window_start_ms);
  }
  budget_free(st);

  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_check(NULL, m, ALICE, 2, &e));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_check(&d, NULL, ALICE, 2, &e));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_check(&d, m, NULL, 1, &e));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_scope_status(&st, m, "Not A Scope"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_scope_status(&st, m, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_scope_status(&st, NULL, "global"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_scope_status(NULL, m, "global"));
  budget_manager_close(m);
}

static void test_consume(void) {
  budget_manager *m = open_memory(NULL);
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_decision *d = NULL;
  budget_consume_result *cr = NULL;
  budget_receipt *r = NULL;
  int i, stopped = 0;

  set_cost_limit(m, "user:alice", "day", NANOS(1));
  ro.request_id = "stream-1";
  e.cost_nanos = NANOS(1) / 10;
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d && d->allowed);
  budget_free(d);

  OK(budget_consume(&cr, m, "stream-1", NANOS(1) / 20, 10));
  CHECK(cr && cr->verdict == BUDGET_CONTINUE && cr->consumed_nanos == NANOS(1) / 20 && cr->denial == NULL);
  budget_free(cr);
  for (i = 0; i < 100 && !stopped; ++i) {
    OK(budget_consume(&cr, m, "stream-1", NANOS(1) / 20, 10));
    if (cr && cr->verdict == BUDGET_STOP) {
      stopped = 1;
      CHECK(cr->denial != NULL);
      if (cr->denial) CHECK(cr->denial->reason == BUDGET_DENY_LIMIT_EXCEEDED && strcmp(cr->denial->scope, "user:alice") == 0);
      CHECK(cr->held_nanos <= NANOS(1));
    }
    budget_free(cr);
  }
  CHECK(stopped);
  c.cost_nanos = NANOS(1);
  OK(budget_commit(&r, m, "stream-1", &c));
  CHECK(r && r->charged_nanos == NANOS(1));
  budget_free(r);
  /* After the commit the stream still gets Stop, but no limit refused it. */
  OK(budget_consume(&cr, m, "stream-1", 1, 0));
  CHECK(cr && cr->verdict == BUDGET_STOP && cr->denial && cr->denial->reason == BUDGET_DENY_NOT_HELD &&
        cr->denial->scope[0] == '\0');
  budget_free(cr);

  ERR(BUDGET_ERR_NOT_FOUND, budget_consume(&cr, m, "nope", 1, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(&cr, m, NULL, 1, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(NULL, m, "stream-1", 1, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(&cr, NULL, "stream-1", 1, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(&cr, m, "stream-1", -1, 0));
  budget_manager_close(m);
}

static void test_record_grant_adjust(void) {
  budget_manager *m = open_memory(NULL);
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_receipt *r = NULL;
  budget_limit_status_list *st = NULL;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_decision *d = NULL;

  set_cost_limit(m, "tenant:acme", "total", NANOS(10)); /* a prepaid balance */
  c.cost_nanos = NANOS(4);
  c.provider = "anthropic";
  ro.request_id = "rec-1";
  OK(budget_record(&r, m, ALICE, 2, &c, &ro));
  CHECK(r && r->charged_nanos == NANOS(4) && strcmp(r->request_id, "rec-1") == 0);
  budget_free(r);
  OK(budget_record(&r, m, ALICE, 2, &c, &ro)); /* idempotent */
  CHECK(r && r->replayed == 1);
  budget_free(r);
  c.cost_nanos = NANOS(5);
  ERR(BUDGET_ERR_CONFLICT, budget_record(&r, m, ALICE, 2, &c, &ro));
  ro.request_id = NULL;
  OK(budget_record(NULL, m, BOB, 2, &c, NULL));

  ro.reason = "top-up invoice 42";
  ro.request_id = "grant-1";
  OK(budget_grant(m, "tenant:acme", NANOS(20), &ro));
  ro.request_id = "adj-1";
  ro.reason = "refund";
  OK(budget_adjust(m, BOB, 2, -NANOS(2), &ro));

  OK(budget_scope_status(&st, m, "tenant:acme"));
  CHECK(st && st->count == 1);
  if (st && st->count == 1) {
    CHECK(st->items[0]->granted == NANOS(20));
    CHECK(st->items[0]->limit == NANOS(30));
    CHECK(st->items[0]->spent == NANOS(7));
    CHECK(st->items[0]->remaining == NANOS(23));
    CHECK(st->items[0]->has_resets_at == 0);
  }
  budget_free(st);
  e.cost_nanos = NANOS(23);
  OK(budget_check(&d, m, ALICE, 2, &e));
  CHECK(d && d->allowed);
  budget_free(d);

  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_record(&r, NULL, ALICE, 2, &c, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_record(&r, m, ALICE, 2, NULL, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_record(&r, m, NULL, 3, &c, NULL));
  c.cost_nanos = -1;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_record(&r, m, ALICE, 2, &c, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_grant(NULL, "tenant:acme", 1, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_grant(m, NULL, 1, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_grant(m, "tenant:", 1, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_grant(m, "tenant:acme", -1, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_adjust(NULL, ALICE, 2, 1, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_adjust(m, NULL, 2, 1, NULL));
  ERR(BUDGET_ERR_OVERFLOW, budget_adjust(m, ALICE, 2, INT64_MAX, NULL));
  budget_manager_close(m);
}

static void test_expiry(void) {
  int64_t now = 1767225600000LL; /* 2026-01-01 */
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_manager *m;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_decision *d = NULL;
  budget_receipt *r = NULL;
  size_t n = 99;

  o.clock = fake_clock;
  o.clock_user_data = &now;
  o.default_ttl_ms = 1000;
  m = open_memory(&o);
  set_cost_limit(m, "user:alice", "day", NANOS(10));
  ro.request_id = "exp-1";
  e.cost_nanos = NANOS(5);
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d && d->allowed && d->expires_at_ms == now + 1000);
  budget_free(d);
  OK(budget_expire_holds(&n, m));
  CHECK(n == 0);
  now += 5000;
  OK(budget_expire_holds(&n, m));
  CHECK(n == 1);
  OK(budget_expire_holds(NULL, m));
  c.cost_nanos = NANOS(2);
  OK(budget_commit(&r, m, "exp-1", &c)); /* a late commit: recorded as an adjustment */
  CHECK(r && r->after_expiry == 1);
  budget_free(r);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_expire_holds(&n, NULL));
  budget_manager_close(m);
}

/* ---- observers --------------------------------------------------------------------------- */

typedef struct alert_log {
  int count;
  uint32_t thresholds[8];
  char scope[64];
  int on_caller_thread;
  pthread_t caller;
} alert_log;

static void on_alert(void *user_data, const budget_alert *a) {
  alert_log *log = (alert_log *)user_data;
  if (log->count < 8) log->thresholds[log->count] = a->threshold_pct;
  ++log->count;
  snprintf(log->scope, sizeof log->scope, "%s", a->scope);
  if (!pthread_equal(pthread_self(), log->caller)) log->on_caller_thread = 0;
  CHECK(strcmp(a->window, "day") == 0);
  CHECK(a->metric == BUDGET_METRIC_COST && a->limit == NANOS(10));
  CHECK(strlen(a->limit_key) > 0 && strlen(a->request_id) > 0 && a->window_start_ms > 0);
}

typedef struct denial_log {
  int count;
  size_t subject_count;
  char first_scope[64];
} denial_log;

static void on_denial(void *user_data, const budget_denial *d, const char *const *subject, size_t n) {
  denial_log *log = (denial_log *)user_data;
  ++log->count;
  log->subject_count = n;
  if (n > 0) snprintf(log->first_scope, sizeof log->first_scope, "%s", subject[0]);
  CHECK(d->reason == BUDGET_DENY_LIMIT_EXCEEDED && strlen(d->message) > 0);
}

static void test_alerts(void) {
  budget_manager *m = open_memory(NULL);
  budget_limit l = BUDGET_LIMIT_INIT;
  uint32_t thresholds[] = {50, 100};
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_decision *d = NULL;
  alert_log alerts;
  denial_log denials;

  memset(&alerts, 0, sizeof alerts);
  memset(&denials, 0, sizeof denials);
  alerts.caller = pthread_self();
  alerts.on_caller_thread = 1;
  l.scope = "user:alice";
  l.window = "day";
  l.amount = NANOS(10);
  l.alert_thresholds_pct = thresholds;
  l.alert_thresholds_count = 2;
  OK(budget_set_limit(m, &l));
  OK(budget_on_alert(m, on_alert, &alerts));
  OK(budget_on_denial(m, on_denial, &denials));

  c.cost_nanos = NANOS(4);
  OK(budget_record(NULL, m, ALICE, 2, &c, NULL));
  CHECK(alerts.count == 0);
  OK(budget_record(NULL, m, ALICE, 2, &c, NULL)); /* 8/10: crosses 50% */
  CHECK(alerts.count == 1 && alerts.thresholds[0] == 50);
  CHECK(strcmp(alerts.scope, "user:alice") == 0);
  OK(budget_record(NULL, m, ALICE, 2, &c, NULL)); /* 12/10: crosses 100% */
  CHECK(alerts.count == 2 && alerts.thresholds[1] == 100);
  OK(budget_record(NULL, m, ALICE, 2, &c, NULL)); /* once per window */
  CHECK(alerts.count == 2);
  CHECK(alerts.on_caller_thread == 1);

  e.cost_nanos = 1;
  OK(budget_reserve(&d, m, ALICE, 2, &e, NULL));
  CHECK(d && d->allowed == 0);
  budget_free(d);
  CHECK(denials.count == 1 && denials.subject_count == 3);
  CHECK(strcmp(denials.first_scope, "global") == 0);

  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_on_alert(m, NULL, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_on_alert(NULL, on_alert, &alerts));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_on_denial(m, NULL, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_on_denial(NULL, on_denial, &denials));
  budget_manager_close(m);
}

/* ---- the ledger -------------------------------------------------------------------------- */

static void test_ledger(void) {
  char url[512];
  budget_manager *m = NULL;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_ledger_query q = BUDGET_LEDGER_QUERY_INIT;
  budget_decision *d = NULL;
  budget_receipt *r = NULL;
  budget_verify_report *v = NULL;
  char *text = NULL;
  size_t len = 0;

  snprintf(url, sizeof url, "sqlite:%s/ledger.db", BUDGET_TEST_TMP_DIR);
  remove(url + 7);
  OK(budget_manager_open(&m, url, NULL));
  set_cost_limit(m, "user:alice", "day", NANOS(10));
  ro.request_id = "led-1";
  e.cost_nanos = NANOS(2);
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  budget_free(d);
  c.cost_nanos = NANOS(1);
  OK(budget_commit(&r, m, "led-1", &c));
  budget_free(r);
  ro.request_id = "led-2";
  OK(budget_record(NULL, m, BOB, 2, &c, &ro));

  OK(budget_export(&text, &len, m, BUDGET_EXPORT_CSV, NULL));
  CHECK(text && len == strlen(text));
  CHECK(text && count_lines(text) == 4); /* header + reserve, commit, record */
  CHECK(text && strstr(text, "led-1") != NULL);
  budget_free(text);
  OK(budget_export(&text, NULL, m, BUDGET_EXPORT_JSONL, NULL));
  CHECK(text && count_lines(text) == 3 && text[0] == '{');
  budget_free(text);
  q.type = "commit";
  OK(budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  CHECK(text && count_lines(text) == 1 && strstr(text, "led-1") != NULL);
  budget_free(text);
  q.type = NULL;
  q.scope = "user:bob";
  OK(budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  CHECK(text && count_lines(text) == 1 && strstr(text, "led-2") != NULL);
  budget_free(text);
  q.scope = NULL;
  q.request_id = "led-1";
  q.limit = 1;
  OK(budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  CHECK(text && count_lines(text) == 1);
  budget_free(text);
  q.request_id = NULL;
  q.limit = 0;
  q.after_seq = 2;
  q.from_ms = 0;
  q.to_ms = INT64_MAX;
  OK(budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  CHECK(text && count_lines(text) == 1);
  budget_free(text);
  q.from_ms = INT64_MAX - 1; /* nothing that late */
  q.after_seq = 0;
  OK(budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  CHECK(text && len == 0 && text[0] == '\0');
  budget_free(text);

  OK(budget_verify(&v, m));
  CHECK(v && v->ok == 1 && v->chain_ok == 1 && v->events == 3 && v->problems_count == 0);
  budget_free(v);

  OK(budget_metrics_text(&text, m));
  CHECK(text && strstr(text, "budget_") != NULL);
  budget_free(text);

  q = (budget_ledger_query)BUDGET_LEDGER_QUERY_INIT;
  q.type = "bogus";
  text = (char *)&text;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_export(&text, &len, m, BUDGET_EXPORT_CSV, &q));
  CHECK(text == NULL && len == 0);
  q.type = NULL;
  q.version = 0;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_export(&text, &len, m, BUDGET_EXPORT_CSV, &q));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_export(&text, &len, m, (budget_export_format)7, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_export(NULL, &len, m, BUDGET_EXPORT_CSV, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_export(&text, &len, NULL, BUDGET_EXPORT_CSV, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_verify(NULL, m));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_verify(&v, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_metrics_text(NULL, m));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_metrics_text(&text, NULL));
  budget_manager_close(m);
}

/* ---- pricing ----------------------------------------------------------------------------- */

static const char COMPACT[] =
    "!budget-prices 1\n"
    "!alias short-name test-model\n"
    "test-model provider=openai mode=chat max_out=1000 in=1e-6 out=2e-6\n";

static budget_usage tokens_usage(int64_t in, int64_t out) {
  budget_usage u = BUDGET_USAGE_INIT;
  u.input_tokens = in;
  u.output_tokens = out;
  return u;
}

static void test_pricing(void) {
  budget_pricing *p = NULL;
  budget_load_report *rep = NULL;
  budget_usage u = tokens_usage(1000, 500);
  budget_cost_options co = BUDGET_COST_OPTIONS_INIT;
  budget_model_price mp = BUDGET_MODEL_PRICE_INIT;
  budget_markup mk = BUDGET_MARKUP_INIT;
  budget_quote *q = NULL;
  budget_resolved_model *rm = NULL;
  int64_t v = 0;
  size_t n = 0;
  char *s = NULL;
  char *version_before = NULL;
  char path[1024];

  OK(budget_pricing_new(&p));
  OK(budget_pricing_size(&n, p));
  CHECK(n == 0);
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_pricing_cost(&v, p, "test-model", &u, NULL));
  OK(budget_pricing_load(&rep, p, BUDGET_PRICES_COMPACT, COMPACT, sizeof COMPACT - 1));
  CHECK(rep && rep->loaded == 1 && rep->unpriceable_count == 0 && strlen(rep->table_version) > 0);
  budget_free(rep);
  OK(budget_pricing_cost(&v, p, "test-model", &u, NULL));
  CHECK(v == 2000000); /* 1000 x 1e-6 + 500 x 2e-6 = 0.002 */
  OK(budget_pricing_cost(&v, p, "short-name", &u, &co));
  CHECK(v == 2000000);
  OK(budget_pricing_estimate(&v, p, "test-model", 1000, -1, NULL)); /* max_out from the table */
  CHECK(v == 3000000);
  OK(budget_pricing_estimate(&v, p, "test-model", 1000, 0, NULL));
  CHECK(v == 1000000);
  OK(budget_pricing_quote(&q, p, "test-model", &u, NULL));
  CHECK(q && q->cost_nanos == 2000000 && strcmp(q->model, "test-model") == 0);
  CHECK(q && strcmp(q->provider, "openai") == 0 && strlen(q->price_version) > 0);
  CHECK(q && q->items_count >= 2);
  if (q && q->items_count >= 2) {
    CHECK(strcmp(q->items[0]->name, "input") == 0 && q->items[0]->quantity == 1000);
    CHECK(q->items[0]->amount_nanos == 1000000 && strlen(q->items[0]->unit_price) > 0);
  }
  budget_free(q);
  OK(budget_pricing_resolve(&rm, p, "test-model-2024-08-06"));
  CHECK(rm && strcmp(rm->name, "test-model") == 0 && strcmp(rm->provider, "openai") == 0);
  CHECK(rm && strcmp(rm->mode, "chat") == 0 && rm->max_output_tokens == 1000);
  budget_free(rm);

  /* Markups: +20% on everything. */
  OK(budget_pricing_price_version(&version_before, p, 0));
  mk.percent = "20";
  OK(budget_pricing_add_markup(p, &mk));
  OK(budget_pricing_cost(&v, p, "test-model", &u, NULL));
  CHECK(v == 2400000);
  co.apply_markup = 0;
  OK(budget_pricing_cost(&v, p, "test-model", &u, &co));
  CHECK(v == 2000000);
  co.apply_markup = 1;
  OK(budget_pricing_price_version(&s, p, 0));
  CHECK(version_before && s && strcmp(version_before, s) != 0); /* the rules are versioned */
  budget_free(s);
  budget_free(version_before);
  mk.scope = BUDGET_MARKUP_MODEL;
  mk.match = "test-model";
  mk.percent = "-50";
  mk.fixed_nanos = 5;
  OK(budget_pricing_add_markup(p, &mk));
  OK(budget_pricing_cost(&v, p, "test-model", &u, NULL));
  CHECK(v == 1000005);

  /* Overrides, aliases, fallback. */
  mp.provider = "acme";
  mp.input = "0.000001";
  mp.output = "0.000001";
  OK(budget_pricing_set_price(p, "acme-1", &mp, 0));
  OK(budget_pricing_add_alias(p, "acme-latest", "acme-1"));
  OK(budget_pricing_cost(&v, p, "acme-latest", &u, NULL));
  CHECK(v == 1800000); /* 0.0015 + the 20% markup on everything */
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_pricing_cost(&v, p, "mystery", &u, NULL));
  CHECK(v == 0);
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_pricing_resolve(&rm, p, "mystery"));
  OK(budget_pricing_set_fallback(p, &mp));
  OK(budget_pricing_cost(&v, p, "mystery", &u, NULL));
  CHECK(v == 1800000);
  OK(budget_pricing_set_fallback(p, NULL));
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_pricing_estimate(&v, p, "mystery", 10, 10, NULL));
  OK(budget_pricing_to_compact(&s, p));
  CHECK(s && strstr(s, "test-model") != NULL);
  budget_free(s);

  /* Errors. */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_load(&rep, p, BUDGET_PRICES_LITELLM, "{\"gpt-4o\": {", 12));
  CHECK(rep == NULL);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_load(NULL, p, BUDGET_PRICES_COMPACT, "no header", 9));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_load(NULL, p, (budget_price_format)5, "{}", 2));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_load(NULL, p, BUDGET_PRICES_LITELLM, NULL, 3));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_load(NULL, NULL, BUDGET_PRICES_LITELLM, "{}", 2));
  OK(budget_pricing_size(&n, p));
  CHECK(n == 1); /* failed loads keep the table */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_load_file(NULL, p, BUDGET_PRICES_LITELLM, "/nonexistent/prices.json"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_load_file(NULL, p, BUDGET_PRICES_LITELLM, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, "test-model", NULL, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, NULL, &u, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(NULL, p, "test-model", &u, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, NULL, "test-model", &u, NULL));
  u.cache_read_tokens = 5000; /* more than the input total */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, "test-model", &u, NULL));
  u.cache_read_tokens = 0;
  u.version = 0;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, "test-model", &u, NULL));
  u.version = BUDGET_USAGE_VERSION;
  co.tier = (budget_service_tier)9;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, "test-model", &u, &co));
  co.tier = BUDGET_TIER_BATCH;
  OK(budget_pricing_cost(&v, p, "test-model", &u, &co)); /* no batch price: standard */
  co.version = 0;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, "test-model", &u, &co));
  u.output_tokens = INT64_MAX;
  ERR(BUDGET_ERR_OVERFLOW, budget_pricing_cost(&v, p, "test-model", &u, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_estimate(&v, p, "test-model", -1, 0, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_estimate(NULL, p, "test-model", 1, 0, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_quote(NULL, p, "test-model", &u, NULL));
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_pricing_quote(&q, p, "mystery", &u, NULL));
  CHECK(q == NULL);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_resolve(NULL, p, "test-model"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_resolve(&rm, p, NULL));
  mp.input = "not a price";
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_set_price(p, "bad", &mp, 0));
  mp.input = "0.000001";
  mp.version = 3;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_set_price(p, "bad", &mp, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_set_fallback(p, &mp));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_set_price(p, NULL, &mp, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_set_price(p, "x", NULL, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_set_price(NULL, "x", &mp, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_set_fallback(NULL, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_alias(p, NULL, "x"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_alias(p, "x", NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_alias(NULL, "x", "y"));
  mk = (budget_markup)BUDGET_MARKUP_INIT;
  mk.percent = "lots";
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_markup(p, &mk));
  mk.percent = "-200";
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_markup(p, &mk));
  mk.percent = "1";
  mk.scope = BUDGET_MARKUP_PATTERN; /* without a pattern */
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_markup(p, &mk));
  mk.scope = (budget_markup_scope)8;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_markup(p, &mk));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_markup(p, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_add_markup(NULL, &mk));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_price_version(NULL, p, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_price_version(&s, NULL, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_size(NULL, p));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_size(&n, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_to_compact(NULL, p));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_to_compact(&s, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_new(NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_new_bundled(NULL));
  budget_pricing_destroy(p);
  budget_pricing_destroy(NULL);

  /* LiteLLM's table, and the bundled one. */
  OK(budget_pricing_new(&p));
  snprintf(path, sizeof path, "%s/model_prices_and_context_window.json", BUDGET_SHARED_DATA_DIR);
  OK(budget_pricing_load_file(&rep, p, BUDGET_PRICES_LITELLM, path));
  CHECK(rep && rep->loaded > 100 && rep->skipped >= 1);
  if (rep && rep->unpriceable_count > 0)
    CHECK(strlen(rep->unpriceable_models[0]) > 0 && strlen(rep->unpriceable_reasons[0]) > 0);
  budget_free(rep);
  u = tokens_usage(1000000, 1000000);
  OK(budget_pricing_cost(&v, p, "gpt-4o-2024-08-06", &u, NULL));
  CHECK(v == NANOS(2) + NANOS(1) / 2 + NANOS(10)); /* $2.50 + $10 per million */
  OK(budget_pricing_cost(&v, p, "openai/gpt-4o", &u, NULL));
  CHECK(v == NANOS(12) + NANOS(1) / 2);
  budget_pricing_destroy(p);
  OK(budget_pricing_new_bundled(&p));
  OK(budget_pricing_size(&n, p));
  CHECK(n > 100);
  OK(budget_pricing_cost(&v, p, "gpt-4o", &u, NULL));
  CHECK(v > 0);
  {
    char *compact = NULL;
    budget_pricing *p2 = NULL;
    OK(budget_pricing_to_compact(&compact, p));
    OK(budget_pricing_new(&p2));
    OK(budget_pricing_load(NULL, p2, BUDGET_PRICES_COMPACT, compact, strlen(compact)));
    OK(budget_pricing_size(&n, p2));
    CHECK(n > 100);
    budget_free(compact);
    budget_pricing_destroy(p2);
  }
  budget_pricing_destroy(p);
}

/* The manager prices estimates and charges with a pricing engine. */
static void test_priced_lifecycle(void) {
  budget_pricing *p = NULL;
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_manager *m = NULL;
  budget_usage expected = tokens_usage(1000, 1000);
  budget_usage actual = tokens_usage(1000, 500);
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_decision *d = NULL;
  budget_receipt *r = NULL;

  OK(budget_pricing_new(&p));
  OK(budget_pricing_load(NULL, p, BUDGET_PRICES_COMPACT, COMPACT, sizeof COMPACT - 1));
  o.pricing = p;
  OK(budget_manager_open(&m, "memory", &o));
  budget_pricing_destroy(p); /* the manager keeps its own reference */

  e.model = "test-model";
  e.usage = &expected;
  ro.request_id = "priced-1";
  ro.buffer_bp = 12000;
  OK(budget_reserve(&d, m, ALICE, 2, &e, &ro));
  CHECK(d && d->allowed && d->estimate_nanos == 3600000); /* 0.003 x 1.2 */
  budget_free(d);
  c.model = "test-model";
  c.usage = &actual;
  OK(budget_commit(&r, m, "priced-1", &c));
  CHECK(r && r->charged_nanos == 2000000 && r->released_nanos == 1600000);
  CHECK(r && r->tokens == 1500 && strcmp(r->model, "test-model") == 0);
  CHECK(r && strlen(r->price_version) > 0 && r->items_count >= 2);
  budget_free(r);

  e.model = "mystery-model";
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_reserve(&d, m, ALICE, 2, &e, NULL));
  c.model = "mystery-model";
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_record(NULL, m, ALICE, 2, &c, NULL));
  budget_manager_close(m);

  /* Without a pricing engine, a model cannot be priced. */
  m = open_memory(NULL);
  c.model = "test-model";
  ERR(BUDGET_ERR_UNKNOWN_MODEL, budget_record(NULL, m, ALICE, 2, &c, NULL));
  budget_manager_close(m);
}

/* The service tier a usage names: priced at it, kept in the ledger, read from responses; a
 * version-1 budget_usage (compiled before the field existed) is neither read nor written past
 * its end. */
static const char TIERED[] =
    "!budget-prices 1\n"
    "tiered provider=openai mode=chat in=1e-6 out=2e-6 in/priority=2e-6 out/priority=4e-6\n";

static void test_service_tier(void) {
  budget_pricing *p = NULL;
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_manager *m = NULL;
  budget_usage u = tokens_usage(1000, 500);
  budget_usage v1;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_cost_options co = BUDGET_COST_OPTIONS_INIT;
  budget_receipt *r = NULL;
  char *text = NULL;
  int64_t v = 0;
  const char prio[] = "{\"service_tier\":\"priority\",\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}";

  OK(budget_pricing_new(&p));
  OK(budget_pricing_load(NULL, p, BUDGET_PRICES_COMPACT, TIERED, sizeof TIERED - 1));
  OK(budget_pricing_cost(&v, p, "tiered", &u, NULL));
  CHECK(v == 2000000); /* standard: 1000 x 1e-6 + 500 x 2e-6 */
  u.service_tier = BUDGET_TIER_PRIORITY;
  OK(budget_pricing_cost(&v, p, "tiered", &u, NULL));
  CHECK(v == 4000000);
  co.tier = BUDGET_TIER_BATCH; /* the usage's tier wins over the caller's default */
  OK(budget_pricing_cost(&v, p, "tiered", &u, &co));
  CHECK(v == 4000000);
  u.service_tier = (budget_service_tier)7;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, "tiered", &u, NULL));
  /* Version 1: the field is not read (here it holds garbage) and not written. */
  v1 = tokens_usage(1000, 500);
  v1.version = 1;
  v1.service_tier = (budget_service_tier)77;
  OK(budget_pricing_cost(&v, p, "tiered", &v1, NULL));
  CHECK(v == 2000000);
  OK(budget_usage_from_response(&v1, BUDGET_API_OPENAI_CHAT, prio, sizeof prio - 1));
  CHECK(v1.input_tokens == 7 && (int)v1.service_tier == 77);
  OK(budget_usage_from_response(&u, BUDGET_API_OPENAI_CHAT, prio, sizeof prio - 1));
  CHECK(u.input_tokens == 7 && u.service_tier == BUDGET_TIER_PRIORITY);

  /* Through a manager: the commit is charged at the tier and the ledger names it. */
  o.pricing = p;
  OK(budget_manager_open(&m, "memory", &o));
  budget_pricing_destroy(p);
  u = tokens_usage(1000, 500);
  u.service_tier = BUDGET_TIER_PRIORITY;
  c.model = "tiered";
  c.usage = &u;
  OK(budget_record(&r, m, ALICE, 2, &c, NULL));
  CHECK(r && r->charged_nanos == 4000000);
  budget_free(r);
  OK(budget_export(&text, NULL, m, BUDGET_EXPORT_JSONL, NULL));
  CHECK(text && strstr(text, "\"service_tier\":\"priority\"") != NULL);
  budget_free(text);
  budget_manager_close(m);
}

/* Audio tokens (budget_usage version 3): priced at the audio prices, read from responses, kept
 * in the ledger; a version-2 struct (compiled before the fields existed) still works, its
 * audio fields neither read nor written. */
static const char AUDIO_PRICES[] =
    "!budget-prices 1\n"
    "voice provider=openai mode=chat in=2.5e-6 out=1e-5 ain=4e-5 aout=8e-5\n";

static void test_audio_tokens(void) {
  budget_pricing *p = NULL;
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_manager *m = NULL;
  budget_usage u = tokens_usage(1000, 500);
  budget_usage v2;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_receipt *r = NULL;
  char *text = NULL;
  int64_t v = 0;
  const char chat[] =
      "{\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,"
      "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":800},"
      "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":400}}}";

  CHECK(u.version == 3 && u.audio_input_tokens == 0 && u.audio_output_tokens == 0);
  OK(budget_pricing_new(&p));
  OK(budget_pricing_load(NULL, p, BUDGET_PRICES_COMPACT, AUDIO_PRICES, sizeof AUDIO_PRICES - 1));
  OK(budget_pricing_cost(&v, p, "voice", &u, NULL));
  CHECK(v == 7500000); /* as text: 1000 x 2.5e-6 + 500 x 1e-5 */
  u.audio_input_tokens = 800;
  u.audio_output_tokens = 400;
  OK(budget_pricing_cost(&v, p, "voice", &u, NULL));
  CHECK(v == 65500000); /* 200 x 2.5e-6 + 800 x 4e-5 + 100 x 1e-5 + 400 x 8e-5 */
  u.audio_input_tokens = 1001;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_pricing_cost(&v, p, "voice", &u, NULL));
  /* Version 2: the audio fields are not read (garbage here) and not written. */
  v2 = tokens_usage(1000, 500);
  v2.version = 2;
  v2.audio_input_tokens = 123456789;
  v2.audio_output_tokens = -5;
  OK(budget_pricing_cost(&v, p, "voice", &v2, NULL));
  CHECK(v == 7500000);
  OK(budget_usage_from_response(&v2, BUDGET_API_OPENAI_CHAT, chat, sizeof chat - 1));
  CHECK(v2.input_tokens == 1000 && v2.output_tokens == 500);
  CHECK(v2.audio_input_tokens == 123456789 && v2.audio_output_tokens == -5);
  u = tokens_usage(0, 0);
  OK(budget_usage_from_response(&u, BUDGET_API_OPENAI_CHAT, chat, sizeof chat - 1));
  CHECK(u.audio_input_tokens == 800 && u.audio_output_tokens == 400);

  /* Through a manager: charged at the audio prices, the ledger keeps the parts. */
  o.pricing = p;
  OK(budget_manager_open(&m, "memory", &o));
  budget_pricing_destroy(p);
  c.model = "voice";
  c.usage = &u;
  OK(budget_record(&r, m, ALICE, 2, &c, NULL));
  CHECK(r && r->charged_nanos == 65500000);
  budget_free(r);
  OK(budget_export(&text, NULL, m, BUDGET_EXPORT_JSONL, NULL));
  CHECK(text && strstr(text, "\"audio_input_tokens\":800,\"audio_output_tokens\":400") != NULL);
  budget_free(text);
  budget_manager_close(m);
}

/* ---- usage from providers ---------------------------------------------------------------- */

static void test_providers(void) {
  budget_api_format f = BUDGET_API_GEMINI;
  budget_usage u = BUDGET_USAGE_INIT;
  budget_stream *s = NULL;
  int64_t n = 0;
  int final_ = -1;
  char path[1024];
  char *body;
  size_t len = 0, i;
  const char anthropic[] =
      "{\"type\":\"message\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":20,"
      "\"cache_read_input_tokens\":30,\"output_tokens\":5}}";

  OK(budget_api_format_parse(&f, "openai"));
  CHECK(f == BUDGET_API_OPENAI_CHAT);
  OK(budget_api_format_parse(&f, "openai-responses"));
  CHECK(f == BUDGET_API_OPENAI_RESPONSES);
  OK(budget_api_format_parse(&f, "anthropic"));
  CHECK(f == BUDGET_API_ANTHROPIC);
  OK(budget_api_format_parse(&f, "google"));
  CHECK(f == BUDGET_API_GEMINI);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_api_format_parse(&f, "cohere"));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_api_format_parse(&f, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_api_format_parse(NULL, "openai"));

  OK(budget_estimate_tokens(&n, "abcdefgh", 8));
  CHECK(n == 2);
  OK(budget_estimate_tokens(&n, NULL, 0));
  CHECK(n == 0);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_estimate_tokens(&n, NULL, 4));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_estimate_tokens(NULL, "x", 1));

  /* A full response. */
  snprintf(path, sizeof path, "%s/providers/openai_chat_response.json", BUDGET_TEST_DATA_DIR);
  body = read_file(path, &len);
  CHECK(body != NULL);
  if (body) {
    OK(budget_usage_from_response(&u, BUDGET_API_OPENAI_CHAT, body, len));
    CHECK(u.input_tokens == 1117 && u.cache_read_tokens == 1024);
    CHECK(u.output_tokens == 846 && u.reasoning_tokens == 768 && u.complete == 1);
    free(body);
  }
  OK(budget_usage_from_response(&u, BUDGET_API_ANTHROPIC, anthropic, sizeof anthropic - 1));
  CHECK(u.input_tokens == 60 && u.cache_write_tokens == 20 && u.cache_read_tokens == 30 && u.output_tokens == 5);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_usage_from_response(&u, BUDGET_API_ANTHROPIC, "{\"usage\": {", 11));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_usage_from_response(&u, BUDGET_API_ANTHROPIC, NULL, 11));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_usage_from_response(&u, (budget_api_format)9, "{}", 2));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_usage_from_response(NULL, BUDGET_API_ANTHROPIC, "{}", 2));
  u.version = 0;
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_usage_from_response(&u, BUDGET_API_ANTHROPIC, "{}", 2));
  u.version = BUDGET_USAGE_VERSION;

  /* A stream fed in small pieces, split anywhere. */
  snprintf(path, sizeof path, "%s/providers/openai_chat_stream.sse", BUDGET_TEST_DATA_DIR);
  body = read_file(path, &len);
  CHECK(body != NULL);
  OK(budget_stream_new(&s, BUDGET_API_OPENAI_CHAT, 100));
  if (body) {
    for (i = 0; i < len; i += 7) OK(budget_stream_feed(s, body + i, len - i < 7 ? len - i : 7));
    free(body);
  }
  OK(budget_stream_has_final_usage(&final_, s));
  CHECK(final_ == 1);
  OK(budget_stream_estimated_output_tokens(&n, s));
  CHECK(n > 0);
  OK(budget_stream_usage(&u, s));
  CHECK(u.input_tokens == 2048 && u.output_tokens == 160 && u.complete == 1);
  memset(&u, 0, sizeof u);
  u.version = BUDGET_USAGE_VERSION;
  OK(budget_stream_finish(&u, s));
  CHECK(u.input_tokens == 2048 && u.cache_read_tokens == 1920 && u.reasoning_tokens == 64 && u.complete == 1);
  budget_stream_destroy(s);

  /* Events already split; a stream cut before its usage: an estimate, complete = 0. */
  OK(budget_stream_new(&s, BUDGET_API_OPENAI_CHAT, 100));
  {
    const char ev[] = "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there, how are you?\"}}]}";
    OK(budget_stream_feed_event(s, ev, sizeof ev - 1));
  }
  OK(budget_stream_has_final_usage(&final_, s));
  CHECK(final_ == 0);
  OK(budget_stream_usage(&u, s));
  CHECK(u.complete == 0 && u.input_tokens == 100 && u.output_tokens > 0);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_feed_event(s, "{\"choices\": [", 13));
  OK(budget_stream_finish(&u, s));
  CHECK(u.complete == 0);
  budget_stream_destroy(s);

  /* A body that ends inside an event. */
  OK(budget_stream_new(&s, BUDGET_API_ANTHROPIC, 0));
  OK(budget_stream_feed(s, "data: {\"type\":\"message_start\",", 31));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_finish(&u, s));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_feed(s, NULL, 3));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_feed(NULL, "x", 1));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_feed_event(NULL, "{}", 2));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_finish(NULL, s));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_finish(&u, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_usage(&u, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_usage(NULL, s));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_has_final_usage(NULL, s));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_has_final_usage(&final_, NULL));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_estimated_output_tokens(NULL, s));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_estimated_output_tokens(&n, NULL));
  budget_stream_destroy(s);
  budget_stream_destroy(NULL);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_new(NULL, BUDGET_API_ANTHROPIC, 0));
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_new(&s, (budget_api_format)-1, 0));
  CHECK(s == NULL);
  ERR(BUDGET_ERR_INVALID_ARGUMENT, budget_stream_new(&s, BUDGET_API_ANTHROPIC, -1));
}

/* ---- threads ---------------------------------------------------------------------------- */

typedef struct worker_arg {
  budget_manager *m;
  int id;
  int allowed;
  int errors_ok; /* the thread's own error message was its own */
} worker_arg;

static void *worker(void *p) {
  worker_arg *w = (worker_arg *)p;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  char id[64], bad[64];
  int i;
  e.cost_nanos = NANOS(1);
  c.cost_nanos = NANOS(1);
  w->errors_ok = 1;
  for (i = 0; i < 50; ++i) {
    budget_decision *d = NULL;
    budget_receipt *r = NULL;
    snprintf(id, sizeof id, "t%d-%d", w->id, i);
    ro.request_id = id;
    if (budget_reserve(&d, w->m, ALICE, 2, &e, &ro) != BUDGET_OK || !d) {
      w->errors_ok = 0;
      continue;
    }
    if (d->allowed) {
      ++w->allowed;
      if (budget_commit(&r, w->m, id, &c) != BUDGET_OK) w->errors_ok = 0;
      budget_free(r);
    }
    budget_free(d);
    snprintf(bad, sizeof bad, "missing-%d-%d", w->id, i);
    if (budget_release(NULL, w->m, bad) != BUDGET_ERR_NOT_FOUND || strstr(budget_last_error(), bad) == NULL)
      w->errors_ok = 0;
  }
  return NULL;
}

/* One manager shared by threads: no overspend, and each thread reads its own error. */
static void test_threads(void) {
  budget_manager *m = open_memory(NULL);
  pthread_t t[4];
  worker_arg args[4];
  budget_limit_status_list *st = NULL;
  int i, allowed = 0;
  set_cost_limit(m, "user:alice", "day", NANOS(120));
  for (i = 0; i < 4; ++i) {
    memset(&args[i], 0, sizeof args[i]);
    args[i].m = m;
    args[i].id = i;
    CHECK(pthread_create(&t[i], NULL, worker, &args[i]) == 0);
  }
  for (i = 0; i < 4; ++i) {
    CHECK(pthread_join(t[i], NULL) == 0);
    CHECK(args[i].errors_ok == 1);
    allowed += args[i].allowed;
  }
  CHECK(allowed == 120);
  OK(budget_scope_status(&st, m, "user:alice"));
  CHECK(st && st->count == 1 && st->items[0]->spent == NANOS(120) && st->items[0]->held == 0);
  budget_free(st);
  budget_manager_close(m);
}

/* ---- driver ---------------------------------------------------------------------------- */

static const test_case TESTS[] = {
    {"version", test_version},
    {"errors", test_errors},
    {"money", test_money},
    {"open", test_open},
    {"limits", test_limits},
    {"reserve_commit", test_reserve_commit},
    {"denial_and_check", test_denial_and_check},
    {"consume", test_consume},
    {"record_grant_adjust", test_record_grant_adjust},
    {"expiry", test_expiry},
    {"alerts", test_alerts},
    {"ledger", test_ledger},
    {"pricing", test_pricing},
    {"priced_lifecycle", test_priced_lifecycle},
    {"service_tier", test_service_tier},
    {"audio_tokens", test_audio_tokens},
    {"providers", test_providers},
    {"threads", test_threads},
};

int main(int argc, char **argv) {
  return run_cases(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv, &g_failures);
}
