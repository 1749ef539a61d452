/* libbudget — the C API.
 *
 * A C99 interface over the C++ library (the headers include/budget/ *.hpp): hold money
 * before an AI provider call, meter a streamed answer, charge the real cost after it, and
 * keep an auditable ledger. The reference is docs/c-api.md; the semantics are those of the C++
 * BudgetManager, PricingEngine and provider extractors.
 *
 * Conventions (read these once; every function below follows them):
 *
 * 1. Handles. The library's objects are opaque handles: budget_manager, budget_pricing,
 *    budget_stream. Each has a constructor (budget_manager_open, budget_pricing_new,
 *    budget_stream_new) and a destructor (budget_manager_close, budget_pricing_destroy,
 *    budget_stream_destroy). Destructors accept NULL and do nothing with it.
 *
 * 2. Errors. Every function that can fail returns a budget_status: BUDGET_OK (0) on
 *    success, otherwise a code whose value equals the C++ budget::ErrorCode. On failure the
 *    library also stores a message for the calling thread, read with budget_last_error();
 *    a successful call clears it. The message stays valid until the next budget_* call on
 *    the same thread. No C++ exception ever crosses this API: every entry point catches
 *    everything (an unexpected exception, including out-of-memory, is BUDGET_ERR_INTERNAL).
 *    A refused budget is not an error: reserve/check return BUDGET_OK with a decision whose
 *    `allowed` is 0 and whose `denial` says why.
 *
 * 3. Output parameters come first and are named `out`. On failure `*out` is set to NULL
 *    (pointers) or 0 (numbers), so it is always safe to free; a result struct that the
 *    caller initialised (budget_usage) is left as it was.
 *
 * 4. Ownership. Everything the library hands out through an `out` pointer — strings,
 *    buffers, result structs (budget_decision, budget_receipt, ...) — is one allocation,
 *    released with budget_free(), which accepts NULL. As with free(), a second free or a
 *    pointer the library did not hand out is undefined behaviour (most such calls abort: a
 *    block carries a marker, cleared when freed). Pointers inside a result (strings,
 *    arrays, nested structs) belong to it and die with it. Strings are NUL-terminated
 *    UTF-8 and never NULL ("" when absent). Structs passed IN by the caller (options,
 *    limits, usage) are read during the call only; the library keeps no pointer to them,
 *    except the `user_data` of callbacks (conventions 7) and budget_options.clock_user_data,
 *    which must stay valid until the manager is closed.
 *    Results that contain no strings (budget_usage, counts, money) are written into caller
 *    memory instead.
 *
 * 5. Versioned structs. Every struct the caller fills in starts with a `version` field;
 *    initialise it with its *_INIT macro (which sets the current version and the defaults),
 *    then set the fields you need. A library accepts any version up to the one it was
 *    built with, so fields can be added without breaking programs compiled earlier. A NULL
 *    options pointer means "all defaults". Result structs allocated by the library only
 *    grow at their end; read them through the pointer, never copy them by value into
 *    storage of your own size.
 *
 * 6. Values. Booleans are `int` (0 = false, anything else = true; the library returns 0
 *    or 1). Money is an int64_t count of nanos (1e-9 of the manager's currency; $1 =
 *    1000000000) in fields named *_nanos, or exact decimal text ("12.50") through
 *    budget_money_parse / budget_money_format; never a float. Times are int64_t
 *    milliseconds since the Unix epoch (UTC); durations are milliseconds. A subject (the
 *    scopes a request is charged to) is an array of scope strings ("tenant:acme",
 *    "user:alice") and its length; `global` is always added (at most 16 scopes with it, else
 *    INVALID_ARGUMENT). NULL is accepted only where
 *    the documentation of a parameter says so; elsewhere it is BUDGET_ERR_INVALID_ARGUMENT.
 *
 * 7. Thread safety. A budget_manager and a budget_pricing may be used by any number of
 *    threads at once (the C++ objects are thread-safe), except that *_close / *_destroy
 *    must not race with other calls on the same handle. A budget_stream is one stream's
 *    state: one thread at a time. Callbacks (budget_on_alert, budget_on_denial) run
 *    synchronously on the thread whose operation caused them (the reserve, consume, commit,
 *    record, adjust or expiry that crossed a threshold or was denied), after the store has
 *    applied the operation and outside the library's locks: they may call back into the
 *    library, even on the same manager, but must not close it. Their `user_data` must stay
 *    valid until the manager is closed. The structs they receive are valid during the call
 *    only.
 *
 * 8. Versioning. BUDGET_VERSION_MAJOR / _MINOR / _PATCH and BUDGET_VERSION_CHECK(a, b, c)
 *    (from <budget/version.h>) describe the headers you compile against; budget_version()
 *    and budget_version_number() the library you run with. The shared library's SONAME
 *    carries the major version; only budget_* (and the C++ API's namespace budget) symbols
 *    are exported.
 */
