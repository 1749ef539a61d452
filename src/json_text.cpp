// canonical_json (a strict checker of nlohmann's compact dump form) and the string readers
// (see json_text.hpp).
#include "json_text.hpp"

namespace budget::detail {

namespace {

constexpr int kMaxDepth = 64;

class Checker {
 public:
  explicit Checker(std::string_view t) noexcept : t_(t) {}

  bool run() noexcept { return value(0) && i_ == t_.size(); }

 private:
  bool at_end() const noexcept { return i_ >= t_.size(); }
  char peek() const noexcept { return t_[i_]; }

  bool value(int depth) noexcept {
    if (at_end()) return false;
    switch (peek()) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': return string();
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default: return integer();
    }
  }

  bool literal(std::string_view word) noexcept {
    if (t_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  // [-]0 | [-][1-9][0-9]*, within int64 (negative) or uint64 (otherwise): nlohmann parses it
  // as an integer and dumps the same digits. "-0" (dumped as 0), leading zeros (a parse
  // error), a fraction or an exponent (a float) and anything out of range (a float) refused.
  bool integer() noexcept {
    const bool neg = peek() == '-';
    if (neg) ++i_;
    const size_t start = i_;
    while (!at_end() && peek() >= '0' && peek() <= '9') ++i_;
    const size_t n = i_ - start;
    if (n == 0) return false;
    if (t_[start] == '0') return n == 1 && !neg;
    // Range: compare with the limit's digits (same length: lexicographic order is numeric).
    const std::string_view limit = neg ? std::string_view("9223372036854775808") : std::string_view("18446744073709551615");
    if (n < limit.size()) return true;
    if (n > limit.size()) return false;
    return t_.substr(start, n) <= limit;
  }

  // A string as append_json_string writes it: raw bytes but '"', '\\' and controls; the short
  // escapes \" \\ \b \f \n \r \t; \u00xx (lowercase hex) for the other controls only; the raw
  // bytes well-formed UTF-8.
  bool string() noexcept {
    ++i_;  // '"'
    bool ascii = true;
    const size_t start = i_;
    while (true) {
      if (at_end()) return false;
      const auto c = static_cast<unsigned char>(peek());
      if (c == '"') break;
      if (c < 0x20) return false;
      if (c >= 0x80) ascii = false;
      if (c != '\\') {
        ++i_;
        continue;
      }
      if (i_ + 1 >= t_.size()) return false;
      switch (t_[i_ + 1]) {
        case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't': i_ += 2; continue;
        case 'u': break;
        default: return false;  // "\/" and anything else: not what nlohmann writes
      }
      // \u00xx with xx < 0x20, lowercase, and not one of the short escapes.
      if (i_ + 6 > t_.size() || t_[i_ + 2] != '0' || t_[i_ + 3] != '0') return false;
      const char h = t_[i_ + 4], l = t_[i_ + 5];
      if (h != '0' && h != '1') return false;
      int lo;
      if (l >= '0' && l <= '9') lo = l - '0';
      else if (l >= 'a' && l <= 'f') lo = l - 'a' + 10;
      else return false;
      const int cp = (h - '0') * 16 + lo;
      if (cp == '\b' || cp == '\f' || cp == '\n' || cp == '\r' || cp == '\t') return false;
      i_ += 6;
    }
    const std::string_view raw = t_.substr(start, i_ - start);
    ++i_;  // '"'
    return ascii || well_formed_utf8(raw);  // escapes are ASCII: they do not disturb the check
  }

  bool array(int depth) noexcept {
    if (depth > kMaxDepth) return false;
    ++i_;  // '['
    if (!at_end() && peek() == ']') {
      ++i_;
      return true;
    }
    while (true) {
      if (!value(depth)) return false;
      if (at_end()) return false;
      if (peek() == ']') {
        ++i_;
        return true;
      }
      if (peek() != ',') return false;
      ++i_;
    }
  }

  bool object(int depth) noexcept {
    if (depth > kMaxDepth) return false;
    const size_t open = i_;
    ++i_;  // '{'
    if (!at_end() && peek() == '}') {
      ++i_;
      return true;
    }
    std::string_view top;  // the greatest key so far, raw (quotes included: never empty)
    while (true) {
      if (at_end() || peek() != '"') return false;
      const size_t k = i_;
      if (!string()) return false;
      const std::string_view key = t_.substr(k, i_ - k);
      // No key twice (nlohmann keeps one). Raw keys are equal when the strings are: the
      // escaping is one to one. A key greater than all before it is new (keys in increasing
      // order, std::map's and nlohmann::json's, need one comparison each); any other (our
      // metadata's "reason" after the sorted entries) is looked for among them.
      if (top < key) top = key;
      else if (seen_before(open, k, key)) return false;
      if (at_end() || peek() != ':') return false;
      ++i_;
      if (!value(depth)) return false;
      if (at_end()) return false;
      if (peek() == '}') {
        ++i_;
        return true;
      }
      if (peek() != ',') return false;
      ++i_;
    }
  }

  // Whether `key` is one of the keys of the object opened at `open`, before offset `end`
  // (that part of the text is already checked).
  bool seen_before(size_t open, size_t end, std::string_view key) const noexcept {
    size_t j = open + 1;
    while (j < end) {
      const size_t k = j;
      j = skip_string(j);
      if (t_.substr(k, j - k) == key) return true;
      j = skip_value(j + 1) + 1;  // ':' value ','
    }
    return false;
  }
  size_t skip_string(size_t j) const noexcept {
    for (++j; t_[j] != '"'; ++j)
      if (t_[j] == '\\') ++j;
    return j + 1;
  }
  size_t skip_value(size_t j) const noexcept {
    int depth = 0;
    while (true) {
      const char c = t_[j];
      if (c == '"') {
        j = skip_string(j);
      } else if (c == '{' || c == '[') {
        ++depth;
        ++j;
      } else if (c == '}' || c == ']') {
        if (depth == 0) return j;
        --depth;
        ++j;
      } else if (c == ',' && depth == 0) {
        return j;
      } else {
        ++j;
      }
      if (depth == 0 && (t_[j] == ',' || t_[j] == '}' || t_[j] == ']')) return j;
    }
  }

  std::string_view t_;
  size_t i_ = 0;
};

}  // namespace

bool canonical_json(std::string_view text) noexcept { return Checker(text).run(); }

namespace {
int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool read_json_string(std::string_view t, size_t& i, std::string& out) {
  if (i >= t.size() || t[i] != '"') return false;
  out.clear();
  bool ascii = true;
  size_t j = i + 1, run = j;  // [run, j): raw bytes not yet copied
  while (true) {
    if (j >= t.size()) return false;
    const auto c = static_cast<unsigned char>(t[j]);
    if (c == '"') break;
    if (c < 0x20) return false;  // nlohmann refuses a raw control
    if (c >= 0x80) ascii = false;
    if (c != '\\') {
      ++j;
      continue;
    }
    out.append(t.data() + run, j - run);
    if (j + 1 >= t.size()) return false;
    switch (t[j + 1]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        if (j + 6 > t.size()) return false;
        int v = 0;
        for (size_t k = j + 2; k < j + 6; ++k) {
          const int d = hex_digit(t[k]);
          if (d < 0) return false;
          v = v * 16 + d;
        }
        if (v >= 0x80) return false;  // not what our writers write: nlohmann decodes it
        out += static_cast<char>(v);
        j += 6;
        run = j;
        continue;
      }
      default: return false;
    }
    j += 2;
    run = j;
  }
  out.append(t.data() + run, j - run);
  if (!ascii && !well_formed_utf8(out)) return false;  // the escapes added ASCII only
  i = j + 1;
  return true;
}

bool read_json_strings(std::string_view t, std::vector<std::string>& out) {
  out.clear();
  size_t i = 0;
  if (t.empty() || t[0] != '[') return false;
  ++i;
  if (i < t.size() && t[i] == ']') return i + 1 == t.size();
  while (true) {
    if (!read_json_string(t, i, out.emplace_back())) return false;
    if (i >= t.size()) return false;
    if (t[i] == ']') return i + 1 == t.size();
    if (t[i] != ',') return false;
    ++i;
  }
}

}  // namespace budget::detail
