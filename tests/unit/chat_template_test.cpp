// Chat-template interpreter: the fixture template against transformers-rendered goldens
// (tokenizer_goldens.json), the Hunyuan-A13B template against SPEC 1.6.3, and small templates whose
// expected output was produced by Jinja2 3.1.6 configured as transformers does (ImmutableSandboxedEnvironment,
// trim_blocks, lstrip_blocks, loopcontrols, tojson = json.dumps(ensure_ascii=False)).
#include "angelslim/text/chat_template.h"

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "angelslim/core/error.h"
#include "angelslim/core/hash.h"

namespace angelslim {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const fs::path kData = ANGELSLIM_TEST_DATA;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::size_t code_points(const std::string& s) {
  std::size_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

std::string prefix_code_points(const std::string& s, std::size_t n) {
  std::size_t i = 0, seen = 0;
  while (i < s.size()) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (seen == n) break;
      ++seen;
    }
    ++i;
  }
  return s.substr(0, i);
}

std::string render(const std::string& src, const json& vars = json::object(), const json& messages = json::array()) {
  return ChatTemplate(src, "test").render(messages, false, vars);
}

// ShareGPT record -> messages (SPEC 1.7.1): from contains "human" -> user, "gpt" -> assistant,
// system/user/assistant/tool unchanged, empty turns dropped.
json sharegpt_to_messages(const json& record) {
  json messages = json::array();
  for (const auto& turn : record.at("conversations")) {
    const std::string from = turn.contains("from") ? turn["from"].get<std::string>() : turn["role"].get<std::string>();
    const std::string text =
        turn.contains("value") ? turn["value"].get<std::string>() : turn["content"].get<std::string>();
    std::string role = from;
    if (from.find("human") != std::string::npos)
      role = "user";
    else if (from.find("gpt") != std::string::npos)
      role = "assistant";
    if (text.empty()) continue;
    messages.push_back({{"role", role}, {"content", text}});
  }
  return messages;
}

// ---------------------------------------------------------------------------------------------
// Real templates

TEST(ChatTemplate, FixtureTemplateMatchesTransformersGoldens) {
  const ChatTemplate tmpl = ChatTemplate::load(kData / "fixtures/hy-dense-tiny");
  const json goldens = json::parse(read_all(kData / "tokenizers/tokenizer_goldens.json"));
  std::vector<std::string> lines;
  {
    std::ifstream in(kData / "calib/sharegpt_gpt4_256.jsonl");
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  const auto& samples = goldens.at("chat_calibration_samples");
  ASSERT_GE(samples.size(), 1u);
  for (const auto& s : samples) {
    const auto line = s.at("line").get<std::size_t>();
    ASSERT_LT(line, lines.size());
    const std::string out = tmpl.render(sharegpt_to_messages(json::parse(lines[line])), false);
    const std::string want = s.at("rendered").get<std::string>();
    EXPECT_EQ(prefix_code_points(out, code_points(want)), want) << "line " << line;
    EXPECT_EQ(code_points(out), s.at("rendered_len").get<std::size_t>()) << "line " << line;
  }
}

TEST(ChatTemplate, FixtureGenerationPrompt) {
  const ChatTemplate tmpl = ChatTemplate::load(kData / "fixtures/hy-dense-tiny");
  const json msgs = json::parse(R"([{"role":"system","content":"S"},{"role":"user","content":"U"}])");
  // SPEC 1.6.3 dense row.
  EXPECT_EQ(tmpl.render(msgs, true),
            "<｜hy_begin▁of▁sentence｜>S<｜hy_place▁holder▁no▁3｜><｜hy_User｜>U<｜hy_Assistant｜>");
  EXPECT_EQ(tmpl.render(msgs, false), "<｜hy_begin▁of▁sentence｜>S<｜hy_place▁holder▁no▁3｜><｜hy_User｜>U");
}

class A13BTemplate : public ::testing::Test {
 protected:
  ChatTemplate tmpl_ = ChatTemplate::load(kData / "tokenizers/hy-a13b");
};

TEST_F(A13BTemplate, SystemUserAssistant) {
  // SPEC 1.6.3: system first -> <|startoftext|>{c}<|extra_4|>; user at index 1 after a head -> {c}<|extra_0|>;
  // assistant -> {c}<|eos|>.
  const json msgs = json::parse(R"([{"role":"system","content":"You are helpful."},{"role":"user","content":"Hi"},
                                    {"role":"assistant","content":"Hello!"}])");
  EXPECT_EQ(tmpl_.render(msgs, false), "<|startoftext|>You are helpful.<|extra_4|>Hi<|extra_0|>Hello!<|eos|>");
}

