// Lexer of the chat-template interpreter: splits a template into text and tag tokens with Jinja2's
// rules as transformers configures them (trim_blocks, lstrip_blocks, keep_trailing_newline=False,
// "\r\n"/"\r" normalised to "\n"); string literals are decoded like Python's unicode-escape.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace angelslim::jinja {

enum class TokKind { kData, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  TokKind kind;
  std::string text;  // kData: text; kName: identifier; kString: decoded value; kOp: operator spelling
  int64_t int_value = 0;
  double float_value = 0.0;
  int line = 0;  // 1-based
  int col = 0;   // 1-based, in code points
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Throws FormatError "<origin>:<line>:<col>: <msg>" on malformed tags, strings or numbers.
std::vector<Token> tokenize(std::string_view source, const std::string& origin, const LexOptions& opt = {});

// Throws FormatError "<origin>:<line>:<col>: <msg>".
[[noreturn]] void throw_format(const std::string& origin, int line, int col, const std::string& msg);

}  // namespace angelslim::jinja
