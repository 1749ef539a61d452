/* libbudget C example: guard a (simulated) streamed LLM call end to end.
 *
 *   reserve before the call -> consume as chunks arrive (stop when told) -> commit the
 *   provider's real usage -> the ledger verifies.
 *
 * Usage: budget_c_example_stream [path/to/budget.db]   (default: ./example-budget.db)
 * Build: cc guard_stream.c $(pkg-config --cflags --libs budget) */
#include <budget/budget.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call)                                                                      \
  do {                                                                                 \
    budget_status st_ = (call);                                                        \
    if (st_ != BUDGET_OK) {                                                            \
      fprintf(stderr, "%s failed: %s: %s\n", #call, budget_status_name(st_), budget_last_error()); \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

/* A fake provider: an OpenAI Chat Completions stream of `n` chunks of about 100 tokens of
 * text each, then the usage chunk (as sent with stream_options.include_usage). */
static size_t fake_chunk(char *buf, size_t cap, int i, int n, int prompt_tokens) {
  static const char text[] = "All work and no play makes Jack a dull boy. "; /* 44 bytes: 11 tokens */
  size_t len;
  int k;
  if (i >= n)
    return (size_t)snprintf(buf, cap,
                            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\n"
                            "data: [DONE]\n\n",
                            prompt_tokens, 99 * n);
  len = (size_t)snprintf(buf, cap, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
  for (k = 0; k < 9; ++k) len += (size_t)snprintf(buf + len, cap - len, "%s", text);
  return len + (size_t)snprintf(buf + len, cap - len, "\"}}]}\n\n");
}

static void on_alert(void *user_data, const budget_alert *a) {
  (void)user_data;
  printf("  ALERT: %s %s reached %u%% (spent %lld of %lld nanos)\n", a->scope, a->window, a->threshold_pct,
         (long long)a->spent, (long long)a->limit);
}

/* One guarded call of `chunks` streamed chunks; returns 1 when it ran to completion. */
static int guarded_call(budget_manager *m, const budget_pricing *prices, const char *request_id, int chunks) {
  const char *subject[] = {"tenant:acme", "user:alice"};
  const char *model = "gpt-4o-mini";
  const int prompt_tokens = 50000;
  budget_usage expected = BUDGET_USAGE_INIT, usage = BUDGET_USAGE_INIT;
  budget_estimate est = BUDGET_ESTIMATE_INIT;
  budget_request_options ro = BUDGET_REQUEST_OPTIONS_INIT;
  budget_charge actual = BUDGET_CHARGE_INIT;
  budget_decision *d = NULL;
  budget_receipt *r = NULL;
  budget_stream *s = NULL;
  int64_t metered = 0, cost = 0;
  int i, stopped = 0;
  char chunk[1024], *text = NULL;

  /* 1. Hold the estimate (prompt + a maximum answer), 20% buffer. */
  expected.input_tokens = prompt_tokens;
  expected.output_tokens = 500;
  est.model = model;
  est.usage = &expected;
  ro.request_id = request_id;
  ro.buffer_bp = 12000;
  TRY(budget_reserve(&d, m, subject, 2, &est, &ro));
  if (!d->allowed) {
    printf("%s: denied by %s %s: %s\n", request_id, d->denial->scope, d->denial->window, d->denial->message);
    budget_free(d);
    return 0;
  }
  TRY(budget_money_format(&text, d->held_nanos));
  printf("%s: holding %s USD\n", request_id, text);
  budget_free(text);
  budget_free(d);

  /* 2. Stream: meter each chunk, stop when the budget says so. */
  TRY(budget_stream_new(&s, BUDGET_API_OPENAI_CHAT, prompt_tokens));
  for (i = 0; i <= chunks && !stopped; ++i) {
    size_t len = fake_chunk(chunk, sizeof chunk, i, chunks, prompt_tokens);
    budget_consume_result *c = NULL;
    TRY(budget_stream_feed(s, chunk, len));
    TRY(budget_stream_usage(&usage, s));
    TRY(budget_pricing_cost(&cost, prices, model, &usage, NULL));
    if (cost <= metered) continue;
    TRY(budget_consume(&c, m, request_id, cost - metered, 0));
    metered = cost;
    if (c->verdict == BUDGET_STOP) {
      printf("%s: STOP after %d chunks: %s\n", request_id, i + 1, c->denial->message);
      stopped = 1; /* a real client closes the provider's stream here */
    }
    budget_free(c);
  }

  /* 3. Commit what the provider reports (or the estimate of a cut stream). */
  TRY(budget_stream_finish(&usage, s));
  budget_stream_destroy(s);
  actual.model = model;
  actual.usage = &usage;
  actual.provider = "openai";
  TRY(budget_commit(&r, m, request_id, &actual));
  TRY(budget_money_format(&text, r->charged_nanos));
  printf("%s: charged %s USD for %lld tokens (%s usage)%s\n", request_id, text, (long long)r->tokens,
         usage.complete ? "reported" : "estimated", r->over_limit ? ", over a limit" : "");
  budget_free(text);
  budget_free(r);
  return !stopped;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "example-budget.db";
  char url[1024];
  budget_pricing *prices = NULL;
  budget_options opts = BUDGET_OPTIONS_INIT;
  budget_manager *m = NULL;
  budget_limit lim = BUDGET_LIMIT_INIT;
  uint32_t alerts[] = {80, 100};
  budget_verify_report *v = NULL;
  int ok1, ok2;

  printf("libbudget %s (C API)\n", budget_version());
  remove(path);
  snprintf(url, sizeof url, "sqlite:%s", path);
  TRY(budget_pricing_new_bundled(&prices));
  opts.pricing = prices;
  TRY(budget_manager_open(&m, url, &opts));
  TRY(budget_on_alert(m, on_alert, NULL));

  /* Every user: $0.02 a day (alerts at 80% and 100%); the tenant: $5 a month. */
  lim.scope = "user:*";
  lim.window = "day";
  TRY(budget_money_parse(&lim.amount, "0.02"));
  lim.alert_thresholds_pct = alerts;
  lim.alert_thresholds_count = 2;
  TRY(budget_set_limit(m, &lim));
  lim.scope = "tenant:acme";
  lim.window = "month";
  TRY(budget_money_parse(&lim.amount, "5"));
  lim.alert_thresholds_count = 0;
  TRY(budget_set_limit(m, &lim));

  ok1 = guarded_call(m, prices, "chat-1", 10);  /* fits */
  ok2 = guarded_call(m, prices, "chat-2", 400); /* runs out mid-stream */

  TRY(budget_verify(&v, m));
  printf("ledger: %lld events, %s\n", (long long)v->events, v->ok ? "verified" : "MISMATCH");
  if (!v->ok) ok1 = 0;
  budget_free(v);
  budget_manager_close(m);
  budget_pricing_destroy(prices);
  remove(path);
  return ok1 && !ok2 ? 0 : 1;
}
