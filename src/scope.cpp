#include <budget/error.hpp>
#include <budget/scope.hpp>

#include "utf8.hpp"

namespace budget {

namespace {
// Returns the length of a valid UTF-8 sequence at s[i], or 0.
size_t utf8_len(std::string_view s, size_t i, bool c1_ok = false) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  if (!c1_ok && cp >= 0x80 && cp <= 0x9F) return 0;  // C1 controls
  return n;
}
}  // namespace

namespace detail {
bool valid_utf8(std::string_view s) noexcept {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}
bool well_formed_utf8(std::string_view s) noexcept {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i, true);
    if (n == 0) return false;
    i += n;
  }
  return true;
}
}  // namespace detail

namespace {
std::string shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 80)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) ? '?' : c;
  return out;
}
}  // namespace

void validate_kind(std::string_view kind) {
  if (kind.empty()) throw InvalidArgumentError("scope kind is empty");
  if (kind.size() > Scope::kMaxKindBytes)
    throw InvalidArgumentError("scope kind longer than 64 characters: '" + shown(kind) + "'");
  for (char c : kind) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok) throw InvalidArgumentError("scope kind '" + shown(kind) + "' may only contain [A-Za-z0-9_.-]");
  }
}

void validate_id(std::string_view id, std::string_view what) {
  if (id.empty()) throw InvalidArgumentError(std::string(what) + " is empty");
  if (id.size() > Scope::kMaxIdBytes)
    throw InvalidArgumentError(std::string(what) + " longer than 256 bytes: '" + shown(id) + "...'");
  size_t i = 0;
  while (i < id.size() && static_cast<unsigned char>(id[i]) - 0x20u < 0x5Fu) ++i;  // printable ASCII
  while (i < id.size()) {
    auto c = static_cast<unsigned char>(id[i]);
    if (c < 0x20 || c == 0x7F)
      throw InvalidArgumentError(std::string(what) + " contains a control character: '" + shown(id) + "'");
    size_t n = utf8_len(id, i);
    if (n == 0) throw InvalidArgumentError(std::string(what) + " is not valid UTF-8 (or has a control character)");
    i += n;
  }
}

Scope::Scope(std::string_view kind, std::string_view id) {
  validate_kind(kind);
  if (kind == "global") throw InvalidArgumentError("'global' is the root scope and takes no id");
  validate_id(id, "scope id");
  if (id == "*") throw InvalidArgumentError("'" + std::string(kind) + ":*' names every scope of a kind (for limits); a subject names real scopes");
  text_.assign(kind);
  text_ += ':';
  text_ += id;
  colon_ = kind.size();
}

Scope Scope::parse(std::string_view text) {
  if (text == "global") return Scope();
  auto colon = text.find(':');
  if (colon == std::string_view::npos)
    throw InvalidArgumentError("scope '" + shown(text) + "' is not 'global' nor 'kind:id'");
  return Scope(text.substr(0, colon), text.substr(colon + 1));
}

Subject::Subject(std::initializer_list<std::string_view> scopes) : scopes_{Scope::global()} {
  for (auto s : scopes) add(Scope::parse(s));
}
Subject::Subject(const std::vector<std::string>& scopes) : scopes_{Scope::global()} {
  for (const auto& s : scopes) add(Scope::parse(s));
}
Subject::Subject(std::vector<Scope> scopes) : scopes_{Scope::global()} {
  for (auto& s : scopes) add(std::move(s));
}

void Subject::add(Scope s) {
  if (contains(s)) return;
  if (scopes_.size() >= kMaxScopes) throw InvalidArgumentError("a subject has at most 16 scopes");
  scopes_.push_back(std::move(s));
}

bool Subject::contains(const Scope& s) const noexcept {
  for (const auto& x : scopes_)
    if (x == s) return true;
  return false;
}

std::string Subject::to_string() const {
  std::string out;
  for (const auto& s : scopes_) {
    if (!out.empty()) out += ',';
    out += s.str();
  }
  return out;
}

}  // namespace budget