TEST_F(A13BTemplate, UserAssistantWithoutSystem) {
  // A user message that is not at index 1 after a head -> <|startoftext|>{c}<|extra_0|>.
  const json msgs = json::parse(R"([{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}])");
  EXPECT_EQ(tmpl_.render(msgs, false), "<|startoftext|>Hi<|extra_0|>Hello!<|eos|>");
  // No generation-prompt text.
  EXPECT_EQ(tmpl_.render(msgs, true), "<|startoftext|>Hi<|extra_0|>Hello!<|eos|>");
}

TEST_F(A13BTemplate, MultiTurnWithTool) {
  const json msgs = json::parse(R"([{"role":"system","content":"S"},{"role":"user","content":"Q1"},
      {"role":"assistant","content":"A1"},{"role":"user","content":"Q2"},{"role":"assistant","content":"A2"},
      {"role":"tool","content":"T"},{"role":"assistant","content":"A3"}])");
  EXPECT_EQ(tmpl_.render(msgs, false),
            "<|startoftext|>S<|extra_4|>Q1<|extra_0|>A1<|eos|><|startoftext|>Q2<|extra_0|>A2<|eos|>T<|extra_0|>"
            "A3<|eos|>");
  // The template's tail: enable_thinking defined and false appends "<think>\n\n</think>\n".
  EXPECT_EQ(tmpl_.render(msgs, false, {{"enable_thinking", false}}),
            "<|startoftext|>S<|extra_4|>Q1<|extra_0|>A1<|eos|><|startoftext|>Q2<|extra_0|>A2<|eos|>T<|extra_0|>"
            "A3<|eos|><think>\n\n</think>\n");
  EXPECT_EQ(tmpl_.render(msgs, false, {{"enable_thinking", true}}), tmpl_.render(msgs, false));
}

TEST_F(A13BTemplate, WhereTheTemplateDiffersFromSpec) {
  // SPEC says "user at index 1 after a *system* head"; the template tests has_head, which stays true for
  // any non-empty first message, so a user after a leading assistant gets no <|startoftext|>. Template wins.
  const json msgs = json::parse(R"([{"role":"assistant","content":"A"},{"role":"user","content":"U"}])");
  EXPECT_EQ(tmpl_.render(msgs, false), "A<|eos|>U<|extra_0|>");
  // SPEC: "an empty first message sets no head ... emits <|startoftext|> twice". The template does that
  // through context.update(...), and transformers renders with jinja2's ImmutableSandboxedEnvironment,
  // where dict.update is an unsafe attribute: apply_chat_template raises SecurityError. We raise
  // InvalidInput at the call, as transformers would fail, instead of inventing an output.
  const json empty_first = json::parse(R"([{"role":"system","content":""},{"role":"user","content":"U"}])");
  try {
    tmpl_.render(empty_first, false);
    FAIL() << "expected InvalidInput";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("access to attribute 'update' of 'dict' object is unsafe"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json[chat_template]:88:"), std::string::npos) << e.what();
  }
}

TEST_F(A13BTemplate, ToolsBranchUsesTojsonAndCurrentTime) {
  // ordered_json keeps the key order of the input, as Python dicts do; tojson shows it.
  using ojson = nlohmann::ordered_json;
  const ojson msgs = ojson::parse(R"([{"role":"user","content":"天气?"},{"role":"assistant","content":"",
      "tool_calls":[{"type":"function","function":{"name":"get_weather","arguments":{"city":"北京"}}}]}])");
  const ojson tools = ojson::parse(R"([{"type":"function","function":{"name":"get_weather"}}])");
  const std::string out = tmpl_.render(msgs, false, ojson{{"tools", tools}});
  EXPECT_EQ(out.rfind("<|startoftext|>你是一位函数组合专家。", 0), 0u);
  EXPECT_NE(out.find("\n[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}]\n"), std::string::npos);
  // "当前时间：YYYY-MM-DD HH:MM:SS 星期X" from strftime_now, X the weekday of that date (via weekday_map).
  const std::string head = "当前时间：";
  const std::size_t at = out.find(head);
  ASSERT_NE(at, std::string::npos) << out;
  const std::string stamp = out.substr(at + head.size(), 19);
  const std::string shape = "dddd-dd-dd dd:dd:dd";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    ASSERT_TRUE(shape[i] == 'd' ? std::isdigit(static_cast<unsigned char>(stamp[i])) != 0 : stamp[i] == shape[i])
        << stamp;
  }
  const std::chrono::year_month_day date{std::chrono::year{std::stoi(stamp.substr(0, 4))},
                                         std::chrono::month{static_cast<unsigned>(std::stoi(stamp.substr(5, 2)))},
                                         std::chrono::day{static_cast<unsigned>(std::stoi(stamp.substr(8, 2)))}};
  static const char* const kWeekdays[] = {"日", "一", "二", "三", "四", "五", "六"};  // Sunday first
  const std::string weekday = kWeekdays[std::chrono::weekday{std::chrono::sys_days{date}}.c_encoding()];
  EXPECT_EQ(out.substr(at + head.size() + 19).rfind(" 星期" + weekday + "<|extra_4|>用户：天气?<|extra_0|>", 0), 0u)
      << out;
  EXPECT_NE(
      out.find("<tool_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}]</tool_calls><|eos|>"),
      std::string::npos)
      << out;
}

