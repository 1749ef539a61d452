// Small JSON writers (and readers) for the operation path (internal).
//
// Why not nlohmann::json here: its values can crash while they are destroyed after an
// allocation failed half-way through building them (nlohmann/json#4653; tests/internal/
// test_alloc_failure.cpp found it), and an operation must fail cleanly, changing nothing, when
// memory runs out. These write the same bytes as nlohmann's dump() of the same value (tested
// against it), for the strings they accept.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "utf8.hpp"

namespace budget::detail {

// Appends `s` as a JSON string, escaped as nlohmann's dump() escapes it (", \, \b \f \n \r \t,
// other controls as \u00xx; everything else, C1 controls and DEL included, as is). Returns
// false, having appended nothing, when `s` is not well-formed UTF-8 (well_formed_utf8): the
// caller falls back to nlohmann, whose dump() refuses it too (type_error 316).
inline bool append_json_string(std::string& out, std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) {
      if (!well_formed_utf8(s)) return false;
      break;
    }
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return true;
}

// Whether `text` is exactly what nlohmann::ordered_json::parse(text).dump() returns, for a
// subset of JSON this checks strictly: objects without duplicate keys, arrays, strings escaped
// as append_json_string escapes them (well-formed UTF-8), integers in canonical form within
// int64 or uint64 (no "-0", no leading zeros), true, false, null; no whitespace, nesting at
// most 64 deep. Anything else (a float, a space, "\u0041", a key twice...) is refused: the
// caller hands that text to nlohmann, which decides. Allocates nothing.
bool canonical_json(std::string_view text) noexcept;

// Reads the JSON string that starts at text[i] (its opening quote) into `out` (replacing its
// contents) and moves `i` past it: what nlohmann would read, for the strings
// append_json_string writes (and the escapes \/ and \u00xx up to \u007f, any case). Returns
// false (i and out unspecified) for anything else, a raw control or bytes that are not
// well-formed UTF-8 included: the caller hands the text to nlohmann, which decides.
bool read_json_string(std::string_view text, size_t& i, std::string& out);
// Reads a JSON array of such strings, as written by append_json_string between '[', ',' and
// ']' without spaces (a subject); false (out unspecified) for anything else.
bool read_json_strings(std::string_view text, std::vector<std::string>& out);

template <class Int>
inline void append_json_int(std::string& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace budget::detail