#ifndef BUDGET_BUDGET_H
#define BUDGET_BUDGET_H

#include <budget/export.hpp> /* BUDGET_API: pure preprocessor, valid C */
#include <budget/version.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- versions, errors, memory -------------------------------------------------------- */

/* The run-time version of the library: "0.1.0" and MAJOR*10000 + MINOR*100 + PATCH. */
BUDGET_API const char *budget_version(void);
BUDGET_API int budget_version_number(void);

/* Equal to the values of budget::ErrorCode. */
typedef enum budget_status {
  BUDGET_OK = 0,
  BUDGET_ERR_INVALID_ARGUMENT = 1, /* bad input: NULL, malformed scope/id/window/JSON/money */
  BUDGET_ERR_UNKNOWN_MODEL = 2,    /* no price for the model and no fallback */
  BUDGET_ERR_NOT_FOUND = 3,        /* unknown request id, scope or limit */
  BUDGET_ERR_STORE_UNAVAILABLE = 4,/* the store could not answer */
  BUDGET_ERR_CONFLICT = 5,         /* request id reused for another operation or amount */
  BUDGET_ERR_OVERFLOW = 6,         /* money/count arithmetic would overflow int64 */
  BUDGET_ERR_INTERNAL = 7,         /* a bug, a corrupted store, out of memory */
  BUDGET_ERR_BUDGET_EXCEEDED = 8   /* reserved for raising conveniences; never returned here */
} budget_status;

/* The message of the last failed budget_* call on this thread; "" after a success. Never
 * NULL. Valid until the next budget_* call on this thread. */
BUDGET_API const char *budget_last_error(void);
/* The status of the last budget_* call on this thread that returns a budget_status. */
BUDGET_API budget_status budget_last_status(void);
/* "OK", "INVALID_ARGUMENT", ... (static strings); "UNKNOWN" for other values. */
BUDGET_API const char *budget_status_name(budget_status status);

/* Releases anything the library returned through an `out` pointer. NULL is a no-op. */
BUDGET_API void budget_free(void *ptr);

/* ---- money ----------------------------------------------------------------------------- */

/* Exact decimal text ("12.50", "-3", "0.000000150"; at most 9 significant fractional
 * digits, no exponent) to nanos. INVALID_ARGUMENT on malformed text, OVERFLOW out of range. */
BUDGET_API budget_status budget_money_parse(int64_t *out, const char *text);
/* Nanos to decimal text with at least two fractional digits ("12.50", "0.00000015"). */
BUDGET_API budget_status budget_money_format(char **out, int64_t nanos);

/* ---- usage ------------------------------------------------------------------------------ */

/* The provider's processing tier for a call; it selects the tier's prices. */
typedef enum budget_service_tier {
  BUDGET_TIER_STANDARD = 0,
  BUDGET_TIER_BATCH = 1,
  BUDGET_TIER_FLEX = 2,
  BUDGET_TIER_PRIORITY = 3
} budget_service_tier;

/* What a call consumed. Totals include their parts: input_tokens includes cache reads and
 * writes and (version 3) the uncached audio input; output_tokens includes reasoning and
 * (version 3) audio output. */
