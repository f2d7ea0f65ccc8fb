// `ignore_layers` matching (SPEC 2.7) with PCRE2 full-match regexes, and the vLLM fused-module checks.
#include "angelslim/quant/ignore_match.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pcre2.h>

#include <map>
#include <utility>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

constexpr std::string_view kRegexPrefix = "re:";

bool is_regex(std::string_view entry) { return entry.substr(0, kRegexPrefix.size()) == kRegexPrefix; }

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
using CodePtr = std::unique_ptr<pcre2_code, CodeDeleter>;

// Compiles the regex part of a "re:" entry so that it only matches a whole subject
// (ANCHORED + ENDANCHORED = Python re.fullmatch). On failure returns null and fills `error`.
CodePtr compile_regex(std::string_view pattern, std::string* error) {
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_ANCHORED | PCRE2_ENDANCHORED, &errcode, &erroff, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(errcode, buf, sizeof(buf));
    *error = fmt::format("invalid regex '{}': {} at offset {}", pattern, reinterpret_cast<const char*>(buf),
                         static_cast<size_t>(erroff));
  }
  return CodePtr(code);
}

bool regex_full_match(const pcre2_code* code, std::string_view subject) {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  ANGELSLIM_CHECK(md != nullptr, Internal, "pcre2_match_data_create_from_pattern failed");
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0, 0, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

// The literal (non-regex) rule: equal, ".e" suffix, or ".e." inside.
bool literal_matches(std::string_view e, std::string_view n) {
  if (e.empty()) return false;
  if (n == e) return true;
  if (n.size() > e.size() && n.substr(n.size() - e.size()) == e && n[n.size() - e.size() - 1] == '.') return true;
  for (size_t pos = n.find(e); pos != std::string_view::npos; pos = n.find(e, pos + 1)) {
    const size_t end = pos + e.size();
    if (pos > 0 && n[pos - 1] == '.' && end < n.size() && n[end] == '.') return true;
  }
  return false;
}

// True for a routed expert linear: a ".experts.<digits>." component (MoE, SPEC 1.5).
bool is_routed_expert(std::string_view n) {
  constexpr std::string_view kExperts = ".experts.";
  for (size_t pos = n.find(kExperts); pos != std::string_view::npos; pos = n.find(kExperts, pos + 1)) {
    size_t i = pos + kExperts.size();
    const size_t start = i;
    while (i < n.size() && n[i] >= '0' && n[i] <= '9') ++i;
    if (i > start && i < n.size() && n[i] == '.') return true;
  }
  return false;
}

// Fused-group membership: returns {parent, group name} or empty group when not fused.
std::pair<std::string_view, std::string_view> fused_group(std::string_view n, std::string_view* leaf) {
  const size_t dot = n.rfind('.');
  *leaf = dot == std::string_view::npos ? n : n.substr(dot + 1);
  const std::string_view parent = dot == std::string_view::npos ? std::string_view() : n.substr(0, dot);
  if (*leaf == "q_proj" || *leaf == "k_proj" || *leaf == "v_proj") return {parent, "q/k/v"};
  if (*leaf == "gate_proj" || *leaf == "up_proj") return {parent, "gate/up"};
  return {parent, {}};
}

}  // namespace

std::optional<std::string> ignore_entry_error(std::string_view entry) {
  if (entry.empty()) return std::string("empty entry");
  if (!is_regex(entry)) return std::nullopt;
  const std::string_view pattern = entry.substr(kRegexPrefix.size());
  if (pattern.empty()) return std::string("empty regex after 're:'");
  std::string error;
  if (!compile_regex(pattern, &error)) return error;
  return std::nullopt;
}

bool ignore_matches(std::string_view entry, std::string_view module_name) {
  if (!is_regex(entry)) return literal_matches(entry, module_name);
  const std::string_view pattern = entry.substr(kRegexPrefix.size());
  if (pattern.empty()) return false;
  std::string error;
  CodePtr code = compile_regex(pattern, &error);
  ANGELSLIM_CHECK(code != nullptr, InvalidInput, "ignore_layers entry '{}': {}", entry, error);
  return regex_full_match(code.get(), module_name);
}

