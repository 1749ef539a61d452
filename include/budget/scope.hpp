// libbudget — scopes and subjects.
//
// A scope is `kind:id` (`tenant:acme`, `user:alice`, `key:k_42`, `feature:chat`) or the
// implicit root `global`. Kinds: 1-64 characters of [A-Za-z0-9_.-]. Ids: opaque UTF-8,
// 1-256 bytes, valid UTF-8, no control characters. A Subject is the list of scopes a request
// is charged to; `global` is always included (first), duplicates are removed, order is kept.
#pragma once

#include <budget/export.hpp>

#include <compare>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace budget {

class BUDGET_API Scope {
 public:
  static constexpr size_t kMaxKindBytes = 64;
  static constexpr size_t kMaxIdBytes = 256;

  Scope() : text_("global") {}  // global
  static Scope global() { return Scope(); }
  // "global" or "kind:id". Throws InvalidArgumentError with the reason.
  static Scope parse(std::string_view text);
  Scope(std::string_view kind, std::string_view id);

  const std::string& str() const noexcept { return text_; }
  bool is_global() const noexcept { return colon_ == 0; }
  std::string_view kind() const noexcept {
    return is_global() ? std::string_view(text_) : std::string_view(text_).substr(0, colon_);
  }
  std::string_view id() const noexcept {
    return is_global() ? std::string_view() : std::string_view(text_).substr(colon_ + 1);
  }
  bool operator==(const Scope& o) const noexcept { return text_ == o.text_; }
  auto operator<=>(const Scope& o) const noexcept { return text_ <=> o.text_; }

 private:
  std::string text_;
  size_t colon_ = 0;  // 0 for global
};

// Validation helpers (throw InvalidArgumentError): scope kinds and opaque ids.
BUDGET_API void validate_kind(std::string_view kind);
BUDGET_API void validate_id(std::string_view id, std::string_view what = "id");

class BUDGET_API Subject {
 public:
  static constexpr size_t kMaxScopes = 16;

  Subject() : scopes_{Scope::global()} {}
  Subject(std::initializer_list<std::string_view> scopes);
  explicit Subject(const std::vector<std::string>& scopes);
  explicit Subject(std::vector<Scope> scopes);

  const std::vector<Scope>& scopes() const noexcept { return scopes_; }
  size_t size() const noexcept { return scopes_.size(); }
  bool contains(const Scope& s) const noexcept;
  // "global,tenant:acme,user:alice" (ids may contain commas; for display only).
  std::string to_string() const;
  bool operator==(const Subject&) const = default;

 private:
  void add(Scope s);
  std::vector<Scope> scopes_;
};

}  // namespace budget