typedef struct budget_usage {
  unsigned int version;
  int64_t input_tokens;
  int64_t cache_read_tokens;
  int64_t cache_write_tokens;
  int64_t cache_write_1h_tokens; /* part of cache_write_tokens with a 1-hour TTL */
  int64_t output_tokens;
  int64_t reasoning_tokens;
  int64_t images;
  int64_t audio_ms;
  int64_t requests; /* billable requests; default 1 */
  int complete;     /* 0: an estimate (a stream cut before its usage arrived) */
  /* version 2: the tier that served the call (the provider's answer; the extractors fill it
   * in). Priced at that tier; budget_cost_options.tier applies only when it is STANDARD. */
  budget_service_tier service_tier;
  /* version 3: the audio parts, priced at the entry's audio per-token prices (at the text
   * prices when it has none). Version 1 and 2 structs are neither read nor written here: their
   * audio tokens count (and are priced) as text. */
  int64_t audio_input_tokens;  /* part of input_tokens: audio, not a cache read or write */
  int64_t audio_output_tokens; /* part of output_tokens: audio (not reasoning) */
} budget_usage;
#define BUDGET_USAGE_VERSION 3
#define BUDGET_USAGE_INIT {BUDGET_USAGE_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, BUDGET_TIER_STANDARD, 0, 0}

/* ---- the pricing engine ----------------------------------------------------------------- */

typedef struct budget_pricing budget_pricing;

typedef enum budget_price_format {
  BUDGET_PRICES_LITELLM = 0, /* LiteLLM's model_prices_and_context_window.json */
  BUDGET_PRICES_COMPACT = 1  /* the project's "!budget-prices 1" format */
} budget_price_format;

/* A price override, a new model, or the fallback price. Decimal text in currency units
 * per unit ("0.0000025", "2.5e-6"); NULL or "" = not priced. */
typedef struct budget_model_price {
  unsigned int version;
  const char *provider;
  const char *input;
  const char *output;
  const char *cache_read;
  const char *cache_write;
  const char *cache_write_1h;
  const char *reasoning;
  const char *per_request;
  const char *per_image;
  const char *per_audio_second;
  int64_t max_output_tokens; /* used by estimates when the caller gives no maximum; 0 = none */
  const char *extra;         /* more prices in the compact syntax, e.g. "in@200000=6e-6" */
} budget_model_price;
#define BUDGET_MODEL_PRICE_VERSION 1
#define BUDGET_MODEL_PRICE_INIT \
  {BUDGET_MODEL_PRICE_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL}

typedef enum budget_markup_scope {
  BUDGET_MARKUP_ALL = 0,
  BUDGET_MARKUP_PROVIDER = 1,
  BUDGET_MARKUP_PATTERN = 2, /* glob over the model name: '*' and '?' */
  BUDGET_MARKUP_MODEL = 3
} budget_markup_scope;

/* A markup (or, negative, a discount) in force for uses at or after effective_from_ms. */
typedef struct budget_markup {
  unsigned int version;
  budget_markup_scope scope;
  const char *match;         /* provider, model or pattern; ignored for BUDGET_MARKUP_ALL */
  const char *percent;       /* decimal percent: "20" = +20%, "-12.5"; NULL = "0" */
  int64_t fixed_nanos;       /* added per billable request; >= 0 */
  int64_t effective_from_ms;
} budget_markup;
#define BUDGET_MARKUP_VERSION 1
#define BUDGET_MARKUP_INIT {BUDGET_MARKUP_VERSION, BUDGET_MARKUP_ALL, NULL, NULL, 0, 0}

typedef struct budget_cost_options {
  unsigned int version;
  budget_service_tier tier;
  int64_t at_ms;    /* time of use (rules in force then); 0 = now */
  int apply_markup; /* default 1 */
} budget_cost_options;
#define BUDGET_COST_OPTIONS_VERSION 1
#define BUDGET_COST_OPTIONS_INIT {BUDGET_COST_OPTIONS_VERSION, BUDGET_TIER_STANDARD, 0, 1}

typedef struct budget_load_report {
  const char *table_version;
  size_t loaded;  /* entries now priceable */
  size_t skipped; /* non-model keys */
  size_t unpriceable_count;
  const char *const *unpriceable_models;  /* unpriceable_count entries */
  const char *const *unpriceable_reasons; /* unpriceable_count entries */
} budget_load_report;

typedef struct budget_line_item {
  const char *name;       /* "input", "cache_read", "output", "request", "markup", ... */
  int64_t quantity;
  const char *unit_price; /* exact decimal text, currency units per unit */
  int64_t amount_nanos;   /* rounded up to the nano */
} budget_line_item;

