// Ledger event encoding (internal): canonical JSON body, hash chain, and back.
#pragma once

#include <budget/ledger.hpp>

#include <string>
#include <string_view>

namespace budget::detail {

// The canonical body of an event: everything but seq, prev_hash and hash, in fixed order
// (nlohmann's ordered dump of body_json; written directly by direct_event_body unless it
// refuses, same bytes).
std::string event_body(const LedgerEvent& e);
// The canonical body written directly (same bytes), with its `windows` field or without it.
// Returns the offset in `out` where the windows field `,"windows":[...]` is or goes (after
// `granted`, before `metadata` if any), or std::string::npos (out unspecified) when the event
// is not written directly: a string that is not well-formed UTF-8 (or has C1 controls), or
// metadata that is not already in nlohmann's compact dump form (see canonical_json in
// json_text.hpp). Events without metadata allocate nothing more than their body.
size_t direct_event_body(const LedgerEvent& e, std::string& out, bool with_windows);
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