TEST(ChatTemplate, LoadSourcesAndErrors) {
  const fs::path dir = fs::temp_directory_path() / "angelslim_chat_template_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_THROW(
      {
        try {
          ChatTemplate::load(dir);
        } catch (const InvalidInput& e) {
          EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos);
          throw;
        }
      },
      InvalidInput);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ 1 }}"}]})";
  EXPECT_EQ(ChatTemplate::load(dir).render(json::array(), false), "D1");
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": [{"name": "tool_use", "template": "T"}]})";
  EXPECT_THROW(ChatTemplate::load(dir), InvalidInput);
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "S{{ messages|length }}"})";
  EXPECT_EQ(ChatTemplate::load(dir).render(json::array({json::object()}), false), "S1");
  std::ofstream(dir / "chat_template.jinja") << "J\n";  // preferred; one trailing newline is dropped
  const ChatTemplate t = ChatTemplate::load(dir);
  EXPECT_EQ(t.render(json::array(), false), "J");
  EXPECT_EQ(t.sha256(), sha256_hex("J\n"));
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Interpreter semantics (expected strings from Jinja2 3.1.6 with transformers' settings)

TEST(JinjaInterpreter, WhitespaceControlTrimAndLstripBlocks) {
  EXPECT_EQ(render("a  \n  {% if true %}\n  x\n  {% endif %}\n  b\n"), "a  \n  x\n  b");
  EXPECT_EQ(render("a  {% if true %}x{% endif %}  b"), "a  x  b");
  EXPECT_EQ(render("{% for i in [1,2,3] %}\n  {{ i }}\n{% endfor %}\n"), "  1\n  2\n  3\n");
  EXPECT_EQ(render("{% for i in [1,2,3] -%}\n  {{ i }}\n{%- endfor %}"), "123");
  EXPECT_EQ(render("  {{- 'x' -}}  \n y"), "xy");
  EXPECT_EQ(render("a\n  {#- c -#}\n  b\n  {# c #}\n  c"), "ab\n  c");
  EXPECT_EQ(render("{% raw %}{{ x }}{% endraw %}\n  {%- raw -%}  {% y %}  {%- endraw %} z"), "{{ x }}{% y %} z");
  EXPECT_EQ(render("{%+ if true %}x{% endif +%}\nq"), "x\nq");
  EXPECT_EQ(render("a\r\nb\rc\n{{ 'd' }}\n\n"), "a\nb\nc\nd\n");
  EXPECT_EQ(render("x {% if true %}\n y{% endif %}"), "x  y");
  EXPECT_EQ(render("{%- set x = 'a' -%}\n\n   {{ x }}   \n\n{%- set y = 'b' %}\n{{ y }}"), "ab");
}

TEST(JinjaInterpreter, ExpressionsAndPythonValueFormatting) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} "
                   "{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }}"),
            "7 9 3.5 3 -4 -2 64 4");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none ~ true }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'ab' * 3 }}"),
            "a1NoneTrue ab [1, 2] ababab");
  EXPECT_EQ(render("{{ 1.5 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-7 }} {{ 3.0 }} {{ 1e15 }} {{ 1e16 }} {{ 0.0001 }}"),
            "1.5 0.30000000000000004 1e+20 1e-07 3.0 1000000000000000.0 1e+16 0.0001");
  EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5, {'k': 'v'}, \"it's\"] }}"),
            "[1, 'a', None, True, 1.5, {'k': 'v'}, \"it's\"]");
  EXPECT_EQ(render("{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 1 in [1,2] }} {{ 'k' in {'k':1} }} {{ 1 < 2 < 3 }} "
                   "{{ 3 > 2 > 5 }} {{ 1 == 1.0 }} {{ true == 1 }}"),
            "True True True True True False True True");
  EXPECT_EQ(render("{{ 1 if false }}|{{ 1 if true else 2 }}|{{ x or 'd' }}|{{ x and 'y' }}|{{ not x }}", {{"x", ""}}),
            "|1|d||True");
  EXPECT_EQ(render("{{ d['a'] }} {{ d.a }} {{ d.b }}|{{ l[-1] }} {{ l[5] }} {{ l[1:] }} {{ l[::-1] }} "
                   "{{ 'héllo'[1:3] }} {{ l.0 }}",
                   {{"d", {{"a", 1}}}, {"l", {1, 2, 3}}}),
            "1 1 |3  [2, 3] [3, 2, 1] él 1");
  EXPECT_EQ(render("{{ \"a\" 'b' }} {{ 'tab\\there' }} {{ 'q\\'s' }} {{ \"\\u4e2d\\x41\\101\" }} {{ 'unknown\\d' }}"),
            "ab tab\there q's 中AA unknown\\d");
  EXPECT_EQ(
      render("{{ x is defined }} {{ y is not defined }} {{ x is string }} {{ n is not string }} {{ n is integer }} "
             "{{ none is none }} {{ b is false }} {{ 3 is odd }} {{ 9 is divisibleby 3 }}",
             {{"x", "s"}, {"n", 3}, {"b", false}}),
      "True True True True True True True True True");
}