typedef struct budget_quote {
  int64_t cost_nanos;
  const char *model; /* the entry that resolved the name */
  const char *provider;
  const char *price_version;
  size_t items_count;
  const budget_line_item *const *items;
} budget_quote;

typedef struct budget_resolved_model {
  const char *name;
  const char *provider;
  const char *mode; /* "chat", "embedding", ... or "" */
  int64_t max_output_tokens;
} budget_resolved_model;

/* An empty engine, or one loaded with the table bundled in the library. */
BUDGET_API budget_status budget_pricing_new(budget_pricing **out);
BUDGET_API budget_status budget_pricing_new_bundled(budget_pricing **out);
/* A manager opened with this engine keeps its own reference: destroying the handle first
 * is fine. */
BUDGET_API void budget_pricing_destroy(budget_pricing *pricing);

/* Replaces the table (overrides, aliases, markups and the fallback are kept). `out` may be
 * NULL. Malformed input: INVALID_ARGUMENT and the previous table stays. */
BUDGET_API budget_status budget_pricing_load(budget_load_report **out, budget_pricing *pricing,
                                             budget_price_format format, const char *text, size_t len);
BUDGET_API budget_status budget_pricing_load_file(budget_load_report **out, budget_pricing *pricing,
                                                  budget_price_format format, const char *path);
BUDGET_API budget_status budget_pricing_set_price(budget_pricing *pricing, const char *model,
                                                  const budget_model_price *price, int64_t effective_from_ms);
BUDGET_API budget_status budget_pricing_add_alias(budget_pricing *pricing, const char *alias, const char *target);
BUDGET_API budget_status budget_pricing_add_markup(budget_pricing *pricing, const budget_markup *rule);
/* The price of names that resolve to nothing; NULL removes it. */
BUDGET_API budget_status budget_pricing_set_fallback(budget_pricing *pricing, const budget_model_price *price);

/* Exact cost in nanos. `options` may be NULL. UNKNOWN_MODEL, INVALID_ARGUMENT, OVERFLOW. */
BUDGET_API budget_status budget_pricing_cost(int64_t *out, const budget_pricing *pricing, const char *model,
                                             const budget_usage *usage, const budget_cost_options *options);
BUDGET_API budget_status budget_pricing_quote(budget_quote **out, const budget_pricing *pricing, const char *model,
                                              const budget_usage *usage, const budget_cost_options *options);
/* Pre-flight cost of input_tokens in and max_output_tokens out, one request;
 * max_output_tokens < 0 = the model's maximum from the table, else 4096. */
BUDGET_API budget_status budget_pricing_estimate(int64_t *out, const budget_pricing *pricing, const char *model,
                                                 int64_t input_tokens, int64_t max_output_tokens,
                                                 const budget_cost_options *options);
/* Name resolution only (the fallback is not consulted): UNKNOWN_MODEL. */
BUDGET_API budget_status budget_pricing_resolve(budget_resolved_model **out, const budget_pricing *pricing,
                                                const char *model);
/* The table and rules in force at at_ms (0 = now). */
BUDGET_API budget_status budget_pricing_price_version(char **out, const budget_pricing *pricing, int64_t at_ms);
BUDGET_API budget_status budget_pricing_size(size_t *out, const budget_pricing *pricing);
/* The current table in the compact format. */
BUDGET_API budget_status budget_pricing_to_compact(char **out, const budget_pricing *pricing);

/* ---- usage from the providers' JSON ------------------------------------------------------ */

typedef enum budget_api_format {
  BUDGET_API_OPENAI_CHAT = 0,      /* POST /v1/chat/completions */
  BUDGET_API_OPENAI_RESPONSES = 1, /* POST /v1/responses */
  BUDGET_API_ANTHROPIC = 2,        /* POST /v1/messages */
  BUDGET_API_GEMINI = 3            /* generateContent / streamGenerateContent */
} budget_api_format;

