// Ledger event encoding (internal): canonical JSON body, hash chain, and back.
#pragma once

#include <budget/ledger.hpp>

#include <string>
#include <string_view>

namespace budget::detail {

// The canonical body of an event: everything but seq, prev_hash and hash, in fixed order
// (nlohmann's ordered dump of body_json; written directly in the common case, same bytes).
std::string event_body(const LedgerEvent& e);
// The canonical body WITHOUT its `windows` field, written directly, for an event with no
// metadata and only plain strings (printable ASCII without '"' and '\\'). Returns false
// (out unspecified) for anything else. The `windows` field, when present, goes last, just
// before the closing brace: `,"windows":[...]`.
bool plain_event_body(const LedgerEvent& e, std::string& out);
// The same body always through nlohmann::ordered_json (the reference the direct writer is
// tested against).
std::string event_body_json(const LedgerEvent& e);
// Rebuilds an event from its body (seq/prev_hash/hash are set by the caller).
LedgerEvent event_from_body(std::string_view body);
// hash = SHA-256(prev_hash "|" seq "|" body), hex.
std::string chain_hash(std::string_view prev_hash, int64_t seq, std::string_view body);
// Whether an event matches a query (time range, scope, request id, type, after_seq).
bool matches(const LedgerQuery& q, const LedgerEvent& e);

}  // namespace budget::detail