TEST(JinjaInterpreter, Filters) {
  EXPECT_EQ(render("{{ {'a': 1, 'b': [1, 2.5, none, true, 'x\"y']} | tojson }} {{ 'é\n\t' | tojson }}"),
            "{\"a\": 1, \"b\": [1, 2.5, null, true, \"x\\\"y\"]} \"é\\n\\t\"");
  const json d = json::parse(R"({"a": [1, {"b": 2}], "c": {}})");
  EXPECT_EQ(render("{{ d | tojson(indent=2) }}", {{"d", d}}),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": 2\n    }\n  ],\n  \"c\": {}\n}");
  EXPECT_EQ(render("{{ x | trim }}|{{ x | length }}|{{ x | upper }}|{{ x | replace('b', 'X') }}|{{ x|title }}",
                   {{"x", "  aBc bé  "}}),
            "aBc bé|10|  ABC BÉ  |  aBc Xé  |  Abc Bé  ");
  EXPECT_EQ(
      render("{{ l | join(', ') }}|{{ l | first }}|{{ l | last }}|{{ l|reverse|list }}|{{ l|sort }}|{{ l|unique|list }}"
             "|{{ l|max }}|{{ l|sum }}",
             {{"l", {3, 1, 2, 3}}}),
      "3, 1, 2, 3|3|3|[3, 2, 1, 3]|[1, 2, 3, 3]|[3, 1, 2]|3|9");
  const json msgs = json::parse(R"([{"role":"user","content":"a"},{"role":"assistant","content":"b"},
                                    {"role":"user","content":"c"}])");
  EXPECT_EQ(render("{{ m | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('|') }} "
                   "{{ m|rejectattr('role','eq','user')|list|length }}",
                   {{"m", msgs}}),
            "a|c 1");
  EXPECT_EQ(render("{{ x | default('dflt') }} {{ '' | default('e', true) }} {{ none | default('n') }}"), "dflt e None");
  EXPECT_EQ(render("{{ '3'|int + 1 }} {{ '3.7'|int }} {{ 'x'|int }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ -3|abs }}"),
            "4 3 0 2.57 2.0 3");
  EXPECT_EQ(
      render("{% for k, v in d|items %}{{k}}={{v}};{% endfor %}{{ d|dictsort|length }}", {{"d", {{"b", 1}, {"a", 2}}}}),
      "a=2;b=1;2");  // nlohmann::json objects iterate sorted; ordered_json keeps insertion order
}