/* "openai" / "openai-chat", "openai-responses", "anthropic", "gemini" / "google". */
BUDGET_API budget_status budget_api_format_parse(budget_api_format *out, const char *name);
/* Token estimate of UTF-8 text (conservative; see providers.hpp). */
BUDGET_API budget_status budget_estimate_tokens(int64_t *out, const char *utf8_text, size_t len);
/* Usage of a complete response body. `out` must be initialised with BUDGET_USAGE_INIT.
 * Malformed JSON: INVALID_ARGUMENT. A body without usage: an estimate, complete = 0. */
BUDGET_API budget_status budget_usage_from_response(budget_usage *out, budget_api_format format,
                                                    const char *json, size_t len);

/* One streamed response's usage accumulator. */
typedef struct budget_stream budget_stream;
/* input_tokens_estimate: input tokens to assume until the provider reports them. */
BUDGET_API budget_status budget_stream_new(budget_stream **out, budget_api_format format,
                                           int64_t input_tokens_estimate);
BUDGET_API void budget_stream_destroy(budget_stream *stream);
/* Raw body bytes as they arrive (SSE split anywhere, or Gemini's JSON array stream). */
BUDGET_API budget_status budget_stream_feed(budget_stream *stream, const char *bytes, size_t len);
/* One already-split event's JSON payload (the `data:` of an SSE event). */
BUDGET_API budget_status budget_stream_feed_event(budget_stream *stream, const char *json, size_t len);
/* End of the stream; writes the final usage (an estimate with complete = 0 when the
 * provider never sent it). INVALID_ARGUMENT when the body ends inside an event. */
BUDGET_API budget_status budget_stream_finish(budget_usage *out, budget_stream *stream);
/* The usage so far: the provider's numbers once seen, else the best estimate. */
BUDGET_API budget_status budget_stream_usage(budget_usage *out, const budget_stream *stream);
/* Whether the provider's final numbers have been seen (0/1). */
BUDGET_API budget_status budget_stream_has_final_usage(int *out, const budget_stream *stream);
BUDGET_API budget_status budget_stream_estimated_output_tokens(int64_t *out, const budget_stream *stream);

/* ---- the manager ------------------------------------------------------------------------ */

typedef struct budget_manager budget_manager;

/* A clock for tests and simulations: milliseconds since the epoch. Must be thread-safe. The
 * manager calls it with clock_user_data until it is closed. */
typedef int64_t (*budget_clock_fn)(void *user_data);

typedef struct budget_options {
  unsigned int version;
  const char *currency;            /* NULL = "USD"; 1-16 printable ASCII, no spaces */
  int utc_offset_minutes;          /* time zone of calendar windows (fixed offset; see time_zone) */
  int64_t default_ttl_ms;          /* hold time-to-live; 0 = 600000 (10 minutes); <= 100 years */
  uint32_t default_buffer_bp;      /* hold = estimate x buffer (basis points, <= 1000000); 0 = 10000 */
  uint32_t growth_step_bp;         /* streaming growth step (of the first hold); 0 = 5000 */
  int64_t min_growth_nanos;        /* smallest growth of a hold; 0 = 1000 */
  int64_t persist_every_nanos;     /* persist consumed spend every N nanos; 0 = on growth only */
  int fail_open;                   /* store down: 0 = deny (default), 1 = allow */
  int64_t store_timeout_ms;        /* 0 = 2000; at most 100 years */
  int store_pool_size;             /* Redis connections; 0 = 4; at most 256 */
  const budget_pricing *pricing;   /* prices models; NULL = none (money-only estimates) */
  budget_clock_fn clock;           /* NULL = the system clock */
  void *clock_user_data;
  /* version 2: */
  const char *time_zone;           /* IANA name ("Europe/Paris"); NULL = utc_offset_minutes */
} budget_options;
/* Version 1 ended at clock_user_data; a version-1 struct is still accepted. */
#define BUDGET_OPTIONS_VERSION 2
#define BUDGET_OPTIONS_INIT {BUDGET_OPTIONS_VERSION, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL}

/* Opens a manager on a store: "memory", "sqlite:<path>", "redis://[user:pass@]host:port/db".
 * `options` may be NULL. INVALID_ARGUMENT (bad URL or options), STORE_UNAVAILABLE. */
BUDGET_API budget_status budget_manager_open(budget_manager **out, const char *store_url,
                                             const budget_options *options);
BUDGET_API void budget_manager_close(budget_manager *manager);

