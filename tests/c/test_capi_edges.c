/* libbudget C API edge cases, run on every store named in BUDGET_TEST_STORES (default
 * "memory,sqlite"; add "redis" with BUDGET_TEST_REDIS_URL). C99, public header only.
 * One process per case: test_capi_edges <name>. */
#define _POSIX_C_SOURCE 200809L

#include <budget/budget.h>

#include "test_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef BUDGET_TEST_TMP_DIR
#error "BUDGET_TEST_TMP_DIR must be defined"
#endif

static int g_failures = 0;
static const char *g_store = "";

#define CHECK(cond)                                                                              \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      fprintf(stderr, "%s:%d [%s]: CHECK(%s) failed [last error: %s]\n", __FILE__, __LINE__,    \
              g_store, #cond, budget_last_error());                                              \
      ++g_failures;                                                                              \
    }                                                                                            \
  } while (0)

#define EXPECT(code, call)                                                                       \
  do {                                                                                           \
    budget_status st_ = (call);                                                                  \
    if (st_ != (code)) {                                                                         \
      fprintf(stderr, "%s:%d [%s]: %s -> %s (expected %s): %s\n", __FILE__, __LINE__, g_store,  \
              #call, budget_status_name(st_), budget_status_name(code), budget_last_error());    \
      ++g_failures;                                                                              \
    } else {                                                                                     \
      CHECK(budget_last_status() == (code));                                                     \
      CHECK(((code) == BUDGET_OK) == (budget_last_error()[0] == '\0'));                          \
    }                                                                                            \
  } while (0)
#define OK(call) EXPECT(BUDGET_OK, call)


/* ---- stores ----------------------------------------------------------------------------- */

static int g_db_counter = 0;

/* Opens a fresh, empty manager on `store` ("memory", "sqlite", "redis"); NULL (a failure)
 * when it cannot: redis listed without BUDGET_TEST_REDIS_URL fails, it is never skipped. */
static budget_manager *open_store(const char *store, const budget_options *o) {
  budget_manager *m = NULL;
  char url[1024];
  if (strcmp(store, "memory") == 0) {
    snprintf(url, sizeof url, "memory");
  } else if (strcmp(store, "sqlite") == 0) {
    char path[900];
    snprintf(path, sizeof path, "%s/edges-%ld-%d.db", BUDGET_TEST_TMP_DIR, (long)getpid(), ++g_db_counter);
    remove(path);
    snprintf(url, sizeof url, "sqlite:%s", path);
  } else if (strcmp(store, "redis") == 0) {
    const char *r = getenv("BUDGET_TEST_REDIS_URL");
    if (!r || !*r) {
      fprintf(stderr, "BUDGET_TEST_STORES names redis but BUDGET_TEST_REDIS_URL is not set\n");
      ++g_failures;
      return NULL;
    }
    snprintf(url, sizeof url, "%s", r);
  } else {
    fprintf(stderr, "unknown store '%s'\n", store);
    ++g_failures;
    return NULL;
  }
  OK(budget_manager_open(&m, url, o));
  return m;
}

/* The scopes of this test, unique per run so that a shared Redis database needs no flush. */
static char g_tag[64];
static const char *scoped(char *buf, size_t n, const char *kind) {
  snprintf(buf, n, "%s:%s", kind, g_tag);
  return buf;
}

typedef void (*store_case)(budget_manager *m);

static void for_each_store(store_case fn, const budget_options *o) {
  const char *env = getenv("BUDGET_TEST_STORES");
  char list[256];
  char *save = NULL, *tok;
  snprintf(list, sizeof list, "%s", env && *env ? env : "memory,sqlite");
  for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    budget_manager *m;
    g_store = tok;
    snprintf(g_tag, sizeof g_tag, "t%ld_%d", (long)getpid(), ++g_db_counter);
    m = open_store(tok, o);
    if (!m) continue; /* counted as a failure */
    fn(m);
    budget_manager_close(m);
  }
  g_store = "";
}

/* ---- cases ------------------------------------------------------------------------------- */

