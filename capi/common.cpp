// libbudget C API — versions, errors, memory, money and shared conversions.
#include "glue.hpp"

#include <climits>

namespace budget::capi {

namespace {
struct ThreadError {
  budget_status status = BUDGET_OK;
  std::string message;
};
thread_local ThreadError t_error;
}  // namespace

void set_error(budget_status status, const char* message) noexcept {
  t_error.status = status;
  try {
    t_error.message.assign(message ? message : "");
  } catch (...) {
    t_error.message.clear();  // keeps its capacity; cannot throw
  }
}

void clear_error() noexcept {
  t_error.status = BUDGET_OK;
  t_error.message.clear();
}

void* new_block(size_t payload, Pool* pool) {
  void* raw = std::malloc(sizeof(BlockHeader) + (payload ? payload : 1));
  if (!raw) throw std::bad_alloc();
  auto* h = new (raw) BlockHeader{kBlockMagic, pool};
  return h + 1;
}

char* new_string(std::string_view s) {
  auto* p = static_cast<char*>(new_block(s.size() + 1, nullptr));
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

ServiceTier to_tier(int t) {
  switch (t) {
    case BUDGET_TIER_STANDARD: return ServiceTier::Standard;
    case BUDGET_TIER_BATCH: return ServiceTier::Batch;
    case BUDGET_TIER_FLEX: return ServiceTier::Flex;
    case BUDGET_TIER_PRIORITY: return ServiceTier::Priority;
    default: invalid("unknown service tier " + std::to_string(t));
  }
}

Usage to_usage(const budget_usage& u) {
  check_version(u.version, BUDGET_USAGE_VERSION, "budget_usage");
  Usage r;
  r.input_tokens = u.input_tokens;
  r.cache_read_tokens = u.cache_read_tokens;
  r.cache_write_tokens = u.cache_write_tokens;
  r.cache_write_1h_tokens = u.cache_write_1h_tokens;
  r.output_tokens = u.output_tokens;
  r.reasoning_tokens = u.reasoning_tokens;
  r.images = u.images;
  r.audio_ms = u.audio_ms;
  r.requests = u.requests;
  r.complete = u.complete != 0;
  if (u.version >= 2) r.service_tier = to_tier(raw(u.service_tier));
  if (u.version >= 3) {
    r.audio_input_tokens = u.audio_input_tokens;
    r.audio_output_tokens = u.audio_output_tokens;
  }
  r.validate();
  return r;
}

void from_usage(budget_usage& out, const Usage& u) {
  // Version 1 is every field; later versions add fields after these.
  out.input_tokens = u.input_tokens;
  out.cache_read_tokens = u.cache_read_tokens;
  out.cache_write_tokens = u.cache_write_tokens;
  out.cache_write_1h_tokens = u.cache_write_1h_tokens;
  out.output_tokens = u.output_tokens;
  out.reasoning_tokens = u.reasoning_tokens;
  out.images = u.images;
  out.audio_ms = u.audio_ms;
  out.requests = u.requests;
  out.complete = u.complete ? 1 : 0;
  if (out.version >= 2) out.service_tier = static_cast<budget_service_tier>(u.service_tier);
  if (out.version >= 3) {
    out.audio_input_tokens = u.audio_input_tokens;
    out.audio_output_tokens = u.audio_output_tokens;
  }
}

Subject to_subject(const char* const* scopes, size_t count) {
  if (count == 0) return Subject();
  if (!scopes) invalid("subject is NULL but subject_count is " + std::to_string(count));
  if (count > Subject::kMaxScopes) invalid("a subject has at most " + std::to_string(Subject::kMaxScopes) + " scopes");
  std::vector<Scope> v;
  v.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (!scopes[i]) invalid("subject[" + std::to_string(i) + "] is NULL");
    v.push_back(Scope::parse(scopes[i]));
  }
  return Subject(std::move(v));
}

Metric to_metric(int m) {
  switch (m) {
    case BUDGET_METRIC_COST: return Metric::Cost;
    case BUDGET_METRIC_TOKENS: return Metric::Tokens;
    case BUDGET_METRIC_REQUESTS: return Metric::Requests;
    default: invalid("unknown metric " + std::to_string(m));
  }
}

RequestOptions to_request_options(const budget_request_options* o) {
  RequestOptions r;
  if (!o) return r;
  check_version(o->version, BUDGET_REQUEST_OPTIONS_VERSION, "budget_request_options");
  // NULL asks for a generated id; "" is refused (an idempotency key read from an absent field
  // would otherwise silently become a fresh id, and a retry would be charged again).
  if (o->request_id && !*o->request_id)
    throw InvalidArgumentError("request_id is empty (NULL has one generated)");
  r.request_id = std::string(opt_str(o->request_id));
  if (o->buffer_bp) r.buffer_bp = o->buffer_bp;
  if (o->ttl_ms < 0) invalid("ttl_ms is negative");
  if (o->ttl_ms) r.ttl = Duration(o->ttl_ms);
  r.provider = std::string(opt_str(o->provider));
  if (o->metadata_count) {
    if (!o->metadata) invalid("metadata is NULL but metadata_count is " + std::to_string(o->metadata_count));
    for (size_t i = 0; i < o->metadata_count; ++i) {
      const char* k = o->metadata[2 * i];
      const char* v = o->metadata[2 * i + 1];
      if (!k || !v) invalid("metadata pair " + std::to_string(i) + " has a NULL key or value");
      r.metadata[k] = v;
    }
  }
  r.reason = std::string(opt_str(o->reason));
  return r;
}

static_assert(static_cast<int>(DenyReason::None) == BUDGET_DENY_NONE &&
              static_cast<int>(DenyReason::LimitExceeded) == BUDGET_DENY_LIMIT_EXCEEDED &&
              static_cast<int>(DenyReason::StoreUnavailable) == BUDGET_DENY_STORE_UNAVAILABLE &&
              static_cast<int>(DenyReason::NotHeld) == BUDGET_DENY_NOT_HELD,
              "the C deny reasons are the C++ ones");

const budget_denial* make_denial(Pool& pool, const Denial& d) {
  auto* c = pool.obj<budget_denial>();
  c->reason = static_cast<budget_deny_reason>(static_cast<int>(d.reason));
  c->scope = pool.str(d.scope);
  c->window = pool.str(d.window);
  c->metric = static_cast<budget_metric>(static_cast<int>(d.metric));
  c->limit = d.limit;
  c->spent = d.spent;
  c->held = d.held;
  c->remaining = d.remaining;
  c->requested = d.requested;
  c->has_resets_at = d.resets_at ? 1 : 0;
  c->resets_at_ms = d.resets_at ? ms(*d.resets_at) : 0;
  c->hard = d.hard ? 1 : 0;
  c->message = pool.str(d.message);
  return c;
}

const budget_line_item* const* make_items(Pool& pool, const std::vector<LineItem>& items) {
  auto** a = pool.ptrs<budget_line_item>(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    auto* li = pool.obj<budget_line_item>();
    li->name = pool.str(items[i].name);
    li->quantity = items[i].quantity;
    li->unit_price = pool.str(items[i].unit_price);
    li->amount_nanos = items[i].amount.nanos();
    a[i] = li;
  }
  return a;
}

}  // namespace budget::capi

using namespace budget;
using namespace budget::capi;

extern "C" {

const char* budget_version(void) { return BUDGET_VERSION_STRING; }
int budget_version_number(void) { return BUDGET_VERSION_NUMBER; }

const char* budget_last_error(void) { return t_error.message.c_str(); }
budget_status budget_last_status(void) { return t_error.status; }

const char* budget_status_name(budget_status status) {
  int v = raw(status);
  if (v < BUDGET_OK || v > BUDGET_ERR_BUDGET_EXCEEDED) return "UNKNOWN";
  return to_string(static_cast<ErrorCode>(v));
}

void budget_free(void* ptr) {
  if (!ptr) return;
  auto* h = static_cast<BlockHeader*>(ptr) - 1;
  if (h->magic != kBlockMagic) std::abort();  // not ours, or freed twice
  h->magic = 0;
  delete h->pool;
  std::free(h);
}

budget_status budget_money_parse(int64_t* out, const char* text) {
  if (out) *out = 0;
  return guard([&] {
    auto& o = need(out, "out");
    o = Money::parse(need_str(text, "text")).nanos();
  });
}

budget_status budget_money_format(char** out, int64_t nanos) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    o = new_string(Money::from_nanos(nanos).to_string());
  });
}

}  // extern "C"