/* ---- limits ------------------------------------------------------------------------------ */

typedef enum budget_metric {
  BUDGET_METRIC_COST = 0,    /* nanos */
  BUDGET_METRIC_TOKENS = 1,  /* input + output tokens */
  BUDGET_METRIC_REQUESTS = 2
} budget_metric;

/* A limit on one scope ("user:alice", "global") or a kind-wide default ("user:*"). Windows:
 * "minute", "hour", "day", "week", "month", "total", "rolling:<duration>" ("rolling:1h"),
 * "custom:<start>/<end>". */
typedef struct budget_limit {
  unsigned int version;
  const char *scope;
  const char *window;
  budget_metric metric;
  int64_t amount; /* nanos for COST, a count for TOKENS and REQUESTS */
  const uint32_t *alert_thresholds_pct; /* e.g. {50, 80, 100}; may be NULL */
  size_t alert_thresholds_count;
} budget_limit;
#define BUDGET_LIMIT_VERSION 1
#define BUDGET_LIMIT_INIT {BUDGET_LIMIT_VERSION, NULL, NULL, BUDGET_METRIC_COST, 0, NULL, 0}

typedef struct budget_limit_list {
  size_t count;
  const budget_limit *const *items; /* strings and thresholds owned by the list */
} budget_limit_list;

/* Upserts a limit (identity: scope, metric, window). */
BUDGET_API budget_status budget_set_limit(budget_manager *manager, const budget_limit *limit);
/* `out` (may be NULL) receives 1 when a limit was removed, 0 when there was none. */
BUDGET_API budget_status budget_remove_limit(int *out, budget_manager *manager, const char *scope,
                                             const char *window, budget_metric metric);
BUDGET_API budget_status budget_list_limits(budget_limit_list **out, budget_manager *manager);

/* ---- the lifecycle --------------------------------------------------------------------- */

/* What to hold or check: money, or a model + expected usage priced by the manager's
 * pricing engine (then cost_nanos is ignored). */
typedef struct budget_estimate {
  unsigned int version;
  int64_t cost_nanos;
  int64_t tokens;            /* counted against token limits */
  const char *model;         /* NULL = money only */
  const budget_usage *usage; /* with model */
} budget_estimate;
#define BUDGET_ESTIMATE_VERSION 1
#define BUDGET_ESTIMATE_INIT {BUDGET_ESTIMATE_VERSION, 0, 0, NULL, NULL}

/* The actual charge of a commit or record: money, or a model + actual usage. */
typedef struct budget_charge {
  unsigned int version;
  int64_t cost_nanos;
  int64_t tokens;
  const char *model;
  const budget_usage *usage;
  const char *provider;
} budget_charge;
#define BUDGET_CHARGE_VERSION 1
#define BUDGET_CHARGE_INIT {BUDGET_CHARGE_VERSION, 0, 0, NULL, NULL, NULL}

typedef struct budget_request_options {
  unsigned int version;
  const char *request_id;      /* the idempotency key; NULL = generated; "" is INVALID_ARGUMENT */
  uint32_t buffer_bp;          /* 0 = the manager's default (12000 = hold 1.2 x estimate) */
  int64_t ttl_ms;              /* 0 = the manager's default; at most 100 years */
  const char *provider;
  const char *const *metadata; /* key, value, key, value... recorded in the ledger */
  size_t metadata_count;       /* number of key/value PAIRS */
  const char *reason;          /* grants and adjustments */
} budget_request_options;
#define BUDGET_REQUEST_OPTIONS_VERSION 1
#define BUDGET_REQUEST_OPTIONS_INIT {BUDGET_REQUEST_OPTIONS_VERSION, NULL, 0, 0, NULL, NULL, 0, NULL}

typedef enum budget_deny_reason {
  BUDGET_DENY_NONE = 0,
  BUDGET_DENY_LIMIT_EXCEEDED = 1,
  BUDGET_DENY_STORE_UNAVAILABLE = 2,
  BUDGET_DENY_NOT_HELD = 3 /* consume: the request holds nothing (expired, settled, denied) */
} budget_deny_reason;