/* A TTL so large that now + ttl does not fit in int64 is refused with a status; it used to be
 * a signed overflow in the engine (UBSan abort; in release a hold that expired at once). */
static void ttl_case(budget_manager *m) {
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_decision *d = (budget_decision *)&d;
  char user[128];
  const char *subject[1];
  subject[0] = scoped(user, sizeof user, "user");
  e.cost_nanos = 1000;
  ro.ttl_ms = INT64_MAX;
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, subject, 1, &e, &ro));
  CHECK(d == NULL);
  OK(budget_check(&d, m, subject, 1, &e)); /* a check holds nothing: no TTL */
  budget_free(d);
  d = NULL;
  ro.ttl_ms = INT64_MAX / 2;
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, subject, 1, &e, &ro));
  CHECK(d == NULL);
  /* A long but sane TTL (a year) still works. */
  ro.ttl_ms = 365LL * 24 * 3600 * 1000;
  OK(budget_reserve(&d, m, subject, 1, &e, &ro));
  CHECK(d && d->allowed && d->expires_at_ms > 0);
  if (d) OK(budget_release(NULL, m, d->request_id));
  budget_free(d);
}

static void test_ttl(void) {
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_manager *m = NULL;
  for_each_store(ttl_case, NULL);
  /* The manager's default TTL is checked when the manager opens. */
  o.default_ttl_ms = INT64_MAX;
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  CHECK(m == NULL);
}

/* Text that the ledger records (model, provider) must be UTF-8: it used to be accepted, after
 * which every JSON-lines export and (Redis) every verify failed with INTERNAL for good. */
static void utf8_case(budget_manager *m) {
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_receipt *r = (budget_receipt *)&r;
  budget_decision *d = NULL;
  budget_verify_report *v = NULL;
  char *text = NULL;
  size_t len = 0;
  char user[128];
  const char *subject[1];
  subject[0] = scoped(user, sizeof user, "user");
  c.cost_nanos = 5;
  c.model = "model\xff";
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_record(&r, m, subject, 1, &c, NULL));
  CHECK(r == NULL);
  budget_free(r);
  c.model = "model";
  c.provider = "prov\xc3"; /* a truncated sequence */
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_record(&r, m, subject, 1, &c, NULL));
  budget_free(r);
  c.provider = NULL;
  ro.provider = "prov\xed\xa0\x80"; /* a UTF-16 surrogate: not UTF-8 */
  e.cost_nanos = 10;
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_reserve(&d, m, subject, 1, &e, &ro));
  CHECK(d == NULL);
  budget_free(d);
  ro.provider = "openai";
  OK(budget_reserve(&d, m, subject, 1, &e, &ro));
  CHECK(d && d->allowed);
  if (d) {
    c.provider = "\xfe\xff";
    EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_commit(&r, m, d->request_id, &c));
    budget_free(r);
    c.provider = "openai";
    c.model = "gpt-\xc3\xa9"; /* valid UTF-8 is fine */
    OK(budget_commit(&r, m, d->request_id, &c));
    budget_free(r);
  }
  budget_free(d);
  /* The ledger stays exportable and verifiable. */
  OK(budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, NULL));
  CHECK(text && len > 0 && strstr(text, "gpt-\xc3\xa9") != NULL);
  budget_free(text);
  OK(budget_verify(&v, m));
  CHECK(v && v->chain_ok);
  budget_free(v);
}

static void test_utf8(void) { for_each_store(utf8_case, NULL); }

/* budget_record takes the provider from the charge, else from the request options (as
 * budget_reserve does); it used to drop budget_request_options.provider silently. */