struct IgnoreMatcher::Regexes {
  std::vector<CodePtr> codes;  // parallel to entries_; null for literal entries
};

IgnoreMatcher::IgnoreMatcher() : regexes_(std::make_unique<Regexes>()) {}

IgnoreMatcher::IgnoreMatcher(std::vector<std::string> entries)
    : entries_(std::move(entries)), regexes_(std::make_unique<Regexes>()) {
  regexes_->codes.resize(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    const std::string& e = entries_[i];
    if (auto err = ignore_entry_error(e)) throw InvalidInput(fmt::format("ignore_layers[{}] '{}': {}", i, e, *err));
    if (is_regex(e)) {
      std::string error;
      regexes_->codes[i] = compile_regex(std::string_view(e).substr(kRegexPrefix.size()), &error);
    }
  }
}

IgnoreMatcher::~IgnoreMatcher() = default;
IgnoreMatcher::IgnoreMatcher(IgnoreMatcher&&) noexcept = default;
IgnoreMatcher& IgnoreMatcher::operator=(IgnoreMatcher&&) noexcept = default;

bool IgnoreMatcher::entry_matches(size_t i, std::string_view module_name) const {
  ANGELSLIM_ASSERT(i < entries_.size());
  const pcre2_code* code = regexes_->codes[i].get();
  if (code != nullptr) return regex_full_match(code, module_name);
  return literal_matches(entries_[i], module_name);
}

int IgnoreMatcher::first_match(std::string_view module_name) const {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (entry_matches(i, module_name)) return static_cast<int>(i);
  return -1;
}

bool IgnoreMatcher::matches(std::string_view module_name) const { return first_match(module_name) >= 0; }

IgnoreCheck check_ignore_layers(const std::vector<std::string>& entries, const std::vector<std::string>& module_names) {
  IgnoreMatcher matcher(entries);
  IgnoreCheck out;
  std::vector<size_t> hits(entries.size(), 0);
  std::vector<size_t> expert_hits(entries.size(), 0);
  std::vector<std::string> first_expert(entries.size());

  // Fused groups keyed by "<parent>#<group>", in order of first appearance.
  struct Group {
    std::string parent, kind;
    std::vector<std::string> covered, uncovered;
  };
  std::map<std::string, size_t> group_index;
  std::vector<Group> groups;

  for (const std::string& n : module_names) {
    bool any = false;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (!matcher.entry_matches(i, n)) continue;
      any = true;
      ++hits[i];
      if (is_routed_expert(n) && expert_hits[i]++ == 0) first_expert[i] = n;
    }
    if (is_routed_expert(n)) continue;  // reported per entry above
    std::string_view leaf;
    const auto [parent, kind] = fused_group(n, &leaf);
    if (kind.empty()) continue;
    const std::string key = fmt::format("{}#{}", parent, kind);
    auto [it, inserted] = group_index.emplace(key, groups.size());
    if (inserted) groups.push_back(Group{std::string(parent), std::string(kind), {}, {}});
    Group& g = groups[it->second];
    (any ? g.covered : g.uncovered).emplace_back(leaf);
  }

  for (size_t i = 0; i < entries.size(); ++i) {
    if (hits[i] == 0)
      out.warnings.push_back(
          fmt::format("ignore_layers[{}] '{}' matches no Linear module of the model (no effect)", i, entries[i]));
    if (expert_hits[i] > 0)
      out.errors.push_back(
          fmt::format("ignore_layers[{}] '{}' matches {} routed expert linear(s), e.g. {} (expected no routed "
                      "expert: vLLM's fused MoE layer quantizes all experts or none)",
                      i, entries[i], expert_hits[i], first_expert[i]));
  }
  for (const Group& g : groups) {
    if (g.covered.empty() || g.uncovered.empty()) continue;
    out.errors.push_back(
        fmt::format("{}: ignore_layers covers {} but not {} (expected all of {} or none: vLLM fuses them into one "
                    "module that needs one quantization scheme)",
                    g.parent, fmt::join(g.covered, ", "), fmt::join(g.uncovered, ", "), g.kind));
  }
  return out;
}

}  // namespace angelslim