/* Why a reserve/check/consume was refused. Amounts in the metric's unit. */
typedef struct budget_denial {
  budget_deny_reason reason;
  const char *scope;  /* the first exhausted scope */
  const char *window; /* its window */
  budget_metric metric;
  int64_t limit, spent, held, remaining, requested;
  int has_resets_at; /* 0 for "total" windows */
  int64_t resets_at_ms;
  int hard;          /* 1: spend alone leaves no room (HTTP 402); 0: retry may succeed (429) */
  const char *message;
} budget_denial;

typedef struct budget_decision {
  int allowed;
  int replayed;              /* the request id had been seen: this is the first result */
  int fail_open;             /* allowed only because the store was down and fail_open is on */
  int64_t estimate_nanos;    /* the priced and buffered amount asked for */
  const char *request_id;    /* reserve, allowed: the reservation's id (generated if none
                                given); "" when denied and for check */
  int64_t held_nanos;        /* reserve, allowed: what is held */
  int64_t held_tokens;
  int64_t expires_at_ms;
  const budget_denial *denial; /* NULL when allowed */
} budget_decision;

typedef enum budget_verdict { BUDGET_CONTINUE = 0, BUDGET_STOP = 1 } budget_verdict;

typedef struct budget_consume_result {
  budget_verdict verdict;      /* BUDGET_STOP: end the stream now */
  int64_t consumed_nanos;      /* running total of the stream */
  int64_t held_nanos;          /* current hold */
  const budget_denial *denial; /* NULL unless BUDGET_STOP */
} budget_consume_result;

typedef struct budget_receipt {
  const char *request_id;
  int64_t charged_nanos;  /* what this request was charged in total */
  int64_t released_nanos; /* hold released */
  int64_t tokens;
  int over_hold;          /* charged more than was held */
  int over_limit;         /* a limit is now exceeded (the spend is recorded anyway) */
  int after_expiry;       /* committed after the hold expired: recorded as an adjustment */
  int replayed;
  const char *model;
  const char *price_version;
  size_t over_limit_scopes_count;
  const char *const *over_limit_scopes;
  size_t items_count;
  const budget_line_item *const *items; /* when priced */
} budget_receipt;

typedef struct budget_limit_status {
  const char *key; /* "user:*|cost|day" */
  const char *scope;
  const char *window;
  budget_metric metric;
  int64_t limit; /* including grants */
  int64_t granted;
  int64_t spent, held, remaining;
  int64_t window_start_ms;
  int has_resets_at;
  int64_t resets_at_ms;
} budget_limit_status;

typedef struct budget_limit_status_list {
  size_t count;
  const budget_limit_status *const *items;
} budget_limit_status_list;

/* Holds estimate x buffer on every scope of the subject, all or nothing. A denial is
 * BUDGET_OK with (*out)->allowed == 0. `estimate` and `options` may be NULL (zero / defaults).
 * Reusing a request id for a different reserve: CONFLICT. Repeating it replays the first
 * decision, a denial included (replayed = 1): retry a denied request with a new id. */
BUDGET_API budget_status budget_reserve(budget_decision **out, budget_manager *manager,
                                        const char *const *subject, size_t subject_count,
                                        const budget_estimate *estimate,
                                        const budget_request_options *options);
/* Adds streamed spend to a reservation; BUDGET_STOP when no scope can grow the hold.
 * NOT_FOUND for an unknown request id; INVALID_ARGUMENT for "" or a malformed one. */
BUDGET_API budget_status budget_consume(budget_consume_result **out, budget_manager *manager,
                                        const char *request_id, int64_t amount_nanos, int64_t tokens);
/* The final charge: replaces the hold by the actual cost. Repeating it returns the first
 * receipt (replayed = 1); with a different amount: CONFLICT. NOT_FOUND, UNKNOWN_MODEL. */
BUDGET_API budget_status budget_commit(budget_receipt **out, budget_manager *manager, const char *request_id,
                                       const budget_charge *actual);
/* Voids a hold. CONFLICT after a commit. `out` may be NULL. */
BUDGET_API budget_status budget_release(budget_receipt **out, budget_manager *manager, const char *request_id);
/* Settles holds whose TTL passed; `out` (may be NULL) receives how many. */
BUDGET_API budget_status budget_expire_holds(size_t *out, budget_manager *manager);
/* Like reserve, but holds nothing. */
BUDGET_API budget_status budget_check(budget_decision **out, budget_manager *manager,
                                      const char *const *subject, size_t subject_count,
                                      const budget_estimate *estimate);
