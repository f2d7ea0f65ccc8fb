// `ignore_layers` matching and validation (SPEC 2.7): component-boundary matches of full HF module
// names, "re:" entries as full-match PCRE2 regexes, and the vLLM fused-module rules.
#pragma once
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace angelslim {

// True when `entry` selects `module_name` (e.g. "model.layers.3.mlp.gate.wg"):
// module_name == entry, or it ends with "." + entry, or it contains "." + entry + ".", or entry is
// "re:<regex>" and <regex> matches the whole module_name. An empty entry (or "re:" alone) matches
// nothing. Compiles the regex on every call; use IgnoreMatcher for many names.
// Throws InvalidInput when a "re:" entry is not a valid regex.
bool ignore_matches(std::string_view entry, std::string_view module_name);

// The problem with one entry ("empty entry", "invalid regex ... at offset N"), or nullopt when usable.
std::optional<std::string> ignore_entry_error(std::string_view entry);

// A list of entries compiled once (regexes included); matching is thread-safe.
class IgnoreMatcher {
 public:
  IgnoreMatcher();
  // Throws InvalidInput naming the entry when one of them is invalid (ignore_entry_error).
  explicit IgnoreMatcher(std::vector<std::string> entries);
  ~IgnoreMatcher();
  IgnoreMatcher(IgnoreMatcher&&) noexcept;
  IgnoreMatcher& operator=(IgnoreMatcher&&) noexcept;
  IgnoreMatcher(const IgnoreMatcher&) = delete;
  IgnoreMatcher& operator=(const IgnoreMatcher&) = delete;

  // True when any entry matches module_name.
  bool matches(std::string_view module_name) const;
  // Index of the first entry that matches, or -1.
  int first_match(std::string_view module_name) const;
  // True when entry `i` matches module_name.
  bool entry_matches(std::size_t i, std::string_view module_name) const;
  const std::vector<std::string>& entries() const { return entries_; }

 private:
  struct Regexes;
  std::vector<std::string> entries_;
  std::unique_ptr<Regexes> regexes_;  // one compiled pattern per "re:" entry (null otherwise)
};

// Outcome of checking an ignore list against a model's modules.
struct IgnoreCheck {
  std::vector<std::string> errors;    // partial q/k/v or gate/up coverage; routed experts
  std::vector<std::string> warnings;  // entries that match no module
};

// Validates `entries` against `module_names`, the full HF names of every Linear module of the model
// (quantized or not: lm_head and routers included, so that "lm_head" counts as a match).
// Errors: an entry set covering some but not all of {q,k,v}_proj or {gate,up}_proj under one parent
// module (vLLM fuses them into qkv_proj / gate_up_proj and needs one scheme), and any routed expert
// ("<...>.experts.<e>.<...>"; vLLM's fused MoE layer is all-or-nothing). Warnings: entries matching
// nothing. Messages start with "ignore_layers[i] '<entry>'" or name the module block.
// Throws InvalidInput when an entry is invalid (ignore_entry_error).
IgnoreCheck check_ignore_layers(const std::vector<std::string>& entries, const std::vector<std::string>& module_names);

}  // namespace angelslim