static void record_provider_case(budget_manager *m) {
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_ledger_query q = BUDGET_LEDGER_QUERY_INIT;
  budget_charge c = BUDGET_CHARGE_INIT;
  char *text = NULL;
  char user[128], id[128];
  const char *subject[1];
  subject[0] = scoped(user, sizeof user, "user");
  snprintf(id, sizeof id, "rec-%s", g_tag);
  c.cost_nanos = 5;
  ro.request_id = id;
  ro.provider = "provider-from-options";
  OK(budget_record(NULL, m, subject, 1, &c, &ro));
  q.request_id = id;
  OK(budget_export(&text, NULL, m, BUDGET_EXPORT_JSONL, &q));
  CHECK(text && strstr(text, "\"provider-from-options\"") != NULL);
  budget_free(text);
  ro.provider = "prov\xed\xa0\x80"; /* and it is checked like the charge's */
  ro.request_id = NULL;
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_record(NULL, m, subject, 1, &c, &ro));
}

static void test_record_provider(void) { for_each_store(record_provider_case, NULL); }

/* budget_remove_limit refuses a malformed scope like budget_set_limit does (it used to answer
 * OK with "nothing removed", hiding the caller's typo). */
static void remove_limit_case(budget_manager *m) {
  budget_limit l = BUDGET_LIMIT_INIT;
  int removed = 7;
  char user[128], kind[128];
  l.scope = scoped(user, sizeof user, "user");
  l.window = "day";
  l.amount = 100;
  OK(budget_set_limit(m, &l));
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_remove_limit(&removed, m, "not a scope", "day", BUDGET_METRIC_COST));
  CHECK(removed == 0);
  removed = 7;
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_remove_limit(&removed, m, "user:", "day", BUDGET_METRIC_COST));
  CHECK(removed == 0);
  OK(budget_remove_limit(&removed, m, l.scope, "day", BUDGET_METRIC_COST));
  CHECK(removed == 1);
  /* A kind-wide default is a valid scope for limits. */
  snprintf(kind, sizeof kind, "k%s:*", g_tag);
  l.scope = kind;
  OK(budget_set_limit(m, &l));
  OK(budget_remove_limit(&removed, m, kind, "day", BUDGET_METRIC_COST));
  CHECK(removed == 1);
}

static void test_remove_limit(void) { for_each_store(remove_limit_case, NULL); }

/* budget_free accepts NULL and frees what the library handed out. (A second free is
 * undefined behaviour, as with free(): see docs/c-api.md.) */
static void test_free(void) {
  char *s = NULL;
  budget_free(NULL);
  OK(budget_money_format(&s, 1));
  CHECK(strcmp(s, "0.000000001") == 0);
  budget_free(s);
}

/* The currency is 1-16 printable ASCII characters: it is written into denial messages and the
 * Prometheus text, where a newline injected lines and other bytes were not UTF-8. */
static void test_currency(void) {
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_manager *m = (budget_manager *)&m;
  char *text = NULL;
  const char *bad[] = {"USD\ngen_ai_client_cost_nanos_total 0", "\xff\xfe", "US D", ""};
  size_t i;
  for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    o.currency = bad[i];
    EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
    CHECK(m == NULL);
    budget_manager_close(m);
  }
  o.currency = "credits";
  OK(budget_manager_open(&m, "memory", &o));
  OK(budget_metrics_text(&text, m));
  CHECK(text && strstr(text, "nanos of credits.") != NULL);
  budget_free(text);
  budget_manager_close(m);
}

/* budget_consume checks its request id as budget_commit / budget_release do: "" or a malformed
 * id is INVALID_ARGUMENT (it was NOT_FOUND, as if a well-formed id were merely unknown). */
static void consume_id_case(budget_manager *m) {
  budget_consume_result *cr = (budget_consume_result *)&cr;
  budget_receipt *r = NULL;
  char big[300];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(&cr, m, "", 1, 0));
  CHECK(cr == NULL);
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(&cr, m, "id\xff", 1, 0));
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(&cr, m, "id\nx", 1, 0));
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_consume(&cr, m, big, 1, 0));
  /* the same ids, as commit and release see them */
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_release(&r, m, ""));
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_release(&r, m, "id\xff"));
  /* a well-formed unknown id is NOT_FOUND */
  EXPECT(BUDGET_ERR_NOT_FOUND, budget_consume(&cr, m, "never-reserved", 1, 0));
  CHECK(cr == NULL);
}