/* Direct spend after the fact (check-then-charge style). `out` may be NULL. */
BUDGET_API budget_status budget_record(budget_receipt **out, budget_manager *manager,
                                       const char *const *subject, size_t subject_count,
                                       const budget_charge *actual, const budget_request_options *options);
/* Raises the `total` limits of a scope (a top-up) by amount_nanos (> 0). */
BUDGET_API budget_status budget_grant(budget_manager *manager, const char *scope, int64_t amount_nanos,
                                      const budget_request_options *options);
/* Adds (or, negative, removes) spend on every scope of a subject. */
BUDGET_API budget_status budget_adjust(budget_manager *manager, const char *const *subject, size_t subject_count,
                                       int64_t delta_nanos, const budget_request_options *options);
/* Per limit of a scope: window, limit, spent, held, remaining, resets. */
BUDGET_API budget_status budget_scope_status(budget_limit_status_list **out, budget_manager *manager,
                                             const char *scope);

/* ---- observers --------------------------------------------------------------------------- */

typedef struct budget_alert {
  const char *scope;
  const char *window;
  const char *limit_key;
  budget_metric metric;
  uint32_t threshold_pct;
  int64_t limit;
  int64_t spent;
  int64_t window_start_ms;
  const char *request_id; /* the operation (or the expired hold) whose spend crossed it */
} budget_alert;

/* Once per limit, window, threshold and cap (a top-up re-arms it), when spend crosses it
   (conventions 7). */
typedef void (*budget_alert_fn)(void *user_data, const budget_alert *alert);
/* For every denial (reserve, check, consume). */
typedef void (*budget_denial_fn)(void *user_data, const budget_denial *denial, const char *const *subject,
                                 size_t subject_count);

/* Registers a callback for the manager's lifetime (callbacks cannot be removed). */
BUDGET_API budget_status budget_on_alert(budget_manager *manager, budget_alert_fn callback, void *user_data);
BUDGET_API budget_status budget_on_denial(budget_manager *manager, budget_denial_fn callback, void *user_data);

/* ---- the ledger -------------------------------------------------------------------------- */

typedef struct budget_ledger_query {
  unsigned int version;
  int64_t from_ms;        /* inclusive; INT64_MIN = unbounded */
  int64_t to_ms;          /* exclusive; INT64_MAX = unbounded */
  const char *scope;      /* events whose subject contains it; NULL = all */
  const char *request_id; /* NULL = all */
  const char *type;       /* "reserve", "consume", "commit", "release", "expire", "record",
                             "grant", "adjust", "deny"; NULL = all */
  int64_t after_seq;      /* events with seq > after_seq */
  size_t limit;           /* 0 = no limit */
} budget_ledger_query;
#define BUDGET_LEDGER_QUERY_VERSION 1
#define BUDGET_LEDGER_QUERY_INIT {BUDGET_LEDGER_QUERY_VERSION, INT64_MIN, INT64_MAX, NULL, NULL, NULL, 0, 0}

typedef enum budget_export_format {
  BUDGET_EXPORT_CSV = 0,  /* a header line, then one line per event */
  BUDGET_EXPORT_JSONL = 1 /* one JSON object per line */
} budget_export_format;

typedef struct budget_verify_report {
  int ok;
  int chain_ok;
  int64_t events;
  int64_t windows_checked;
  size_t problems_count;
  const char *const *problems;
} budget_verify_report;

/* Exports events into a NUL-terminated buffer; `out_len` (may be NULL) receives its length
 * without the NUL. `query` may be NULL (everything). */
BUDGET_API budget_status budget_export(char **out, size_t *out_len, budget_manager *manager,
                                       budget_export_format format, const budget_ledger_query *query);
/* Recomputes balances from the ledger and checks the hash chain. */
BUDGET_API budget_status budget_verify(budget_verify_report **out, budget_manager *manager);
/* The manager's counters in the Prometheus text format. */
BUDGET_API budget_status budget_metrics_text(char **out, const budget_manager *manager);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BUDGET_BUDGET_H */
