#include <budget/error.hpp>
#include <budget/ledger.hpp>

#include <nlohmann/json.hpp>

#include <charconv>
#include <ostream>

#include "json_text.hpp"
#include "ledger_codec.hpp"
#include "sha256.hpp"

namespace budget {

namespace {
constexpr const char* kTypeNames[] = {"reserve", "consume", "commit", "release", "expire",
                                      "record", "grant", "adjust", "deny"};

using ordered = nlohmann::ordered_json;

ordered amounts_json(const Amounts& a) { return ordered::array({a.cost, a.tokens, a.requests}); }
Amounts amounts_from(const ordered& j) {
  return {j.at(0).get<int64_t>(), j.at(1).get<int64_t>(), j.at(2).get<int64_t>()};
}

ordered usage_json(const Usage& u) {
  ordered j;
  j["input_tokens"] = u.input_tokens;
  j["cache_read_tokens"] = u.cache_read_tokens;
  j["cache_write_tokens"] = u.cache_write_tokens;
  j["cache_write_1h_tokens"] = u.cache_write_1h_tokens;
  j["output_tokens"] = u.output_tokens;
  j["reasoning_tokens"] = u.reasoning_tokens;
  j["images"] = u.images;
  j["audio_ms"] = u.audio_ms;
  j["requests"] = u.requests;
  // Only when not zero (as the tier below): events written before the fields existed, and
  // every usage without audio tokens, keep their bytes and hashes.
  if (u.audio_input_tokens) j["audio_input_tokens"] = u.audio_input_tokens;
  if (u.audio_output_tokens) j["audio_output_tokens"] = u.audio_output_tokens;
  // Only when not standard: the events written before the field existed keep their bytes (and
  // hashes), and most calls are standard.
  if (u.service_tier != ServiceTier::Standard) j["service_tier"] = to_string(u.service_tier);
  j["complete"] = u.complete;
  return j;
}
Usage usage_from(const ordered& j) {
  Usage u;
  u.input_tokens = j.value("input_tokens", int64_t{0});
  u.cache_read_tokens = j.value("cache_read_tokens", int64_t{0});
  u.cache_write_tokens = j.value("cache_write_tokens", int64_t{0});
  u.cache_write_1h_tokens = j.value("cache_write_1h_tokens", int64_t{0});
  u.output_tokens = j.value("output_tokens", int64_t{0});
  u.reasoning_tokens = j.value("reasoning_tokens", int64_t{0});
  u.images = j.value("images", int64_t{0});
  u.audio_ms = j.value("audio_ms", int64_t{0});
  u.requests = j.value("requests", int64_t{1});
  u.audio_input_tokens = j.value("audio_input_tokens", int64_t{0});
  u.audio_output_tokens = j.value("audio_output_tokens", int64_t{0});
  u.complete = j.value("complete", true);
  // A name this build does not know (a newer build's, sharing the store) is an error, not
  // standard: read as standard, the event would be re-encoded without it and verify() would
  // report the hash chain broken where nothing was altered.
  if (auto t = j.find("service_tier"); t != j.end() && t->is_string()) {
    const auto& name = t->get_ref<const std::string&>();
    try {
      u.service_tier = parse_service_tier(name);
    } catch (const InvalidArgumentError&) {
      throw InvalidArgumentError("ledger event with an unknown service tier '" + name.substr(0, 40) +
                                 "' (written by a newer libbudget?)");
    }
  }
  return u;
}

ordered body_json(const LedgerEvent& e) {
  ordered j;
  j["time"] = to_millis(e.time);
  j["type"] = to_string(e.type);
  j["request_id"] = e.request_id;
  j["subject"] = e.subject;
  if (!e.model.empty()) j["model"] = e.model;
  if (!e.provider.empty()) j["provider"] = e.provider;
  if (!e.price_version.empty()) j["price_version"] = e.price_version;
  if (e.usage) j["usage"] = usage_json(*e.usage);
  j["spent"] = amounts_json(e.spent);
  j["held"] = amounts_json(e.held);
  j["granted"] = amounts_json(e.granted);
  j["windows"] = e.windows;
  if (!e.metadata.empty()) j["metadata"] = ordered::parse(e.metadata);
  return j;
}
}  // namespace

const char* to_string(EventType t) noexcept { return kTypeNames[static_cast<int>(t)]; }

EventType parse_event_type(std::string_view text) {
  for (int i = 0; i < 9; ++i)
    if (text == kTypeNames[i]) return static_cast<EventType>(i);
  throw InvalidArgumentError("unknown event type '" + std::string(text.substr(0, 40)) + "'");
}

std::string LedgerEvent::to_json() const {
  ordered j;
  j["seq"] = seq;
  j["at"] = format_time(time);
  auto body = body_json(*this);
  for (auto& [k, v] : body.items()) j[k] = v;
  j["amount"] = amount().to_string();
  j["prev_hash"] = prev_hash;
  j["hash"] = hash;
  return j.dump();
}

void write_csv_header(std::ostream& out) {
  out << "seq,time,type,request_id,subject,model,provider,amount,spent_nanos,tokens,requests,held_nanos,"
         "granted_nanos,price_version,input_tokens,output_tokens,hash\n";
}

namespace {
// A text field. One that a spreadsheet would read as a formula (it starts with = + - @, a tab
// or a carriage return: CSV injection) is written with a leading apostrophe, quoted, so an
// export opened for invoicing shows the text and runs nothing; request ids often come from
// end users (an idempotency header). JSON lines carry every field exactly.
std::string csv_field(std::string_view s) {
  const bool formula = !s.empty() && std::string_view("=+-@\t\r").find(s.front()) != std::string_view::npos;
  bool quote = formula || s.find_first_of(",\"\n\r") != std::string_view::npos;
  if (!quote) return std::string(s);
  std::string out = formula ? "\"'" : "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}
}  // namespace

void write_csv_row(std::ostream& out, const LedgerEvent& e) {
  std::string subject;
  for (const auto& s : e.subject) subject += (subject.empty() ? "" : ";") + s;
  out << e.seq << ',' << format_time(e.time) << ',' << to_string(e.type) << ',' << csv_field(e.request_id) << ','
      << csv_field(subject) << ',' << csv_field(e.model) << ',' << csv_field(e.provider) << ','
      << e.amount().to_string() << ',' << e.spent.cost << ',' << e.spent.tokens << ',' << e.spent.requests << ','
      << e.held.cost << ',' << e.granted.cost << ',' << csv_field(e.price_version) << ','
      << (e.usage ? e.usage->input_tokens : 0) << ',' << (e.usage ? e.usage->output_tokens : 0) << ',' << e.hash
      << '\n';
}

namespace detail {

std::string event_body_json(const LedgerEvent& e) { return body_json(e).dump(); }

namespace {
bool plain(std::string_view v) {
  for (unsigned char c : v)
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return false;
  return true;
}
void put_str(std::string& out, std::string_view v) {
  out += '"';
  out.append(v);
  out += '"';
}
// A string field: as is when plain (the common case), else escaped as nlohmann escapes it;
// false for a string append_json_string refuses (not UTF-8, C1 controls).
bool put_text(std::string& out, std::string_view v) {
  if (plain(v)) {
    put_str(out, v);
    return true;
  }
  return append_json_string(out, v);
}
bool put_texts(std::string& out, const std::vector<std::string>& v) {
  out += '[';
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    if (!put_text(out, v[i])) return false;
  }
  out += ']';
  return true;
}
void put_amounts(std::string& out, const char* key, const Amounts& a) {
  out.append(key);
  append_json_int(out, a.cost);
  out += ',';
  append_json_int(out, a.tokens);
  out += ',';
  append_json_int(out, a.requests);
  out += ']';
}
}  // namespace

size_t direct_event_body(const LedgerEvent& e, std::string& out, bool with_windows) {
  constexpr size_t kNo = std::string::npos;
  // Metadata is JSON text that body_json parses and dumps again: spliced as is when it is
  // already in that dump's form (our own writers', metadata_json's and the consume's).
  if (!e.metadata.empty() && !canonical_json(e.metadata)) return kNo;
  out.clear();
  // One allocation for the whole body in the usual case (~220 bytes + the variable parts).
  size_t size = 256 + e.metadata.size() + e.request_id.size() + (e.usage ? 256 : 0);
  if (with_windows)
    for (const auto& w : e.windows) size += w.size() + 3;
  out.reserve(size);
  out.append("{\"time\":");
  append_json_int(out, to_millis(e.time));
  out.append(",\"type\":");
  put_str(out, to_string(e.type));
  out.append(",\"request_id\":");
  if (!put_text(out, e.request_id)) return kNo;
  out.append(",\"subject\":");
  if (!put_texts(out, e.subject)) return kNo;
  if (!e.model.empty()) {
    out.append(",\"model\":");
    if (!put_text(out, e.model)) return kNo;
  }
  if (!e.provider.empty()) {
    out.append(",\"provider\":");
    if (!put_text(out, e.provider)) return kNo;
  }
  if (!e.price_version.empty()) {
    out.append(",\"price_version\":");
    if (!put_text(out, e.price_version)) return kNo;
  }
  if (e.usage) {
    const Usage& u = *e.usage;
    const std::pair<const char*, int64_t> f[] = {
        {"{\"input_tokens\":", u.input_tokens}, {",\"cache_read_tokens\":", u.cache_read_tokens},
        {",\"cache_write_tokens\":", u.cache_write_tokens}, {",\"cache_write_1h_tokens\":", u.cache_write_1h_tokens},
        {",\"output_tokens\":", u.output_tokens}, {",\"reasoning_tokens\":", u.reasoning_tokens},
        {",\"images\":", u.images}, {",\"audio_ms\":", u.audio_ms}, {",\"requests\":", u.requests}};
    out.append(",\"usage\":");
    for (const auto& [k, v] : f) {
      out.append(k);
      append_json_int(out, v);
    }
    // As usage_json: the audio parts only when not zero.
    const std::pair<const char*, int64_t> audio[] = {{",\"audio_input_tokens\":", u.audio_input_tokens},
                                                     {",\"audio_output_tokens\":", u.audio_output_tokens}};
    for (const auto& [k, v] : audio)
      if (v) {
        out.append(k);
        append_json_int(out, v);
      }
    if (u.service_tier != ServiceTier::Standard) {  // as usage_json: only when not standard
      out.append(",\"service_tier\":\"");
      out.append(to_string(u.service_tier));
      out += '"';
    }
    out.append(u.complete ? ",\"complete\":true}" : ",\"complete\":false}");
  }
  put_amounts(out, ",\"spent\":[", e.spent);
  put_amounts(out, ",\"held\":[", e.held);
  put_amounts(out, ",\"granted\":[", e.granted);
  const size_t windows_at = out.size();
  if (with_windows) {
    out.append(",\"windows\":");
    if (!put_texts(out, e.windows)) return kNo;
  }
  if (!e.metadata.empty()) {
    out.append(",\"metadata\":");
    out.append(e.metadata);
  }
  out += '}';
  return windows_at;
}

std::string event_body(const LedgerEvent& e) {
  std::string out;
  if (direct_event_body(e, out, true) == std::string::npos) return event_body_json(e);
  return out;
}

LedgerEvent event_from_body(std::string_view body) {
  try {
    // Ordered: the metadata is dumped again in its order, as body_json dumps it (sorted keys
    // broke the hash of metadata written in another order, e.g. a reason after the caller's
    // keys, on the stores that read events back from their bodies: SQLite, a Redis sink).
    auto j = ordered::parse(body);
    LedgerEvent e;
    e.time = from_millis(j.at("time").get<int64_t>());
    e.type = parse_event_type(j.at("type").get<std::string>());
    e.request_id = j.at("request_id").get<std::string>();
    e.subject = j.at("subject").get<std::vector<std::string>>();
    e.model = j.value("model", "");
    e.provider = j.value("provider", "");
    e.price_version = j.value("price_version", "");
    if (j.contains("usage")) e.usage = usage_from(j.at("usage"));
    e.spent = amounts_from(j.at("spent"));
    e.held = amounts_from(j.at("held"));
    e.granted = amounts_from(j.at("granted"));
    e.windows = j.at("windows").get<std::vector<std::string>>();
    if (j.contains("metadata")) e.metadata = j.at("metadata").dump();
    return e;
  } catch (const nlohmann::json::exception& ex) {
    throw InternalError(std::string("corrupted ledger event: ") + ex.what());
  }
}

std::string chain_hash(std::string_view prev_hash, int64_t seq, std::string_view body) {
  std::string buf;
  buf.reserve(prev_hash.size() + body.size() + 24);
  buf += prev_hash;
  buf += '|';
  buf += std::to_string(seq);
  buf += '|';
  buf += body;
  return sha256_hex(buf);
}

bool matches(const LedgerQuery& q, const LedgerEvent& e) {
  if (e.seq <= q.after_seq || e.time < q.from || !(e.time < q.to)) return false;
  if (q.request_id && e.request_id != *q.request_id) return false;
  if (q.type && e.type != *q.type) return false;
  if (q.scope) {
    bool found = false;
    for (const auto& s : e.subject) found = found || s == *q.scope;
    if (!found) return false;
  }
  return true;
}

}  // namespace detail
}  // namespace budget