static void test_consume_id(void) { for_each_store(consume_id_case, NULL); }

/* A ledger query with a malformed scope or request id is INVALID_ARGUMENT (it matched nothing,
 * so a typo looked like an empty ledger). */
static void query_case(budget_manager *m) {
  budget_ledger_query q = BUDGET_LEDGER_QUERY_INIT;
  char *text = (char *)&text;
  size_t len = 7;
  char user[128];
  const char *subject[1];
  budget_charge c = BUDGET_CHARGE_INIT;
  subject[0] = scoped(user, sizeof user, "user");
  c.cost_nanos = 1;
  OK(budget_record(NULL, m, subject, 1, &c, NULL));
  q.scope = "not a scope";
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_export(&text, &len, m, BUDGET_EXPORT_CSV, &q));
  CHECK(text == NULL && len == 0);
  q.scope = "user:*";
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  q.scope = NULL;
  q.request_id = "";
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  q.request_id = NULL;
  q.scope = subject[0];
  OK(budget_export(&text, &len, m, BUDGET_EXPORT_JSONL, &q));
  CHECK(text && len > 0 && strstr(text, subject[0]) != NULL);
  budget_free(text);
}

static void test_query(void) { for_each_store(query_case, NULL); }

/* Store settings out of range are INVALID_ARGUMENT at open. A timeout near INT64_MAX ms
 * overflowed SQLite's deadline arithmetic at open (UBSan abort); a pool of INT_MAX Redis
 * connection slots exhausted memory. */
static void test_store_options(void) {
  static const char *urls[] = {"memory", "sqlite:" BUDGET_TEST_TMP_DIR "/edges-options.db"};
  size_t i;
  remove(BUDGET_TEST_TMP_DIR "/edges-options.db");
  for (i = 0; i < sizeof urls / sizeof urls[0]; ++i) {
    budget_manager *m = (budget_manager *)&m;
    budget_options o = BUDGET_OPTIONS_INIT;
    o.store_timeout_ms = INT64_MAX;
    EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, urls[i], &o));
    CHECK(m == NULL);
    o.store_timeout_ms = 0;
    o.store_pool_size = 2147483647;
    EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, urls[i], &o));
    CHECK(m == NULL);
    o.store_pool_size = 256;
    o.store_timeout_ms = 100LL * 365 * 24 * 3600 * 1000;
    OK(budget_manager_open(&m, urls[i], &o));
    budget_manager_close(m);
  }
}

/* A default hold buffer above x100 is refused at open, as reserve refuses it per call; it was
 * accepted, and then every reserve without its own buffer_bp failed with INVALID_ARGUMENT. */
static void test_default_buffer(void) {
  budget_manager *m = (budget_manager *)&m;
  budget_options o = BUDGET_OPTIONS_INIT;
  budget_estimate e = BUDGET_ESTIMATE_INIT;
  budget_decision *d = NULL;
  o.default_buffer_bp = 1000001;
  EXPECT(BUDGET_ERR_INVALID_ARGUMENT, budget_manager_open(&m, "memory", &o));
  CHECK(m == NULL);
  o.default_buffer_bp = 1000000;
  OK(budget_manager_open(&m, "memory", &o));
  e.cost_nanos = 10;
  OK(budget_reserve(&d, m, NULL, 0, &e, NULL));
  CHECK(d && d->allowed && d->held_nanos == 1000);
  budget_free(d);
  budget_manager_close(m);
}

/* ---- driver ---------------------------------------------------------------------------- */

static const test_case TESTS[] = {
    {"ttl", test_ttl},
    {"utf8", test_utf8},
    {"record_provider", test_record_provider},
    {"remove_limit", test_remove_limit},
    {"free", test_free},
    {"currency", test_currency},
    {"consume_id", test_consume_id},
    {"query", test_query},
    {"store_options", test_store_options},
    {"default_buffer", test_default_buffer},
};

int main(int argc, char **argv) {
  return run_cases(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv, &g_failures);
}