TEST(JinjaInterpreter, LoopsNamespacesMacros) {
  EXPECT_EQ(render("{% for m in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
                   "{{ loop.revindex0 }}{{ loop.cycle('a','b') }};{% endfor %}",
                   {{"l", {10, 20, 30}}}),
            "10TrueFalse32a;21FalseFalse31b;32FalseTrue30a;");
  EXPECT_EQ(render("{% for i in l if i > 1 %}{{ loop.index }}:{{ i }}{% else %}none{% endfor %}"
                   "{% for i in [] %}x{% else %}empty{% endfor %}",
                   {{"l", {1, 2, 3}}}),
            "1:22:3empty");
  EXPECT_EQ(render("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}"
                   "{% endif %}{{ i }}{% endfor %}"),
            "0134");
  EXPECT_EQ(render("{% set ns = namespace(found=false, n=0) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}"
                   "{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}"),
            "True 6");
  // A for-loop iteration is a scope of its own; if is not.
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"
                   "{% if true %}{% set x = 3 %}{% endif %}{{ x }}"),
            "213");
  EXPECT_EQ(render("{% for i in [1,2] %}{% if i == 1 %}{% set y = 5 %}{% endif %}[{{ y }}]{% endfor %}"), "[5][]");
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set s %}  inner {{ a }} {% endset %}[{{ s }}]"
                   "{% set u | upper %}abc{% endset %}{{ u }}"),
            "12[  inner 1 ]ABC");
  EXPECT_EQ(render("{% macro m(a, b='B') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(a=3, b=4) }}"),
            "<1B><12><34>");
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'xxhixx'.strip('x') }} "
                   "{{ 'a</think>b'.split('</think>')[-1] }} {{ 'abc'.endswith(('x','c')) }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] hi b True");
}

std::string error_of(const std::string& src, const json& vars = json::object()) {
  try {
    render(src, vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(JinjaInterpreter, ErrorsCarryOriginLineAndColumn) {
  // Syntax: FormatError.
  EXPECT_THROW(render("{{ 1 + }}"), FormatError);
  EXPECT_EQ(error_of("ab\n{{ 1 + }}"), "test:2:8: unexpected end of print statement");
  EXPECT_EQ(error_of("{% for x in y %}"), "test:1:17: unexpected end of template, expected 'else', 'endfor'");
  EXPECT_EQ(error_of("x\n  {{ 'unterminated }}"), "test:2:6: unterminated string literal");
  EXPECT_EQ(error_of("{{ x | nosuchfilter }}"), "test:1:8: no filter named 'nosuchfilter'");
  EXPECT_EQ(error_of("\n\n{% include 'x' %}"),
            "test:3:4: the 'include' tag is not supported by this template interpreter");
  EXPECT_EQ(error_of("{{ x | groupby('a') }}"),
            "test:1:8: the 'groupby' filter is not supported by this template interpreter");
  EXPECT_EQ(error_of("{% endif %}"), "test:1:4: encountered unknown tag 'endif'");
  EXPECT_EQ(error_of("{% break %}"), "test:1:4: 'break' outside of a loop");
  EXPECT_THROW(render("{{ 'abc'.zfill(5) }}"), FormatError);  // valid Python, not implemented
  // Rendering: InvalidInput where Jinja2 raises.
  EXPECT_THROW(render("{{ x.y.z }}", {{"x", json::object()}}), InvalidInput);
  EXPECT_EQ(error_of("{{ x.y.z }}", {{"x", json::object()}}), "test:1:7: 'dict object' has no attribute 'y'");
  EXPECT_EQ(error_of("{{ foo() }}"), "test:1:4: 'foo' is undefined");
  EXPECT_EQ(error_of("line1\n  {{ raise_exception('Conversation roles must alternate') }}"),
            "test:2:6: raise_exception: Conversation roles must alternate");
  EXPECT_EQ(error_of("{{ 'a' + 1 }}"), "test:1:8: can only concatenate str (not \"int\") to str");
  EXPECT_EQ(error_of("{% set x = [1] %}{{ x.append(2) }}"),
            "test:1:22: access to attribute 'append' of 'list' object is unsafe.");
  EXPECT_EQ(error_of("{% set x = 1 %}{% set x.a = 2 %}"), "test:1:19: cannot assign attribute on non-namespace object");
  EXPECT_EQ(error_of("{{ {'a': 1} | tojson }}{{ x | tojson }}"),
            "test:1:31: Object of type Undefined is not JSON serializable");
}

}  // namespace
}  // namespace angelslim
